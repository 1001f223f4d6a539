"""Project, SOW and assignment rules through their flows (no Kafka)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.worker_harness import (
    ASSIGNMENT,
    CC,
    CUSTOMER,
    ERP_PROJECT,
    HR,
    NOW,
    PSA_PROJECT,
    RATE,
    SLA_MS,
    SOW,
    TIMEOUT_MS,
    Harness,
    assignment,
    change,
    cost_center,
    customer,
    erp_project,
    hr,
    of_kind,
    psa_project,
    rate,
    sow,
    summary,
)


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path / "store")


# -- PROJECT_MISSING_IN_ERP and the governance gate --------------------------------------
def test_active_project_missing_in_erp_is_created_when_the_gate_passes(h: Harness) -> None:
    h.send(change(CUSTOMER, customer(), lsn=1))
    h.send(change(SOW, sow(), lsn=2))
    emits = h.send(change(PSA_PROJECT, psa_project(sow_id="S1"), lsn=10))
    assert summary(emits)[:2] == [
        ("alert", "PROJECT_MISSING_IN_ERP", "OPEN"),
        ("command", "CREATE_PROJECT", "P1"),
    ]
    (cmd,) = of_kind(emits, "command")
    assert cmd["payload"]["customer_id"] == "CU1"
    assert cmd["payload"]["project_template"] == "TM-STD"
    done = h.send(change(ERP_PROJECT, erp_project(), lsn=20))
    assert ("alert", "PROJECT_MISSING_IN_ERP", "RESOLVED") in summary(done)


@pytest.mark.parametrize(
    ("cust", "project_sow", "failed"),
    [
        (customer(status="PENDING_APPROVAL"), sow(), ["customer_approved"]),
        (customer(tax=None), sow(), ["customer_has_tax_profile"]),
        (customer(currency="EUR"), sow(), ["currency_matches"]),
        (customer(), sow(le="LE2"), ["legal_entity_matches"]),
        (
            customer(status="ON_HOLD", tax=None),
            sow(),
            ["customer_approved", "customer_has_tax_profile"],
        ),
    ],
)
def test_gate_failure_names_each_failed_check(
    h: Harness, cust: dict[str, object], project_sow: dict[str, object], failed: list[str]
) -> None:
    h.send(change(CUSTOMER, cust, lsn=1))
    h.send(change(SOW, project_sow, lsn=2))
    emits = h.send(change(PSA_PROJECT, psa_project(sow_id="S1"), lsn=10))
    (exc,) = of_kind(emits, "exception")
    assert exc["rule"] == "PROJECT_GATE_FAILED"
    assert exc["context"]["failed_checks"] == ",".join(failed)
    for check in failed:
        assert check in exc["reason"]
    assert of_kind(emits, "command") == []


def test_gate_resolves_when_the_customer_is_approved(h: Harness) -> None:
    h.send(change(CUSTOMER, customer(status="PENDING_APPROVAL"), lsn=1))
    h.send(change(PSA_PROJECT, psa_project(), lsn=10))
    fixed = h.send(change(CUSTOMER, customer(), lsn=2, before=customer(status="PENDING_APPROVAL")))
    assert summary(fixed)[:2] == [
        ("exception", "PROJECT_GATE_FAILED", "RESOLVED"),
        ("command", "CREATE_PROJECT", "P1"),
    ]


def test_project_before_its_customer_is_parked_then_gate_fails_at_timeout(h: Harness) -> None:
    parked = h.send(change(PSA_PROJECT, psa_project(), lsn=10))
    assert of_kind(parked, "exception") == []
    (exc,) = of_kind(h.tick(NOW + TIMEOUT_MS), "exception")
    assert exc["rule"] == "PROJECT_GATE_FAILED"
    assert exc["context"]["failed_checks"] == "customer_exists"
    assert exc["context"]["missing"] == "customer:ACC1"
    late = h.send(change(CUSTOMER, customer(), lsn=1), now=NOW + TIMEOUT_MS + 1)
    assert ("command", "CREATE_PROJECT", "P1") in summary(late)


def test_planned_project_is_not_created(h: Harness) -> None:
    h.send(change(CUSTOMER, customer(), lsn=1))
    assert (
        of_kind(h.send(change(PSA_PROJECT, psa_project(status="PLANNED"), lsn=10)), "command") == []
    )


# -- PROJECT_FIELD_DRIFT ------------------------------------------------------------------
def test_erp_closed_while_psa_active_updates_the_erp(h: Harness) -> None:
    h.send(change(PSA_PROJECT, psa_project(), lsn=10))
    emits = h.send(change(ERP_PROJECT, erp_project(status="CLOSED"), lsn=20))
    assert ("alert", "PROJECT_FIELD_DRIFT", "OPEN") in summary(emits)
    (cmd,) = of_kind(emits, "command")
    assert (cmd["type"], cmd["payload"]["status"], cmd["payload"]["erp_project_id"]) == (
        "UPDATE_PROJECT",
        "ACTIVE",
        "EP1",
    )
    fixed = h.send(change(ERP_PROJECT, erp_project(), lsn=21))
    assert ("alert", "PROJECT_FIELD_DRIFT", "RESOLVED") in summary(fixed)


def test_psa_closed_while_erp_active_and_currency_drift(h: Harness) -> None:
    h.send(change(ERP_PROJECT, erp_project(currency="EUR"), lsn=20))
    emits = h.send(change(PSA_PROJECT, psa_project(status="CLOSED"), lsn=10))
    (alert,) = of_kind(emits, "alert")
    assert [(f["field"], f["owner"]) for f in alert["fields"]] == [
        ("status", "PSA"),
        ("currency", "CRM"),
    ]
    assert of_kind(emits, "command")[0]["payload"]["status"] == "CLOSED"


# -- SOW_SIGNED_WITHOUT_PROJECT -----------------------------------------------------------
def test_signed_sow_without_project_alerts_after_the_sla(h: Harness) -> None:
    signed_ms = NOW  # sow() is signed at NOW
    assert of_kind(h.send(change(SOW, sow(), lsn=1)), "alert") == []
    assert of_kind(h.tick(signed_ms + SLA_MS - 1), "alert") == []
    (alert,) = of_kind(h.tick(signed_ms + SLA_MS), "alert")
    assert (alert["rule"], alert["entity_type"], alert["entity_id"]) == (
        "SOW_SIGNED_WITHOUT_PROJECT",
        "sow",
        "S1",
    )
    late = h.send(change(PSA_PROJECT, psa_project(sow_id="S1"), lsn=10), now=NOW + SLA_MS + 1)
    assert ("alert", "SOW_SIGNED_WITHOUT_PROJECT", "RESOLVED") in summary(late)


def test_sow_with_a_project_in_time_never_alerts(h: Harness) -> None:
    h.send(change(SOW, sow(), lsn=1))
    h.send(change(PSA_PROJECT, psa_project(sow_id="S1"), lsn=10))
    assert [
        a
        for a in of_kind(h.tick(NOW + 2 * SLA_MS), "alert")
        if a["rule"] == "SOW_SIGNED_WITHOUT_PROJECT"
    ] == []


# -- assignments --------------------------------------------------------------------------
@pytest.fixture
def staffed(h: Harness) -> Harness:
    h.send(change(CC, cost_center("CC1"), lsn=1))
    h.send(change(CC, cost_center("CC-OFF", active=False), lsn=2))
    h.send(change(HR, hr(), lsn=3))
    h.send(change(RATE, rate(amount="100.00"), lsn=4))
    h.send(change(PSA_PROJECT, psa_project(), lsn=5))
    return h


def test_clean_assignment_has_a_golden_record_and_no_findings(staffed: Harness) -> None:
    emits = staffed.send(change(ASSIGNMENT, assignment(), lsn=10))
    assert of_kind(emits, "alert") == []
    assert of_kind(emits, "exception") == []
    (golden,) = of_kind(emits, "golden")
    assert (golden["cost_rate"], golden["in_sync"]) == ("100.00", True)


def test_rate_below_cost_alerts(staffed: Harness) -> None:
    emits = staffed.send(change(ASSIGNMENT, assignment(bill_rate="99.99"), lsn=10))
    (alert,) = of_kind(emits, "alert")
    assert alert["rule"] == "ASSIGNMENT_RATE_BELOW_COST"
    assert alert["fields"][0]["values"] == {"PSA": "99.99", "ERP": "100.00"}
    repriced = staffed.send(change(ASSIGNMENT, assignment(bill_rate="100.00"), lsn=11))
    assert ("alert", "ASSIGNMENT_RATE_BELOW_COST", "RESOLVED") in summary(repriced)


def test_worker_terminated_before_assignment_ends_is_ineligible(staffed: Harness) -> None:
    staffed.send(change(ASSIGNMENT, assignment(end="2026-06-30"), lsn=10))
    emits = staffed.send(change(HR, hr(status="TERMINATED"), lsn=20, before=hr()))
    exc = [e for e in of_kind(emits, "exception") if e["entity_type"] == "assignment"]
    assert [e["rule"] for e in exc] == ["ASSIGNMENT_WORKER_INELIGIBLE"]
    assert exc[0]["context"]["termination_date"] == "2026-04-30"


def test_unknown_worker_is_parked_then_ineligible(h: Harness) -> None:
    h.send(change(PSA_PROJECT, psa_project(), lsn=5))
    assert (
        of_kind(h.send(change(ASSIGNMENT, assignment(worker_id="W404"), lsn=10)), "exception") == []
    )
    timed_out = of_kind(h.tick(NOW + TIMEOUT_MS), "exception")
    (exc,) = [e for e in timed_out if e["entity_type"] == "assignment"]
    assert (exc["rule"], exc["context"]["missing"]) == (
        "ASSIGNMENT_WORKER_INELIGIBLE",
        "worker:W404",
    )


def test_assignment_invalid_cost_center_resolves_when_hr_fixes_it(staffed: Harness) -> None:
    staffed.send(change(HR, hr(cc="CC-OFF"), lsn=20, before=hr()))
    emits = staffed.send(change(ASSIGNMENT, assignment(), lsn=10))
    assert "ASSIGNMENT_INVALID_COST_CENTER" in [e["rule"] for e in of_kind(emits, "exception")]
    fixed = staffed.send(change(HR, hr(cc="CC1"), lsn=21, before=hr(cc="CC-OFF")))
    assert ("exception", "ASSIGNMENT_INVALID_COST_CENTER", "RESOLVED") in summary(fixed)


def test_assignment_before_its_project_waits_for_it(h: Harness) -> None:
    h.send(change(CC, cost_center("CC1"), lsn=1))
    h.send(change(HR, hr(), lsn=3))
    h.send(change(ASSIGNMENT, assignment(project_id="P7"), lsn=10))
    (exc,) = of_kind(h.tick(NOW + TIMEOUT_MS), "exception")
    assert (exc["rule"], exc["context"]["missing"]) == ("DEPENDENCY_TIMEOUT", "project:P7")
    late = h.send(change(PSA_PROJECT, psa_project("P7"), lsn=11), now=NOW + TIMEOUT_MS + 1)
    assert ("exception", "DEPENDENCY_TIMEOUT", "RESOLVED") in summary(late)
