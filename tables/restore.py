"""Recovery: catching a partition's store up with its changelog, of any size.

When a partition is assigned, `Restorer.start` replays its changelog topic
from the last offset the local store applied to the end, in a worker thread,
writing RocksDB in chunks together with the offset reached. So:

- **Bounded by progress, not by a total deadline.** A restore fails only when
  the changelog stops delivering for `stall_timeout_s`; a long one just takes
  long.
- **Retried.** A failed restore is logged and started again after a backoff
  (up to 30 s), from the offset the store reached: work done is kept.
- **Visible.** `progress()` gives, per restoring partition, the records done of
  how many (updated every `PROGRESS_EVERY` records) and the keys written (values,
  updated with each chunk written; for `/ready`); the log prints the same every
  few seconds and once at the end.
- **Fast.** Records go into RocksDB as the changelog holds them (raw bytes, no
  decoding), `CHUNK` records per WriteBatch with the offset reached, without the
  write-ahead log; the memtable is flushed when the attempt ends (`tables.store`
  on why that keeps the store consistent). Nothing is done per record but
  adding it to the batch: the restores of several partitions run in threads
  that share the GIL. `python -m bench.rebuild` measures it against a bare
  consumer reading the same changelog.

A partition's first batch waits for its restore (`tables.store` on why the
store is then consistent with the committed offsets).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pssync.tables.store import Table

log = logging.getLogger(__name__)

Reader = Callable[..., Iterator[tuple[bytes, bytes | None, int]]]
CHUNK = 5000  # records per RocksDB write, with the offset they reach
PROGRESS_EVERY = 1000  # records between updates of `progress()` (divides CHUNK)
LOG_EVERY_S = 5.0


@dataclass(slots=True)
class Progress:
    """One partition's restore, as `/ready` shows it."""

    table: str
    partition: int
    done: int = 0
    total: int | None = None
    keys: int = 0
    attempts: int = 0
    error: str | None = None
    finished: bool = False
    started: float = field(default_factory=time.monotonic)

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "partition": self.partition,
            "records_done": self.done,
            "records_total": self.total,
            "keys_written": self.keys,
            "attempts": self.attempts,
            "last_error": self.error,
            "seconds": round(time.monotonic() - self.started, 1),
        }


class Restorer:
    def __init__(
        self,
        read: Reader,
        stall_timeout_s: float = 60.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        """`read(topic, partition, start, stall_timeout_s, on_total)` yields (key, value,
        offset) from `start` to the end (`connectors.kafka.read_partition`)."""
        self.read = read
        self.stall_timeout_s = stall_timeout_s
        self.max_backoff_s = max_backoff_s
        self._futures: dict[tuple[str, int], asyncio.Future[None]] = {}
        self._progress: dict[tuple[str, int], Progress] = {}
        self._cancelled: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def start(self, table: Table, partition: int) -> asyncio.Future[None]:
        """Start (once) catching a partition's store up with its changelog."""
        slot = (table.name, partition)
        future = self._futures.get(slot)
        if future is None:
            loop = asyncio.get_running_loop()
            with self._lock:
                self._cancelled.discard(slot)
                self._progress[slot] = Progress(table.name, partition)
            future = loop.run_in_executor(None, self._run, table, partition)
            self._futures[slot] = future
        return future

    def restoring(self) -> list[str]:
        return sorted(f"{t}[{p}]" for (t, p), f in self._futures.items() if not f.done())

    def progress(self) -> list[dict[str, Any]]:
        with self._lock:
            return [p.to_json() for _, p in sorted(self._progress.items()) if not p.finished]

    def done(self) -> bool:
        return all(f.done() and not f.exception() for f in self._futures.values())

    def forget(self, slots: Sequence[tuple[str, int]]) -> None:
        """On revoke: stop retrying those partitions; a later assignment starts again."""
        for slot in slots:
            with self._lock:
                self._cancelled.add(slot)
            future = self._futures.get(slot)
            if future is not None and future.done():
                del self._futures[slot]
                self._progress.pop(slot, None)

    # -- in the worker thread --------------------------------------------------
    def _run(self, table: Table, partition: int) -> None:
        slot = (table.name, partition)
        progress = self._progress[slot]
        backoff = 0.5
        while True:
            with self._lock:
                if slot in self._cancelled:
                    return
                progress.attempts += 1
            try:
                self._restore(table, partition, progress)
                with self._lock:
                    progress.finished = True
                return
            except Exception as exc:  # retried: a restore must not give up
                with self._lock:
                    progress.error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "restoring %s[%d] failed (attempt %d), retrying in %.1fs: %s",
                    table.name,
                    partition,
                    progress.attempts,
                    backoff,
                    progress.error,
                )
                time.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)

    def _restore(self, table: Table, partition: int, progress: Progress) -> None:
        store = table.partition(partition)
        start = store.changelog_offset + 1
        began = time.monotonic()
        next_log = began + LOG_EVERY_S
        with self._lock:  # an attempt counts from where the store got to
            progress.done, progress.total, progress.keys = 0, None, 0

        def on_total(n: int) -> None:
            with self._lock:
                progress.total = n

        # Once per record: no lock, clock or decoding, only the batch (in which a later
        # record of a key overrides an earlier one). Every PROGRESS_EVERY records the
        # progress; every CHUNK the store.
        batch = store.restore_batch()
        put, delete = batch.put, batch.delete
        count = 0  # records read in this attempt
        values = 0  # records with a value (not tombstones) not yet in `progress.keys`
        offset = -1
        written = False
        try:
            for key, value, offset in self.read(
                table.changelog_topic, partition, start, self.stall_timeout_s, on_total
            ):
                if value is None:
                    delete(key)
                else:
                    put(key, value)
                    values += 1
                count += 1
                if count % PROGRESS_EVERY:
                    continue
                if count % CHUNK == 0:  # written with the offset reached: a retry resumes here
                    store.write_restored(batch, offset)
                    batch, written = store.restore_batch(), True
                    put, delete = batch.put, batch.delete
                    with self._lock:
                        progress.keys += values
                    values = 0
                with self._lock:
                    progress.done = count
                if time.monotonic() >= next_log:
                    next_log = time.monotonic() + LOG_EVERY_S
                    self._log("restoring", table, progress, began)
            if count % CHUNK:
                store.write_restored(batch, offset)
                written = True
            with self._lock:
                progress.done = count
                progress.keys += values
        finally:
            if written:  # on disk before anything writes through the log (tables.store)
                store.flush()
        if progress.done:
            self._log("restored", table, progress, began)

    @staticmethod
    def _log(what: str, table: Table, progress: Progress, began: float) -> None:
        log.info(
            "%s %s[%d]: %d of %s changelog records, %d keys written, in %.1fs",
            what,
            table.name,
            progress.partition,
            progress.done,
            progress.total,
            progress.keys,
            time.monotonic() - began,
        )
