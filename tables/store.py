"""RocksDB-backed, changelogged state: one rocksdict database per (table, partition).

Guarantees (the commit order a batch follows, kept by `streams.commit`):
1. the batch's outputs and changelog records are produced, and the producer
   is flushed (every record acknowledged by Kafka);
2. then the batch's writes are applied to RocksDB in one WriteBatch, together
   with the changelog offset they correspond to;
3. then the input offsets are acknowledged, for Faust to commit.
A crash before (1) completes replays the batch: outputs carry deterministic
IDs, so a sink that applies each ID once sees no difference. A crash between
(1) and (3) replays the batch against state that already holds it (restored
from the changelog if the local write was lost), so redelivered changes are
recognised by their source position and emit nothing new.

Recovery (`tables.restore`): when a partition is assigned, its database is
caught up from the compacted changelog topic, from the last offset it had
applied to the end, before the partition's first batch is processed. Losing
the local files only costs a longer replay.

A restore writes without RocksDB's write-ahead log (`write_restored`), each
batch with the changelog offset it reaches, and flushes the memtable when it
ends (`flush`), before any batch writes through the log again. That is safe:
RocksDB persists memtables whole and in order, so a crash mid-restore leaves a
prefix of the restore's batches, whose stored offset is where the replay
resumes; and after the flush, nothing the log replays can land on top of
restored writes that were lost.

Keys are strings ordered bytewise; values are JSON. Range reads (`items`,
`keys`) walk RocksDB's sorted keys, so index keys (`dep/<ref>/<dependent>`,
`dl/<due>/<key>`) cost what they return, not what the table holds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from rocksdict import Options, Rdict, WriteBatch, WriteOptions

log = logging.getLogger(__name__)

_META_OFFSET = b"\x00meta:changelog_offset"
WRITE_BUFFER_BYTES = 16 * 1024 * 1024


# State values are compact JSON with sorted keys (orjson: the stdlib's encoder was 5% of a
# backlog's profile). Stores and changelogs written by json.dumps decode the same way.
_ENCODE_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def encode(value: Any) -> bytes:
    return orjson.dumps(value, option=_ENCODE_OPTIONS)


def decode(raw: bytes) -> Any:
    return orjson.loads(raw)


def prefix_end(prefix: str) -> str:
    """The smallest key after every key that starts with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else ""


class PartitionStore:
    """One partition of one table: a rocksdict database of str keys -> JSON values."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        # memtables of 16 MB (RocksDB's default: 64 MB), as Kafka Streams' stores: an
        # insert into a smaller skiplist costs about half (fewer cache misses), and the
        # inserts hold the GIL while flushes do not (bench/rebuild.py: a restore ~20%
        # faster); and a worker holding many partitions needs less memory
        opts.set_write_buffer_size(WRITE_BUFFER_BYTES)
        self.path = path
        self._db = Rdict(str(path), options=opts)
        self._lock = threading.Lock()
        self._no_wal = WriteOptions()
        # a property at run time; rocksdict's stubs call it a method
        self._no_wal.disable_wal = True  # type: ignore[method-assign,assignment]

    def get_raw(self, key: str) -> bytes | None:
        raw = self._db.get(key.encode())
        return None if raw is None else bytes(raw)

    def get(self, key: str) -> Any | None:
        raw = self.get_raw(key)
        return None if raw is None else decode(raw)

    def raw_items(self, start: str, end: str | None = None) -> Iterator[tuple[str, bytes]]:
        """(key, raw value) for `start` <= key < `end` (to the last key if None), in order."""
        it = self._db.iter()
        it.seek(start.encode())
        stop = None if end is None else end.encode()
        try:
            while it.valid():
                k = bytes(it.key())
                if stop is not None and k >= stop:
                    break
                if not k.startswith(b"\x00"):
                    yield k.decode(), bytes(it.value())
                it.next()
        finally:
            del it

    def items(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        for key, raw in self.raw_items(prefix, prefix_end(prefix) if prefix else None):
            yield key, decode(raw)

    def keys(self, prefix: str) -> Iterator[str]:
        for key, _ in self.raw_items(prefix, prefix_end(prefix) or None):
            yield key

    def estimate_keys(self) -> int:
        """RocksDB's estimate of the number of keys (cheap; exact after compaction)."""
        with self._lock:
            return int(self._db.property_int_value("rocksdb.estimate-num-keys") or 0)

    def count(self, prefix: str = "") -> int:
        return sum(1 for _ in self.raw_items(prefix, prefix_end(prefix) if prefix else None))

    @property
    def changelog_offset(self) -> int:
        """The last changelog offset applied here (-1 if none)."""
        raw = self._db.get(_META_OFFSET)
        return -1 if raw is None else int(raw)

    def write(self, changes: dict[str, bytes | None], changelog_offset: int | None) -> None:
        """Apply encoded values (None = delete) atomically, with the changelog position."""
        batch = WriteBatch(raw_mode=True)
        for key, raw in changes.items():
            if raw is None:
                batch.delete(key.encode())
            else:
                batch.put(key.encode(), raw)
        if changelog_offset is not None:
            batch.put(_META_OFFSET, str(changelog_offset).encode())
        with self._lock:
            self._db.write(batch)

    # -- restoring (module doc: why without the write-ahead log) -------------------
    @staticmethod
    def restore_batch() -> WriteBatch:
        """An empty batch for changelog records: `put(key, value)` / `delete(key)`, raw bytes
        as the changelog has them (no decoding and encoding again)."""
        return WriteBatch(raw_mode=True)

    def write_restored(self, batch: WriteBatch, changelog_offset: int) -> None:
        """Apply a `restore_batch` atomically with the changelog offset it reaches, without
        the write-ahead log; `flush` when the restore ends. Consumes the batch."""
        batch.put(_META_OFFSET, str(changelog_offset).encode())
        with self._lock:
            self._db.write(batch, self._no_wal)

    def flush(self) -> None:
        """Persist the memtable (what was written without the log) and wait for it."""
        with self._lock:
            self._db.flush(True)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Table:
    """A named table: partition stores under `data_dir/<table>/<partition>`."""

    def __init__(self, name: str, data_dir: Path, changelog_topic: str) -> None:
        self.name = name
        self.data_dir = data_dir / name
        self.changelog_topic = changelog_topic
        self._partitions: dict[int, PartitionStore] = {}

    def partition(self, p: int) -> PartitionStore:
        store = self._partitions.get(p)
        if store is None:
            store = PartitionStore(self.data_dir / str(p))
            self._partitions[p] = store
        return store

    def open_partitions(self) -> list[int]:
        return sorted(self._partitions)

    def release(self, p: int) -> None:
        store = self._partitions.pop(p, None)
        if store is not None:
            store.close()

    def close(self) -> None:
        for p in list(self._partitions):
            self.release(p)
