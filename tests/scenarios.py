"""A small firm in CDC lines, with one of each project, staffing and time case in it.

Lines come in two phases: reference data and the ERP side first (as a real
firm's snapshot would be), then PSA and HR activity, then edits after posting.
`EXPECTED_*` say what the worker must emit for them.
"""

from __future__ import annotations

from typing import Any

from tests.kafka_helpers import cdc_line
from tests.worker_harness import (
    ASSIGNMENT,
    CC,
    CUSTOMER,
    ERP,
    ERP_PROJECT,
    HR,
    PERIOD,
    PSA_PROJECT,
    RATE,
    SOW,
    TIME,
    assignment,
    cost_center,
    customer,
    erp,
    erp_project,
    hr,
    period,
    psa_project,
    rate,
    sow,
    time_entry,
)

Line = dict[str, Any]


def reference_and_erp() -> list[Line]:
    lines = [
        cdc_line(CC, cost_center("CC1"), lsn=1, op="r"),
        cdc_line(CUSTOMER, customer("CU1", "ACC1"), lsn=2, op="r"),
        cdc_line(CUSTOMER, customer("CU2", "ACC2", status="PENDING_APPROVAL"), lsn=3, op="r"),
        cdc_line(PERIOD, period("2026-02", status="CLOSED"), lsn=4, op="r"),
        cdc_line(PERIOD, period("2026-03"), lsn=5, op="r"),
        cdc_line(PERIOD, period("2026-04"), lsn=6, op="r"),
        cdc_line(SOW, sow("S1", "ACC1", signed_at=None), lsn=7, op="r"),
        cdc_line(ERP_PROJECT, erp_project("EP1", "P1"), lsn=8, op="r"),
        cdc_line(ERP_PROJECT, erp_project("EP3", "P3", status="CLOSED"), lsn=9, op="r"),
    ]
    for i, w in enumerate(("W1", "W2", "W3", "W4")):
        lines.append(cdc_line(ERP, erp(f"E{i + 1}", w), lsn=20 + i, op="r"))
    lines += [
        # W1: 80.00 until 2026-03-15, then 100.00; W2: a gap 03-11..03-19; W3, W4: 90.00
        cdc_line(RATE, rate("R1a", "W1", "2026-01-01", "2026-03-15", "80.00"), lsn=30, op="r"),
        cdc_line(RATE, rate("R1b", "W1", "2026-03-16", None, "100.00"), lsn=31, op="r"),
        cdc_line(RATE, rate("R2a", "W2", "2026-01-01", "2026-03-10", "70.00"), lsn=32, op="r"),
        cdc_line(RATE, rate("R2b", "W2", "2026-03-20", None, "70.00"), lsn=33, op="r"),
        cdc_line(RATE, rate("R3", "W3", "2026-01-01", None, "90.00"), lsn=34, op="r"),
        cdc_line(RATE, rate("R4", "W4", "2026-01-01", None, "90.00"), lsn=35, op="r"),
    ]
    return lines


def psa_and_hr() -> list[Line]:
    lines = [cdc_line(HR, hr(w), lsn=100 + i, op="r") for i, w in enumerate(("W1", "W2", "W3"))]
    lines += [
        cdc_line(HR, hr("W4", status="TERMINATED"), lsn=104, op="r"),  # left 2026-04-30
        cdc_line(PSA_PROJECT, psa_project("P1", sow_id="S1"), lsn=200),  # in the ERP already
        cdc_line(PSA_PROJECT, psa_project("P2", account="ACC1"), lsn=201),  # CREATE_PROJECT
        cdc_line(PSA_PROJECT, psa_project("P3"), lsn=202),  # ERP CLOSED: drift + UPDATE
        cdc_line(PSA_PROJECT, psa_project("P4", account="ACC2"), lsn=203),  # gate fails
        cdc_line(ASSIGNMENT, assignment("A1", "W1", "P1", bill_rate="150.00"), lsn=210),
        cdc_line(ASSIGNMENT, assignment("A3", "W3", "P1", bill_rate="85.00"), lsn=211),  # < cost
        cdc_line(ASSIGNMENT, assignment("A4", "W4", "P1", end="2026-06-30"), lsn=212),  # left
        # time: T1 posts at 80.00, T2 at 100.00 (the rate changed mid-month)
        cdc_line(TIME, time_entry("T1", "W1", "P1", "2026-03-13", "8.00"), lsn=300),
        cdc_line(TIME, time_entry("T2", "W1", "P1", "2026-03-16", "7.50"), lsn=301),
        cdc_line(TIME, time_entry("T3", "W1", "P1", "2026-02-27", "4.00"), lsn=302),  # closed
        cdc_line(TIME, time_entry("T4", "W2", "P1", "2026-03-12", "6.00"), lsn=303),  # no rate
        cdc_line(TIME, time_entry("T5", "W4", "P1", "2026-05-04", "8.00"), lsn=304),  # left
        cdc_line(TIME, time_entry("T6", "W3", "P1", "2026-03-17", "5.00"), lsn=305),
        cdc_line(TIME, time_entry("T7", "W3", "P1", "2026-03-18", "3.00"), lsn=306),
        cdc_line(TIME, time_entry("T8", "W3", "P1", "2026-03-19", "2.00", status="DRAFT"), lsn=307),
    ]
    return lines


def edits_after_posting() -> list[Line]:
    return [
        # T6 edited after posting: reverse 5.00, post 6.50; T7 rejected: reverse 3.00
        cdc_line(
            TIME,
            time_entry("T6", "W3", "P1", "2026-03-17", "6.50"),
            lsn=400,
            before=time_entry("T6", "W3", "P1", "2026-03-17", "5.00"),
        ),
        cdc_line(
            TIME,
            time_entry("T7", "W3", "P1", "2026-03-18", "3.00", status="REJECTED"),
            lsn=401,
            before=time_entry("T7", "W3", "P1", "2026-03-18", "3.00"),
        ),
        # a redelivered approval (same lsn): nothing new
        cdc_line(TIME, time_entry("T1", "W1", "P1", "2026-03-13", "8.00"), lsn=300),
    ]


EXPECTED_TIME_COMMANDS = sorted(
    [
        ("POST_TIME_ENTRY", "T1", "8.00", "80.00", "640.00"),
        ("POST_TIME_ENTRY", "T2", "7.50", "100.00", "750.00"),
        ("POST_TIME_ENTRY", "T6", "5.00", "90.00", "450.00"),
        ("REVERSE_TIME_ENTRY", "T6", "5.00", "90.00", "450.00"),
        ("POST_TIME_ENTRY", "T6", "6.50", "90.00", "585.00"),
        ("POST_TIME_ENTRY", "T7", "3.00", "90.00", "270.00"),
        ("REVERSE_TIME_ENTRY", "T7", "3.00", "90.00", "270.00"),
    ]
)
EXPECTED_PROJECT_COMMANDS = sorted([("CREATE_PROJECT", "P2"), ("UPDATE_PROJECT", "P3")])
EXPECTED_EXCEPTIONS = {
    ("TIME_IN_CLOSED_PERIOD", "T3"): ["OPEN"],
    ("TIME_MISSING_COST_RATE", "T4"): ["OPEN"],
    ("TIME_FOR_INACTIVE_WORKER", "T5"): ["OPEN"],
    ("PROJECT_GATE_FAILED", "P4"): ["OPEN"],
    ("ASSIGNMENT_WORKER_INELIGIBLE", "A4"): ["OPEN"],
}
EXPECTED_ALERTS = {
    ("PROJECT_MISSING_IN_ERP", "P2"): ["OPEN"],
    ("PROJECT_MISSING_IN_ERP", "P4"): ["OPEN"],
    ("PROJECT_FIELD_DRIFT", "P3"): ["OPEN"],
    ("ASSIGNMENT_RATE_BELOW_COST", "A3"): ["OPEN"],
    ("TERMINATED_WORKER_ACTIVE_IN_ERP", "W4"): ["OPEN"],
}
