"""Worker rules, without Kafka: each rule on create, update, delete, tombstone,
snapshot read, out-of-order arrival and duplicate redelivery."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.worker_harness import (
    CC,
    ERP,
    GRACE_MS,
    HR,
    NOW,
    TIMEOUT_MS,
    Harness,
    change,
    cost_center,
    erp,
    hr,
    of_kind,
    summary,
)


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    harness = Harness(tmp_path / "store")
    harness.send(change(CC, cost_center("CC1"), lsn=1))
    harness.send(change(CC, cost_center("CC2"), lsn=2))
    harness.send(change(CC, cost_center("CC-OFF", active=False), lsn=3))
    harness.send(change(CC, cost_center("CC-LE2", le="LE2"), lsn=4))
    return harness


# -- WORKER_MISSING_IN_ERP ---------------------------------------------------
def test_missing_in_erp_on_create_issues_upsert_and_info_alert(h: Harness) -> None:
    emits = h.send(change(HR, hr(), lsn=10))
    assert summary(emits) == [
        ("alert", "WORKER_MISSING_IN_ERP", "OPEN"),
        ("command", "UPSERT_EMPLOYEE", "W1"),
        ("golden", "W1", "record"),
    ]
    (cmd,) = of_kind(emits, "command")
    assert cmd["payload"]["erp_employee_id"] is None
    assert cmd["payload"]["cost_center"] == "CC1"
    assert cmd["payload"]["is_active"] is True
    assert cmd["rule"] == "WORKER_MISSING_IN_ERP"
    assert [c["topic"] for c in cmd["causation"]] == [HR]
    (alert,) = of_kind(emits, "alert")
    assert alert["severity"] == "INFO"
    assert alert["entity_id"] == "W1"


def test_missing_in_erp_resolves_when_erp_employee_arrives(h: Harness) -> None:
    opened = of_kind(h.send(change(HR, hr(), lsn=10)), "alert")[0]
    emits = h.send(change(ERP, erp(), lsn=20))
    assert summary(emits) == [
        ("alert", "WORKER_MISSING_IN_ERP", "RESOLVED"),
        ("golden", "W1", "record"),
    ]
    resolved = of_kind(emits, "alert")[0]
    assert resolved["alert_id"] == opened["alert_id"]
    assert resolved["resolved_at"] is not None
    golden = of_kind(emits, "golden")[0]
    assert golden["in_sync"] is True
    assert golden["erp_employee_id"] == "E1"


def test_snapshot_read_behaves_like_create(h: Harness) -> None:
    emits = h.send(change(HR, hr(), lsn=10, op="r"))
    assert ("command", "UPSERT_EMPLOYEE", "W1") in summary(emits)


def test_worker_on_leave_is_synced_but_terminated_is_not(h: Harness) -> None:
    assert ("command", "UPSERT_EMPLOYEE", "W1") in summary(
        h.send(change(HR, hr(status="LEAVE"), lsn=10))
    )
    assert summary(h.send(change(HR, hr("W2", status="TERMINATED"), lsn=11))) == [
        ("golden", "W2", "record")
    ]


def test_duplicate_redelivery_same_lsn_new_offset_emits_nothing(h: Harness) -> None:
    h.send(change(HR, hr(), lsn=10, offset=100))
    assert h.send(change(HR, hr(), lsn=10, offset=101)) == []
    assert h.duplicates == 1


def test_out_of_order_older_version_is_ignored(h: Harness) -> None:
    newer = h.send(change(HR, hr(cc="CC2"), lsn=12, op="u", before=hr()))
    assert of_kind(newer, "command")[0]["payload"]["cost_center"] == "CC2"
    assert h.send(change(HR, hr(cc="CC1"), lsn=11)) == []
    state = h.state("W1")
    assert state is not None
    assert state["hr"]["cost_center"] == "CC2"


def test_genuine_new_change_gets_new_command_id(h: Harness) -> None:
    first = of_kind(h.send(change(HR, hr(), lsn=10)), "command")[0]
    second = of_kind(h.send(change(HR, hr(cc="CC2"), lsn=11, before=hr())), "command")[0]
    assert first["command_id"] != second["command_id"]
    assert second["payload"]["cost_center"] == "CC2"


def test_command_ids_do_not_depend_on_arrival_order(tmp_path: Path) -> None:
    a, b = Harness(tmp_path / "a"), Harness(tmp_path / "b")
    a.send(change(CC, cost_center("CC1"), lsn=1))
    a.send(change(HR, hr(), lsn=10))
    b.send(change(HR, hr(), lsn=10))  # parked: cost center unknown yet
    b.send(change(CC, cost_center("CC1"), lsn=1))
    ids_a = [c["command_id"] for c in of_kind(a.emitted, "command")]
    ids_b = [c["command_id"] for c in of_kind(b.emitted, "command")]
    assert ids_a == ids_b
    assert len(ids_a) == 1


def test_hr_delete_of_unsynced_worker_resolves_and_tombstones_golden(h: Harness) -> None:
    h.send(change(HR, hr(), lsn=10))
    emits = h.send(change(HR, None, before=hr(), lsn=11))
    assert summary(emits) == [
        ("alert", "WORKER_MISSING_IN_ERP", "RESOLVED"),
        ("golden", "W1", "tombstone"),
    ]


# -- WORKER_INVALID_COST_CENTER and parking ---------------------------------------
@pytest.mark.parametrize(
    ("cc", "le", "reason"),
    [
        ("CC-OFF", "LE1", "inactive"),
        ("CC-LE2", "LE1", "belongs to legal entity LE2"),
        (None, "LE1", "no cost center"),
    ],
)
def test_invalid_cost_center_raises_exception_not_command(
    h: Harness, cc: str | None, le: str, reason: str
) -> None:
    emits = h.send(change(HR, hr(cc=cc, le=le), lsn=10))
    assert summary(emits)[:2] == [
        ("alert", "WORKER_MISSING_IN_ERP", "OPEN"),
        ("exception", "WORKER_INVALID_COST_CENTER", "OPEN"),
    ]
    assert of_kind(emits, "command") == []
    exc = of_kind(emits, "exception")[0]
    assert reason in exc["reason"]
    assert exc["context"]["cost_center"] == cc


def test_invalid_cost_center_resolves_when_cost_center_is_activated(h: Harness) -> None:
    opened = of_kind(h.send(change(HR, hr(cc="CC-OFF"), lsn=10)), "exception")[0]
    emits = h.send(
        change(CC, cost_center("CC-OFF"), lsn=30, before=cost_center("CC-OFF", active=False))
    )
    assert summary(emits) == [
        ("exception", "WORKER_INVALID_COST_CENTER", "RESOLVED"),
        ("command", "UPSERT_EMPLOYEE", "W1"),
        ("golden", "W1", "record"),
    ]
    resolved = of_kind(emits, "exception")[0]
    assert resolved["exception_id"] == opened["exception_id"]
    assert resolved["resolution"]["action"] == "AUTO_RESOLVED"


def test_unknown_cost_center_parks_then_times_out_then_resolves(h: Harness) -> None:
    parked = h.send(change(HR, hr(cc="CC9"), lsn=10))
    assert of_kind(parked, "exception") == []
    assert of_kind(parked, "command") == []
    assert h.tick(NOW + TIMEOUT_MS - 1) == []
    timed_out = h.tick(NOW + TIMEOUT_MS)
    (exc,) = of_kind(timed_out, "exception")
    assert exc["rule"] == "DEPENDENCY_TIMEOUT"
    assert exc["context"]["missing"] == "cost_center:CC9"
    emits = h.send(change(CC, cost_center("CC9"), lsn=40), now=NOW + TIMEOUT_MS + 5)
    assert summary(emits) == [
        ("exception", "DEPENDENCY_TIMEOUT", "RESOLVED"),
        ("command", "UPSERT_EMPLOYEE", "W1"),
        ("golden", "W1", "record"),
    ]


def test_parked_worker_is_released_when_dependency_arrives_before_timeout(h: Harness) -> None:
    h.send(change(HR, hr(cc="CC9"), lsn=10))
    emits = h.send(change(CC, cost_center("CC9"), lsn=40))
    assert ("command", "UPSERT_EMPLOYEE", "W1") in summary(emits)
    assert h.tick(NOW + TIMEOUT_MS * 2) == []


# -- WORKER_FIELD_DRIFT ----------------------------------------------------------------
def test_field_drift_on_update_alerts_and_corrects_erp(h: Harness) -> None:
    h.send(change(ERP, erp(), lsn=20))
    h.send(change(HR, hr(), lsn=10))
    emits = h.send(change(HR, hr(cc="CC2"), lsn=11, before=hr()))
    assert summary(emits) == [
        ("alert", "WORKER_FIELD_DRIFT", "OPEN"),
        ("command", "UPSERT_EMPLOYEE", "E1"),
        ("golden", "W1", "record"),
    ]
    alert = of_kind(emits, "alert")[0]
    assert alert["severity"] == "WARNING"
    assert alert["fields"] == [
        {"field": "cost_center", "owner": "HR", "values": {"HR": "CC2", "ERP": "CC1"}}
    ]
    cmd = of_kind(emits, "command")[0]
    assert cmd["payload"]["erp_employee_id"] == "E1"
    assert cmd["payload"]["cost_center"] == "CC2"
    fixed = h.send(change(ERP, erp(cc="CC2"), lsn=21, before=erp()))
    assert summary(fixed)[0] == ("alert", "WORKER_FIELD_DRIFT", "RESOLVED")
    assert of_kind(fixed, "alert")[0]["alert_id"] == alert["alert_id"]


def test_field_drift_from_erp_side_edit_and_redelivery(h: Harness) -> None:
    h.send(change(HR, hr(), lsn=10))
    h.send(change(ERP, erp(), lsn=20))
    drift = h.send(change(ERP, erp(le="LE2"), lsn=21, before=erp()))
    assert ("command", "UPSERT_EMPLOYEE", "E1") in summary(drift)
    assert h.send(change(ERP, erp(le="LE2"), lsn=21, before=erp(), offset=999)) == []


def test_field_drift_alert_resolves_when_erp_employee_deleted(h: Harness) -> None:
    h.send(change(HR, hr(), lsn=10))
    h.send(change(ERP, erp(cc="CC2"), lsn=20))
    emits = h.send(change(ERP, None, before=None, lsn=21, entity_id="E1"))
    kinds = summary(emits)
    assert ("alert", "WORKER_FIELD_DRIFT", "RESOLVED") in kinds
    assert ("alert", "WORKER_MISSING_IN_ERP", "OPEN") in kinds


# -- TERMINATED_WORKER_ACTIVE_IN_ERP ----------------------------------------------------
def test_terminated_worker_active_in_erp_is_deactivated(h: Harness) -> None:
    h.send(change(HR, hr(), lsn=10))
    h.send(change(ERP, erp(), lsn=20))
    emits = h.send(change(HR, hr(status="TERMINATED"), lsn=11, before=hr()))
    assert summary(emits) == [
        ("alert", "TERMINATED_WORKER_ACTIVE_IN_ERP", "OPEN"),
        ("command", "DEACTIVATE_EMPLOYEE", "E1"),
        ("golden", "W1", "record"),
    ]
    assert of_kind(emits, "alert")[0]["severity"] == "CRITICAL"
    assert of_kind(emits, "command")[0]["payload"]["is_active"] is False
    done = h.send(change(ERP, erp(active=False), lsn=21, before=erp()))
    assert summary(done)[0] == ("alert", "TERMINATED_WORKER_ACTIVE_IN_ERP", "RESOLVED")
    assert of_kind(done, "command") == []


def test_terminated_snapshot_with_active_erp(h: Harness) -> None:
    h.send(change(ERP, erp(), lsn=20, op="r"))
    emits = h.send(change(HR, hr(status="TERMINATED"), lsn=10, op="r"))
    assert ("command", "DEACTIVATE_EMPLOYEE", "E1") in summary(emits)


# -- ERP_EMPLOYEE_WITHOUT_HR_WORKER ------------------------------------------------------
def test_orphan_erp_employee_alerts_only_after_grace(h: Harness) -> None:
    assert of_kind(h.send(change(ERP, erp(worker_id="W404"), lsn=20)), "alert") == []
    assert h.tick(NOW + GRACE_MS - 1) == []
    emits = h.tick(NOW + GRACE_MS)
    (alert,) = of_kind(emits, "alert")
    assert alert["rule"] == "ERP_EMPLOYEE_WITHOUT_HR_WORKER"
    assert alert["entity_type"] == "erp_employee"
    assert alert["entity_id"] == "E1"
    late = h.send(change(HR, hr("W404"), lsn=10), now=NOW + GRACE_MS + 1)
    assert ("alert", "ERP_EMPLOYEE_WITHOUT_HR_WORKER", "RESOLVED") in summary(late)


def test_orphan_within_grace_never_alerts_if_hr_arrives(h: Harness) -> None:
    h.send(change(ERP, erp(worker_id="W7"), lsn=20))
    h.send(change(HR, hr("W7"), lsn=10), now=NOW + 10)
    assert h.tick(NOW + GRACE_MS * 3) == []


def test_erp_employee_without_worker_id_is_an_orphan(h: Harness) -> None:
    h.send(change(ERP, erp("E9", worker_id=None), lsn=20))
    (alert,) = of_kind(h.tick(NOW + GRACE_MS), "alert")
    assert alert["entity_id"] == "E9"


def test_inactive_orphan_is_not_alerted(h: Harness) -> None:
    h.send(change(ERP, erp(worker_id="W404", active=False), lsn=20))
    assert h.tick(NOW + GRACE_MS) == []


def test_erp_employee_relinked_to_another_worker(h: Harness) -> None:
    h.send(change(HR, hr("W1"), lsn=10))
    h.send(change(HR, hr("W2"), lsn=11))
    h.send(change(ERP, erp("E1", worker_id="W1"), lsn=20))
    emits = h.send(change(ERP, erp("E1", worker_id="W2"), lsn=21))
    kinds = summary(emits)
    assert ("alert", "WORKER_MISSING_IN_ERP", "OPEN") in kinds  # W1 lost its employee
    assert ("alert", "WORKER_MISSING_IN_ERP", "RESOLVED") in kinds  # W2 found one
    w1 = h.state("W1")
    assert w1 is not None
    assert w1["erp"] == {}
