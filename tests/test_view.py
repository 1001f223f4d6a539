"""The state view over a real RocksDB store: range reads, change detection, savepoints."""

from __future__ import annotations

from pathlib import Path

from pssync.tables.store import PartitionStore, encode
from pssync.tables.view import StateView


def store_with(path: Path, **values: object) -> PartitionStore:
    store = PartitionStore(path)
    store.write({k.replace("_", "/"): encode(v) for k, v in values.items()}, None)
    return store


def test_scan_merges_the_store_with_the_batch_writes_in_key_order(tmp_path: Path) -> None:
    store = store_with(tmp_path / "s", q_1=1, q_3=3, q_5=5, r_1=9)
    view = StateView(store)
    view.put("q/2", 2)
    view.put("q/3", 33)
    view.delete("q/5")
    view.put("p/0", 0)
    assert view.scan("q/") == [("q/1", 1), ("q/2", 2), ("q/3", 33)]
    assert view.scan("q/", "q/3") == [("q/1", 1), ("q/2", 2)]
    assert view.keys("q/") == ["q/1", "q/2", "q/3"]
    assert view.keys_between("p", "r") == ["p/0", "q/1", "q/2", "q/3"]
    assert view.first_key("q/") == "q/1"
    view.delete("q/1")
    assert view.first_key("q/") == "q/2"


def test_only_keys_whose_bytes_changed_are_written(tmp_path: Path) -> None:
    store = store_with(tmp_path / "s", a=1, b={"x": [1, 2]})
    view = StateView(store)
    b = view.get("b")
    view.put("b", b)  # rewritten, unchanged
    view.put("a", 2)
    view.insert("c", 3)
    view.delete("c")  # created and deleted in the batch: never reaches the store
    view.delete("missing")
    assert view.changes() == {"a": encode(2)}


def test_rollback_undoes_writes_and_in_place_changes_since_the_savepoint(tmp_path: Path) -> None:
    store = store_with(tmp_path / "s", a={"n": 1}, b={"n": 1})
    view = StateView(store)
    a = view.get("a")
    a["n"] = 2
    view.put("a", a)  # before the savepoint: kept
    view.savepoint()
    a = view.get("a")
    a["n"] = 3
    view.put("a", a)
    b = view.get("b")
    b["n"] = 99  # changed in place, then the work fails
    view.insert("c", 1)
    view.put("d", 1)
    view.rollback()
    assert view.get("a") == {"n": 2}
    assert view.get("b") == {"n": 1}
    assert view.get("c") is None
    assert view.get("d") is None
    assert view.scan("") == [("a", {"n": 2}), ("b", {"n": 1})]
    assert view.changes() == {"a": encode({"n": 2})}


def test_release_keeps_the_work(tmp_path: Path) -> None:
    view = StateView(store_with(tmp_path / "s"))
    view.savepoint()
    view.put("a", 1)
    view.release()
    assert view.changes() == {"a": encode(1)}
