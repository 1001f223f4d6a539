"""A batch's view of one partition store: reads through a cache, buffers writes.

Rule code reads and writes state through a `StateView`, so a batch touches
RocksDB once per key read and turns its writes into one WriteBatch plus one
changelog record per key that really changed:

- **Write what changed.** `changes()` encodes each key written in the batch
  and drops it when the bytes equal what the store held (Kafka Streams'
  caching layer does the same), so re-evaluating an entity that did not change
  costs an encode, never a RocksDB write or a changelog record.
- **Range reads without walking the cache.** `scan` and `keys` merge a
  RocksDB range iterator with the batch's own writes in that range (a sorted
  list of written keys, searched by bisection): their cost is what they
  return.
- **Savepoints.** Between `savepoint()` and `release()` every key touched
  keeps its previous bytes; `rollback()` puts them back, so a message whose
  processing raised leaves no trace. Callers mutate the objects `get`
  returns, so they must `put` a key after changing it.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator
from typing import Any

from pssync.tables.store import PartitionStore, decode, encode, prefix_end

_UNLOADED = object()  # undo marker: the key was never read, so the store holds its value


class StateView:
    def __init__(self, store: PartitionStore) -> None:
        self.store = store
        self._cache: dict[str, Any] = {}
        # bytes equal to the cached value, where known (a clean key: the store's bytes)
        self._raw: dict[str, bytes | None] = {}
        # what the store held when the key was first read (for change detection)
        self._orig: dict[str, bytes | None] = {}
        self._dirty: set[str] = set()
        self._dirty_sorted: list[str] = []
        self._undo: dict[str, tuple[Any, bool]] | None = None
        self.reads = 0
        self.writes = 0

    # -- reads -------------------------------------------------------------
    def _load(self, key: str) -> None:
        self.reads += 1
        raw = self.store.get_raw(key)
        self._orig[key] = raw
        self._raw[key] = raw
        self._cache[key] = None if raw is None else decode(raw)

    def get(self, key: str) -> Any | None:
        if key not in self._cache:
            self._load(key)
        if self._undo is not None and key not in self._undo:
            self._remember(key)
        return self._cache[key]

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def scan(
        self, prefix: str, end: str | None = None, limit: int | None = None
    ) -> list[tuple[str, Any]]:
        """(key, value) for keys from `prefix` up to `end` (default: all keys with the
        prefix), in key order, as this batch sees them (its writes included); at most
        `limit` of them."""
        stop = end if end is not None else (prefix_end(prefix) or None)
        written = self._written_between(prefix, stop)
        out: list[tuple[str, Any]] = []
        stored = self.store.raw_items(prefix, stop)
        pending = next(stored, None)
        i = 0
        while pending is not None or i < len(written):
            if pending is not None and (i >= len(written) or pending[0] < written[i]):
                key, raw = pending
                pending = next(stored, None)
                if key not in self._cache:
                    self._orig[key] = raw
                    self._raw[key] = raw
                    self._cache[key] = decode(raw)
                value = self.get(key)
            else:
                key = written[i]
                i += 1
                if pending is not None and pending[0] == key:
                    pending = next(stored, None)
                value = self.get(key)
            if value is not None:
                out.append((key, value))
                if limit is not None and len(out) >= limit:
                    break
        return out

    def keys(self, prefix: str) -> list[str]:
        """Keys with `prefix` that hold a value, in order (values are not decoded)."""
        return self.keys_between(prefix, prefix_end(prefix) or None)

    def keys_between(self, start: str, stop: str | None) -> list[str]:
        """Keys from `start` up to `stop` that hold a value, in order (not decoded)."""
        found = {k for k, _ in self.store.raw_items(start, stop) if k not in self._dirty}
        written = self._written_between(start, stop)
        found.update(k for k in written if self._cache.get(k) is not None)
        return sorted(found)

    def first_key(self, prefix: str) -> str | None:
        """The first key with `prefix` that holds a value, or None."""
        stop = prefix_end(prefix) or None
        written = [k for k in self._written_between(prefix, stop) if self._cache.get(k) is not None]
        for key in self.store.keys(prefix):
            if key not in self._dirty:
                return min([key, *written[:1]])
        return written[0] if written else None

    def _written_between(self, start: str, stop: str | None) -> list[str]:
        lo = bisect_left(self._dirty_sorted, start)
        hi = len(self._dirty_sorted) if stop is None else bisect_left(self._dirty_sorted, stop)
        return self._dirty_sorted[lo:hi]

    # -- writes ------------------------------------------------------------
    def put(self, key: str, value: Any | None) -> None:
        if self._undo is not None and key not in self._undo:
            self._remember(key)
        self._cache[key] = value
        self._raw.pop(key, None)
        if key not in self._dirty:
            self._dirty.add(key)
            insort(self._dirty_sorted, key)

    def insert(self, key: str, value: Any) -> None:
        """`put` for a key the caller knows is new (no read to find out)."""
        if key not in self._cache and key not in self._orig:
            self._orig[key] = None
            self._raw[key] = None
            self._cache[key] = None
        self.put(key, value)

    def insert_encoded(self, key: str, value: Any, raw: bytes) -> None:
        """`insert` of a value whose encoding the caller has (`decode(raw)` equals
        `value`'s JSON form): the batch writes `raw` without encoding `value` again."""
        self.insert(key, value)
        self._raw[key] = raw

    def delete(self, key: str) -> None:
        self.put(key, None)

    # -- savepoints --------------------------------------------------------
    def _remember(self, key: str) -> None:
        assert self._undo is not None
        if key not in self._cache:
            self._undo[key] = (_UNLOADED, False)
            return
        raw = self._raw.get(key, _UNLOADED)
        if raw is _UNLOADED:
            value = self._cache[key]
            raw = None if value is None else encode(value)
            self._raw[key] = raw
        self._undo[key] = (raw, key in self._dirty)

    def savepoint(self) -> None:
        """Start recording what the next unit of work touches."""
        self._undo = {}

    def release(self) -> None:
        """Keep what was done since the savepoint."""
        self._undo = None

    def rollback(self) -> None:
        """Undo every write since the savepoint (and any in-place change to what was read)."""
        undo, self._undo = self._undo or {}, None
        for key, (raw, was_dirty) in undo.items():
            if raw is _UNLOADED:
                self._cache.pop(key, None)
                self._raw.pop(key, None)
                self._orig.pop(key, None)
                was_dirty = False
            else:
                self._cache[key] = None if raw is None else decode(raw)
                self._raw[key] = raw
            if not was_dirty and key in self._dirty:
                self._dirty.discard(key)
                del self._dirty_sorted[bisect_left(self._dirty_sorted, key)]

    # -- the batch's result ------------------------------------------------
    def changes(self) -> dict[str, bytes | None]:
        """Encoded values of every key written in this batch whose bytes differ from the
        store's (None = deleted)."""
        out: dict[str, bytes | None] = {}
        for key in self._dirty_sorted:
            value = self._cache.get(key)
            raw = self._raw.get(key, _UNLOADED)
            if raw is _UNLOADED:
                raw = None if value is None else encode(value)
            orig = self._orig.get(key, _UNLOADED)
            if orig is _UNLOADED:
                orig = self.store.get_raw(key)
            if raw == orig:
                continue
            out[key] = raw  # type: ignore[assignment]
        self.writes += len(out)
        return out

    def dirty_keys(self) -> Iterator[str]:
        return iter(self._dirty_sorted)
