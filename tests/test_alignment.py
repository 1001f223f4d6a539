"""Event-time alignment without Kafka: the aligned time, release order, snapshots,
timers on event time, and failure isolation inside a keyed flow."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import pytest

from pssync.streams.alignment import Alignment, buffer_slot
from pssync.streams.changes import Change
from pssync.streams.flow import FlowConfig, FlowResult
from pssync.streams.messages import (
    MessageError,
    Routed,
    Tick,
    Watermark,
    Watermarks,
    from_bytes,
)
from pssync.streams.worker_flow import WorkerFlow
from pssync.tables.store import PartitionStore
from pssync.tables.view import StateView
from tests.worker_harness import (
    CC,
    ERP,
    GRACE_MS,
    HR,
    NOW,
    TIMEOUT_MS,
    change,
    cost_center,
    erp,
    hr,
    of_kind,
    summary,
)

SOURCES = ((CC, 0), (ERP, 0), (HR, 0))


# -- the aligned time, pure ----------------------------------------------------------------
def wm(source: str, ts: int | None, idle_since: int | None = None, sent: int = 0) -> Watermark:
    return Watermark(source, 0, ts, idle_since, sent)


def test_a_source_that_has_not_reported_holds_time_back() -> None:
    a = Alignment(SOURCES, idle_ttl_ms=5_000)
    a.observe(wm(HR, 500))
    a.observe(wm(ERP, 300))
    assert a.aligned(0) is None
    assert a.holding(0) == [f"{CC}[0]"]
    a.observe(wm(CC, 900))
    assert a.aligned(0) == 300
    assert a.holding(0) == [f"{ERP}[0]"]


def test_an_idle_source_stops_holding_back_while_its_report_is_fresh() -> None:
    a = Alignment(SOURCES, idle_ttl_ms=5_000)
    a.observe(wm(HR, 500))
    a.observe(wm(ERP, 800))
    a.observe(wm(CC, 100, idle_since=1_000, sent=1_000))
    assert a.aligned(3_000) == 500
    # the idle report was not refreshed: its worker may be gone, so it holds again
    assert a.aligned(7_000) == 100


def test_when_every_source_is_idle_time_moves_with_the_clock_from_the_furthest() -> None:
    a = Alignment(SOURCES, idle_ttl_ms=5_000)
    for source, ts, since in ((HR, 500, 1_000), (ERP, 800, 1_200), (CC, None, 1_100)):
        a.observe(wm(source, ts, idle_since=since, sent=2_000))
    assert a.aligned(2_000) == 800 + (2_000 - 1_200)


def test_with_only_snapshots_read_the_clock_waits_longer_to_start() -> None:
    """Between two tables of a snapshot every source can be idle: the snapshot point
    is left only once the sources have been idle for the snapshot settle time."""
    a = Alignment(SOURCES, idle_ttl_ms=5_000, snapshot_idle_ms=30_000)
    for source in (HR, ERP, CC):
        a.observe(wm(source, 0, idle_since=1_000, sent=20_000))
    assert a.aligned(20_000) == 0
    for source in (HR, ERP, CC):
        a.observe(wm(source, 0, idle_since=1_000, sent=40_000))
    assert a.aligned(40_000) == 40_000 - 1_000 - 30_000
    a.observe(wm(HR, 5_000, idle_since=50_000, sent=50_000))  # something streamed
    for source in (ERP, CC):
        a.observe(wm(source, 0, idle_since=1_000, sent=50_000))
    assert a.aligned(50_000) == 5_000


def test_event_time_only_grows_and_a_restart_keeps_it() -> None:
    a = Alignment(SOURCES, idle_ttl_ms=5_000)
    assert a.observe(wm(HR, 500)) is True
    assert a.observe(wm(HR, 400)) is False  # a new owner replaying older records
    assert a.sources[(HR, 0)].ts == 500
    b = Alignment(SOURCES, idle_ttl_ms=5_000)
    b.restore((HR, 0), 500)
    assert b.sources[(HR, 0)].ts == 500


def test_snapshot_reads_sit_at_one_point_before_every_streamed_change() -> None:
    snap = change(HR, hr(), lsn=900, op="r", ts=NOW)
    early = change(ERP, erp(), lsn=5, ts=1_000)
    assert snap.event_ts == 0
    slots = sorted(buffer_slot(Routed("change", "W1", c)) for c in (early, snap))
    assert slots[0] == buffer_slot(Routed("change", "W1", snap))
    # within the snapshot, dependency order: the ERP employee before the HR worker
    erp_snap = change(ERP, erp(), lsn=999_999, op="r")
    assert buffer_slot(Routed("change", "W1", erp_snap)) < slots[0]


# -- a keyed flow fed by three sources -----------------------------------------------------
class Aligned:
    """One worker-keyed partition fed by three sources, each reporting its own watermark."""

    def __init__(self, path: Path) -> None:
        config = FlowConfig(GRACE_MS, TIMEOUT_MS, sources=SOURCES, idle_ttl_ms=5_000)
        self.path = path
        self.store = PartitionStore(path)
        self.flow = WorkerFlow(config)
        self.results: list[FlowResult] = []

    def batch(self, *messages: Any, wall_ms: int = 0) -> FlowResult:
        view = StateView(self.store)
        result = self.flow.process(view, 0, list(messages), wall_ms)
        self.store.write(view.changes(), None)
        self.results.append(result)
        return result

    def reopen(self) -> None:
        self.store.close()
        self.store = PartitionStore(self.path)
        self.flow = WorkerFlow(self.flow.config)

    @property
    def emits(self) -> list[Any]:
        return [e for r in self.results for e in r.emits]


def routed(ch: Change, key: str | None = "W1", kind: str = "change") -> Routed:
    return Routed(kind, key, ch)


def firm_changes() -> list[Routed]:
    """ERP committed its employee before HR committed the worker (source time)."""
    return [
        routed(change(CC, cost_center("CC1"), lsn=1, ts=NOW - 5_000), None, "cost_center"),
        routed(change(ERP, erp(cc="CC1"), lsn=10, ts=NOW)),
        routed(change(HR, hr(cc="CC1"), lsn=20, ts=NOW + 300)),
    ]


def all_read(ts: int) -> list[Watermark]:
    return [wm(source, ts) for source, _ in SOURCES]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_any_arrival_order_gives_the_same_decisions(tmp_path: Path, order: tuple[int, ...]) -> None:
    h = Aligned(tmp_path / "s")
    items = firm_changes()
    for i in order:  # each change arrives in its own batch, with only its own source's report
        source = items[i].change.topic
        assert h.batch(items[i], wm(source, items[i].change.event_ts)).emits == []
    h.batch(*all_read(NOW + 1_000))
    # applied on arrival, HR first would have sent UPSERT_EMPLOYEE for a worker the ERP has
    assert of_kind(h.emits, "command") == []
    assert of_kind(h.emits, "alert") == []
    assert [e.key for e in h.emits if e.kind == "golden"] == ["W1", "W1"]


def test_a_change_waits_until_every_source_has_moved_past_it(tmp_path: Path) -> None:
    h = Aligned(tmp_path / "s")
    cc, employee, worker = firm_changes()
    h.batch(cc, employee, worker, wm(CC, NOW - 4_000), wm(ERP, NOW), wm(HR, NOW + 300))
    assert h.results[-1].released == 1  # the cost center: every source is past it
    assert h.batch(wm(CC, NOW + 1_000)).released == 0  # the employee is at the ERP's edge
    assert h.batch(wm(ERP, NOW + 400)).released == 1  # ... and now every source is past it
    result = h.batch(wm(HR, NOW + 301))
    assert result.released == 1
    assert result.aligned_ms == NOW + 301


def test_an_idle_source_does_not_hold_the_others_and_the_clock_moves_when_all_are(
    tmp_path: Path,
) -> None:
    h = Aligned(tmp_path / "s")
    cc, employee, worker = firm_changes()
    h.batch(cc, employee, worker, wm(CC, NOW - 5_000, idle_since=1_000, sent=1_000))
    h.batch(wm(ERP, NOW), wm(HR, NOW + 300), wall_ms=2_000)
    # the cost center goes; the ERP employee and HR worker sit at their sources' edges
    assert sum(r.released for r in h.results) == 1
    done = h.batch(
        wm(ERP, NOW, idle_since=3_000, sent=3_000),
        wm(HR, NOW + 300, idle_since=3_000, sent=3_000),
        wall_ms=3_001,
    )
    assert done.released == 2
    assert done.aligned_ms == NOW + 301


def test_the_buffer_survives_a_restart(tmp_path: Path) -> None:
    h = Aligned(tmp_path / "s")
    cc, employee, worker = firm_changes()
    h.batch(cc, employee, worker, wm(HR, NOW + 300))
    h.reopen()
    result = h.batch(wm(CC, NOW + 500), wm(ERP, NOW + 500), wm(HR, NOW + 500))
    assert result.released == 3
    assert of_kind(result.emits, "command") == []


def test_timers_fire_on_event_time_with_ids_from_the_due_time(tmp_path: Path) -> None:
    """An orphan ERP employee: the grace counts on event time, whether stream time gets
    past it through later data or through the idle clock, and the alert has one ID."""
    ids = []
    for way in ("data", "idle"):
        h = Aligned(tmp_path / way)
        orphan = routed(change(ERP, erp(worker_id="W404"), lsn=10, ts=NOW), key="W404")
        h.batch(orphan, *all_read(NOW + 1))
        assert of_kind(h.emits, "alert") == []
        if way == "data":
            later = change(CC, cost_center("CC9"), lsn=30, ts=NOW + GRACE_MS + 50)
            h.batch(routed(later, None, "cost_center"), *all_read(NOW + GRACE_MS + 100))
        else:
            idle = [wm(s, NOW + 1, idle_since=10_000, sent=10_000 + GRACE_MS) for s, _ in SOURCES]
            h.batch(*idle, wall_ms=10_000 + GRACE_MS)
        (alert,) = of_kind(h.emits, "alert")
        assert alert["rule"] == "ERP_EMPLOYEE_WITHOUT_HR_WORKER"
        assert alert["detected_at"] == "2026-05-28T20:27:40.000Z"  # NOW + grace, event time
        ids.append(alert["alert_id"])
    assert ids[0] == ids[1]


def test_a_change_that_raises_leaves_no_trace_and_the_rest_is_applied(tmp_path: Path) -> None:
    h = Aligned(tmp_path / "s")
    h.batch(routed(change(CC, cost_center("CC1"), lsn=1, ts=NOW - 10), None, "cost_center"))
    bad = change(HR, hr("W-X"), lsn=50, ts=NOW)
    assert bad.after is not None
    broken = dataclasses.replace(
        bad, after={k: v for k, v in bad.after.items() if k != "worker_id"}
    )
    good = change(HR, hr("W-Y"), lsn=51, ts=NOW + 1)
    keys_before = {k for k, _ in h.store.items()}
    result = h.batch(routed(broken, "W-X"), routed(good, "W-Y"), *all_read(NOW + 10))
    (failure,) = result.failures
    assert failure.routed is not None
    assert failure.routed.key == "W-X"
    assert isinstance(failure.error, KeyError)
    assert h.store.get("w/W-X") is None
    assert not any(k.endswith("W-X") for k, _ in h.store.items() if k not in keys_before)
    assert ("command", "UPSERT_EMPLOYEE", "W-Y") in summary(result.emits)


def test_a_timer_that_raises_is_set_aside_and_the_partition_goes_on(tmp_path: Path) -> None:
    h = Aligned(tmp_path / "s")
    h.batch(routed(change(ERP, erp(worker_id="W404"), lsn=10, ts=NOW), key="W404"))
    h.batch(*all_read(NOW + 1))
    state = h.store.get("w/W404")
    assert state is not None
    state["erp"]["E1"]["rec"] = None  # corrupt: the orphan rule will raise on it
    h.store.write({"w/W404": h.store.get_raw("w/W404") and _encode(state)}, None)
    later = routed(change(HR, hr("W2"), lsn=30, ts=NOW + GRACE_MS + 50), key="W2")
    result = h.batch(later, *all_read(NOW + GRACE_MS + 100))
    (failure,) = result.failures
    assert failure.timer_key == "w/W404"
    assert ("golden", "W2", "record") in summary(result.emits)
    assert h.store.get("w/W404") == state  # rolled back
    # the failed timer does not fire again and again
    assert [k for k in h.store.keys("dl/") if k.endswith("W404")] == []


def _encode(value: Any) -> bytes:
    from pssync.tables.store import encode

    return encode(value)


# -- typed internal messages -----------------------------------------------------------------
def test_internal_messages_round_trip() -> None:
    for message in (
        routed(change(HR, hr(), lsn=1)),
        Routed("change", "W1", change(HR, None, lsn=2, before=hr()), leaving=True),
        wm(HR, 5, idle_since=3, sent=4),
        Watermarks((wm(HR, 5), wm(ERP, None, idle_since=3, sent=4))),
        Tick(99),
    ):
        assert from_bytes(message.to_bytes()) == message


def test_reports_in_one_record_align_as_the_same_reports_one_by_one(tmp_path: Path) -> None:
    one, many = Aligned(tmp_path / "one"), Aligned(tmp_path / "many")
    cc, employee, worker = firm_changes()
    steps = [
        [wm(CC, NOW - 4_000), wm(ERP, NOW), wm(HR, NOW + 300)],
        [wm(CC, NOW + 1_000), wm(ERP, NOW + 400)],
        [wm(HR, NOW + 301, idle_since=3_000, sent=3_000)],
    ]
    one.batch(cc, employee, worker)
    many.batch(cc, employee, worker)
    for reports in steps:
        a, b = one.batch(*reports), many.batch(Watermarks(tuple(reports)))
        assert (a.released, a.aligned_ms) == (b.released, b.aligned_ms)
    assert one.emits == many.emits
    assert len(one.emits) > 0


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (None, "empty"),
        (b"\xff\xfe", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"kind": "tick", "now_ms": 1}', "version None"),
        (b'{"v": 2, "t": "tick", "now_ms": 1}', "version 2"),
        (b'{"v": 1, "t": "gossip"}', "unknown internal message kind 'gossip'"),
        (b'{"v": 1, "t": "tick"}', "malformed tick message: KeyError"),
        (b'{"v": 1, "t": "wms", "items": 3}', "malformed wms message"),
        (b'{"v": 1, "t": "routed", "kind": "change", "change": {}}', "malformed routed"),
    ],
)
def test_a_malformed_internal_message_says_what_is_wrong(raw: bytes | None, says: str) -> None:
    with pytest.raises(MessageError, match=says):
        from_bytes(raw)
