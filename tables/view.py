"""A batch's view of one partition store: reads through a cache, buffers writes.

Rule code reads and writes state through a `StateView` so a batch touches
RocksDB once per key, and its writes become one WriteBatch plus one
changelog record per key changed (not per event).
"""

from __future__ import annotations

import copy
from typing import Any

from pssync.tables.store import PartitionStore, encode

_MISSING = object()


class StateView:
    def __init__(self, store: PartitionStore) -> None:
        self.store = store
        self._cache: dict[str, Any] = {}
        self._dirty: set[str] = set()
        self.reads = 0
        self.writes = 0

    def get(self, key: str) -> Any | None:
        value = self._cache.get(key, _MISSING)
        if value is _MISSING:
            self.reads += 1
            value = self.store.get(key)
            self._cache[key] = value
        return value

    def get_for_update(self, key: str, default: Any) -> Any:
        """The value under `key` (or a copy of `default`), marked as changed."""
        value = self.get(key)
        if value is None:
            value = copy.deepcopy(default)
            self._cache[key] = value
        self._dirty.add(key)
        return value

    def put(self, key: str, value: Any | None) -> None:
        self._cache[key] = value
        self._dirty.add(key)

    def scan(self, prefix: str) -> list[tuple[str, Any]]:
        """Keys under `prefix` in key order, as this batch sees them (its writes included)."""
        merged = dict(self.store.items(prefix))
        for key in self._dirty:
            if key.startswith(prefix):
                merged[key] = self._cache.get(key)
        for key, value in self._cache.items():
            if key.startswith(prefix) and key not in self._dirty and key not in merged:
                merged[key] = value
        return sorted((k, v) for k, v in merged.items() if v is not None)

    def changes(self) -> dict[str, bytes | None]:
        """Encoded values of every key written in this batch (None = deleted)."""
        out: dict[str, bytes | None] = {}
        for key in sorted(self._dirty):
            value = self._cache.get(key)
            out[key] = None if value is None else encode(value)
        self.writes += len(out)
        return out
