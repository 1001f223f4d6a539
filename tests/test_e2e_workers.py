"""End to end on the real stack: a worker process, the CLI's produce, exact outputs."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from pssync.settings import Settings
from tests.conftest import SettingsFactory, WorkerFactory
from tests.kafka_helpers import cdc_line, collect, latest_by_key, produce_cli, wait_drained
from tests.worker_harness import cost_center, erp, hr

pytestmark = pytest.mark.kafka

HR, ERP, CC = "cdc.hr.worker", "cdc.erp.employee", "cdc.erp.cost_center"
OUTPUTS = ["erp.cmd.employee", "sync.drift", "sync.exceptions", "reconciled.worker"]


def drained(settings: Settings) -> None:
    topics = [settings.topic(t) for t in (HR, ERP, CC)]
    wait_drained(settings, [*topics, settings.internal_topic("worker-keyed")])


def phase_reference_and_erp() -> list[dict[str, Any]]:
    return [
        cdc_line(CC, cost_center("CC-NY", "LE-US"), lsn=1, op="r"),
        cdc_line(CC, cost_center("CC-LDN", "LE-UK"), lsn=2, op="r"),
        cdc_line(CC, cost_center("CC-OLD", "LE-US", active=False), lsn=3, op="r"),
        cdc_line(ERP, erp("E-1", "W-1", cc="CC-NY", le="LE-US"), lsn=10, op="r"),
        cdc_line(ERP, erp("E-2", "W-2", cc="CC-NY", le="LE-US"), lsn=11, op="r"),
        cdc_line(ERP, erp("E-3", "W-3", cc="CC-LDN", le="LE-US"), lsn=12, op="r"),
        cdc_line(ERP, erp("E-9", "W-404", cc="CC-NY", le="LE-US"), lsn=13, op="r"),
    ]


def phase_hr() -> list[dict[str, Any]]:
    return [
        cdc_line(HR, hr("W-1", cc="CC-NY", le="LE-US"), lsn=100),
        cdc_line(HR, hr("W-2", status="TERMINATED", cc="CC-NY", le="LE-US"), lsn=101),
        cdc_line(HR, hr("W-3", cc="CC-LDN", le="LE-UK"), lsn=102),
        cdc_line(HR, hr("W-4", cc="CC-NY", le="LE-US"), lsn=103),
        cdc_line(HR, hr("W-5", cc="CC-OLD", le="LE-US"), lsn=104),
    ]


def phase_erp_applies_commands() -> list[dict[str, Any]]:
    return [
        cdc_line(
            ERP,
            erp("E-2", "W-2", active=False, cc="CC-NY", le="LE-US"),
            lsn=20,
            before=erp("E-2", "W-2", cc="CC-NY", le="LE-US"),
        ),
        cdc_line(
            ERP,
            erp("E-3", "W-3", cc="CC-LDN", le="LE-UK"),
            lsn=21,
            before=erp("E-3", "W-3", cc="CC-LDN", le="LE-US"),
        ),
        cdc_line(ERP, erp("E-4", "W-4", cc="CC-NY", le="LE-US"), lsn=22),
        # redelivered (same lsn, new offset): nothing new may come of it
        cdc_line(HR, hr("W-1", cc="CC-NY", le="LE-US"), lsn=100),
    ]


def states(records: list[dict[str, Any]], id_field: str) -> dict[tuple[str, str], list[str]]:
    """(rule, entity_id) -> states in order; asserts one id per (rule, entity) episode."""
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    ids: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in records:
        v = r["value"]
        assert r["key"] == v[id_field]
        out[(v["rule"], v["entity_id"])].append(v["state"])
        ids[(v["rule"], v["entity_id"])].add(v[id_field])
    assert all(len(s) == 1 for s in ids.values()), ids
    return dict(out)


def test_worker_scenario_exact_outputs(
    settings_factory: SettingsFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    settings = settings_factory(orphan_grace_s=20)
    worker = worker_factory(settings)
    produce_cli(settings, phase_reference_and_erp(), tmp_path)
    drained(settings)
    produce_cli(settings, phase_hr(), tmp_path)
    drained(settings)
    produce_cli(settings, phase_erp_applies_commands(), tmp_path)
    drained(settings)

    # the orphan E-9 alerts once its grace (20 s from phase 1) has passed
    deadline_records: list[dict[str, Any]] = []
    for _ in range(60):
        deadline_records = collect(settings, ["sync.drift"], idle_s=1)
        if any(r["value"]["rule"] == "ERP_EMPLOYEE_WITHOUT_HR_WORKER" for r in deadline_records):
            break
    out = {t: collect(settings, [t], idle_s=1.5) for t in OUTPUTS}

    commands = sorted(
        (
            r["value"]["type"],
            r["value"]["entity_id"],
            r["key"],
            r["value"]["payload"]["legal_entity"],
            r["value"]["payload"]["is_active"],
        )
        for r in out["erp.cmd.employee"]
    )
    assert commands == [
        ("DEACTIVATE_EMPLOYEE", "E-2", "E-2", "LE-US", False),
        ("UPSERT_EMPLOYEE", "E-3", "E-3", "LE-UK", True),
        ("UPSERT_EMPLOYEE", "W-4", "W-4", "LE-US", True),
    ]
    assert all(
        r["headers"]["correlation_id"] == r["value"]["correlation_id"]
        for r in out["erp.cmd.employee"]
    )

    assert states(out["sync.drift"], "alert_id") == {
        ("TERMINATED_WORKER_ACTIVE_IN_ERP", "W-2"): ["OPEN", "RESOLVED"],
        ("WORKER_FIELD_DRIFT", "W-3"): ["OPEN", "RESOLVED"],
        ("WORKER_MISSING_IN_ERP", "W-4"): ["OPEN", "RESOLVED"],
        ("WORKER_MISSING_IN_ERP", "W-5"): ["OPEN"],
        ("ERP_EMPLOYEE_WITHOUT_HR_WORKER", "E-9"): ["OPEN"],
    }
    severities = {(r["value"]["rule"], r["value"]["severity"]) for r in out["sync.drift"]}
    assert ("TERMINATED_WORKER_ACTIVE_IN_ERP", "CRITICAL") in severities

    assert states(out["sync.exceptions"], "exception_id") == {
        ("WORKER_INVALID_COST_CENTER", "W-5"): ["OPEN"],
    }
    (exc,) = [r["value"] for r in out["sync.exceptions"]]
    assert exc["context"]["cost_center"] == "CC-OLD"
    assert "inactive" in exc["reason"]

    golden = latest_by_key(out["reconciled.worker"])
    assert sorted(golden) == ["W-1", "W-2", "W-3", "W-4", "W-404", "W-5"]
    summary = {
        k: (v["in_sync"], v["open_alerts"], v["open_exceptions"], v["erp_employee_id"])
        for k, v in golden.items()
    }
    assert summary == {
        "W-1": (True, [], [], "E-1"),
        "W-2": (True, [], [], "E-2"),
        "W-3": (True, [], [], "E-3"),
        "W-4": (True, [], [], "E-4"),
        "W-5": (False, ["WORKER_MISSING_IN_ERP"], ["WORKER_INVALID_COST_CENTER"], None),
        "W-404": (False, ["ERP_EMPLOYEE_WITHOUT_HR_WORKER"], [], "E-9"),
    }
    assert golden["W-3"]["legal_entity"] == "LE-UK"
    assert golden["W-3"]["erp_legal_entity"] == "LE-UK"
    # every decision is logged with its correlation id (and no personal data)
    log = worker.log(tail=0)
    for record in out["erp.cmd.employee"]:
        assert f"[{record['value']['correlation_id']}] command {record['value']['type']}" in log
    assert "Grace Hopper" not in log
    assert "grace@example.com" not in log
    status, stats = worker.get("/stats")
    assert status == 200
    assert stats["duplicates"] >= 1
