"""Projects, staffing and time end to end on the real stack; and partitioned execution."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from pssync.avro.contract import CDC_TOPICS
from pssync.settings import Settings
from tests import scenarios
from tests.conftest import SettingsFactory, WorkerFactory
from tests.kafka_helpers import (
    collect,
    create_topics,
    latest_by_key,
    metric,
    produce_cli,
    scrape,
    wait_drained,
)

pytestmark = pytest.mark.kafka

OUTPUTS = [
    "erp.cmd.employee",
    "erp.cmd.project",
    "erp.cmd.time_entry",
    "sync.drift",
    "sync.exceptions",
    "reconciled.project",
    "reconciled.assignment",
    "sync.dlq",
]


def drained(settings: Settings) -> None:
    topics = [settings.topic(t) for t in CDC_TOPICS]
    internal = [settings.internal_topic(t) for t in ("worker-keyed", "project-keyed")]
    wait_drained(settings, topics + internal)


def run_scenario(settings: Settings, tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    for phase in (
        scenarios.reference_and_erp(),
        scenarios.psa_and_hr(),
        scenarios.edits_after_posting(),
    ):
        produce_cli(settings, phase, tmp_path)
        drained(settings)
    return {t: collect(settings, [t], idle_s=1.5) for t in OUTPUTS}


def states(records: list[dict[str, Any]]) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in records:
        out[(r["value"]["rule"], r["value"]["entity_id"])].append(r["value"]["state"])
    return dict(out)


def test_firm_scenario_exact_outputs(
    settings_factory: SettingsFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    settings = settings_factory(log_format="json")
    create_topics(settings)
    worker = worker_factory(settings)
    out = run_scenario(settings, tmp_path)

    time_commands = sorted(
        (
            c["value"]["type"],
            c["key"],
            c["value"]["payload"]["hours"],
            c["value"]["payload"]["cost_rate"],
            c["value"]["payload"]["cost_amount"],
        )
        for c in out["erp.cmd.time_entry"]
    )
    assert time_commands == scenarios.EXPECTED_TIME_COMMANDS
    reversals = [
        c["value"] for c in out["erp.cmd.time_entry"] if c["value"]["type"] == "REVERSE_TIME_ENTRY"
    ]
    posted_ids = {c["value"]["command_id"] for c in out["erp.cmd.time_entry"]}
    assert all(r["payload"]["reverses_command_id"] in posted_ids for r in reversals)

    project_commands = sorted((c["value"]["type"], c["key"]) for c in out["erp.cmd.project"])
    assert project_commands == scenarios.EXPECTED_PROJECT_COMMANDS
    assert [(c["value"]["type"], c["key"]) for c in out["erp.cmd.employee"]] == [
        ("DEACTIVATE_EMPLOYEE", "E4")
    ]

    assert states(out["sync.exceptions"]) == scenarios.EXPECTED_EXCEPTIONS
    assert states(out["sync.drift"]) == scenarios.EXPECTED_ALERTS
    (gate,) = [
        e["value"] for e in out["sync.exceptions"] if e["value"]["rule"] == "PROJECT_GATE_FAILED"
    ]
    assert gate["context"]["failed_checks"] == "customer_approved"
    (closed,) = [
        e["value"] for e in out["sync.exceptions"] if e["value"]["rule"] == "TIME_IN_CLOSED_PERIOD"
    ]
    assert closed["context"]["next_open_period"] == "LE1:2026-03"

    projects = latest_by_key(out["reconciled.project"])
    assert {k: (v["in_sync"], v["erp_project_id"]) for k, v in projects.items()} == {
        "P1": (True, "EP1"),
        "P2": (False, None),
        "P3": (False, "EP3"),
        "P4": (False, None),
    }
    assignments = latest_by_key(out["reconciled.assignment"])
    assert {k: (v["in_sync"], v["cost_rate"]) for k, v in assignments.items()} == {
        "A1": (True, "80.00"),
        "A3": (False, "90.00"),
        "A4": (False, "90.00"),
    }
    assert out["sync.dlq"] == []

    samples = scrape(worker.url + "/metrics")
    assert metric(samples, "pssync_commands_total", type="POST_TIME_ENTRY") == 5
    assert metric(samples, "pssync_commands_total", type="REVERSE_TIME_ENTRY") == 2
    assert metric(samples, "pssync_commands_total", type="CREATE_PROJECT") == 1
    assert metric(samples, "pssync_alerts_total", rule="PROJECT_FIELD_DRIFT", state="OPEN") == 1
    assert (
        metric(samples, "pssync_open_alerts", rule="PROJECT_MISSING_IN_ERP", severity="INFO") == 2
    )
    assert metric(samples, "pssync_open_alerts") == len(scenarios.EXPECTED_ALERTS)
    assert metric(samples, "pssync_open_exceptions") == len(scenarios.EXPECTED_EXCEPTIONS)
    assert metric(samples, "pssync_open_exceptions", rule="TIME_IN_CLOSED_PERIOD") == 1
    assert metric(samples, "pssync_input_records_total", topic="cdc.psa.time_entry") == 11
    assert metric(samples, "pssync_input_records_total", topic="cdc.psa.time_entry", op="u") == 2
    assert metric(samples, "pssync_time_to_post_seconds_count") == 5
    assert metric(samples, "pssync_duplicate_changes_total") >= 1
    assert metric(samples, "pssync_table_keys", table="workers") > 0
    assert metric(samples, "pssync_end_to_end_latency_seconds_count", output="command") == 10
    assert metric(samples, "pssync_ready") == 1
    assert metric(samples, "pssync_sync_outcomes_total", outcome="exception") == 5

    # JSON logs an operator can search: every decision with its correlation id, no
    # personal data (names, emails, rates)
    lines = [json.loads(line) for line in worker.log(tail=0).splitlines() if line.startswith("{")]
    decisions = [rec for rec in lines if rec["logger"] == "pssync.decisions"]
    commands = {
        c["value"]["correlation_id"]
        for t in ("erp.cmd.time_entry", "erp.cmd.project")
        for c in out[t]
    }
    assert commands <= {rec.get("correlation_id") for rec in decisions}
    assert all(rec.get("correlation_id") for rec in decisions)
    text = worker.log(tail=0)
    for private in ("Grace Hopper", "grace@example.com", "Acme Corp", "80.00", "100.00"):
        assert private not in text


def outcome(out: dict[str, list[dict[str, Any]]]) -> tuple[Any, ...]:
    commands = sorted(
        r["value"]["command_id"]
        for t in ("erp.cmd.employee", "erp.cmd.project", "erp.cmd.time_entry")
        for r in out[t]
    )
    final = {}
    for t in ("sync.drift", "sync.exceptions"):
        for r in out[t]:
            v = r["value"]
            final[(v["rule"], v["entity_id"])] = v["state"]
    return commands, final


def test_two_workers_produce_what_one_worker_does(
    settings_factory: SettingsFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    single = settings_factory(partitions=4)
    create_topics(single)
    alone = worker_factory(single)
    one = outcome(run_scenario(single, tmp_path))
    one_metrics = scrape(alone.url + "/metrics")

    shared = settings_factory(partitions=4)
    create_topics(shared)
    first, second = worker_factory(shared), worker_factory(shared)
    for worker in (first, second):  # both own partitions before any input arrives
        for _ in range(120):
            status, body = worker.get("/ready")
            if status == 200 and body["assigned_partitions"] > 0:
                break
            time.sleep(0.5)
    two = outcome(run_scenario(shared, tmp_path))
    assert two[0] == one[0]
    assert two[1] == one[1]
    assert len(one[0]) == len(scenarios.EXPECTED_TIME_COMMANDS) + 3
    _, a = first.get("/stats")
    _, b = second.get("/stats")
    assert sum(a["outputs"].values()) > 0
    assert sum(b["outputs"].values()) > 0

    # each worker reports what it owns; summed across workers they match the single run
    both = [scrape(w.url + "/metrics") for w in (first, second)]
    for name, labels in [
        ("pssync_commands_total", {}),
        ("pssync_commands_total", {"type": "POST_TIME_ENTRY"}),
        ("pssync_alerts_total", {"state": "OPEN"}),
        ("pssync_exceptions_total", {}),
        ("pssync_open_alerts", {}),
        ("pssync_open_alerts", {"rule": "PROJECT_MISSING_IN_ERP"}),
        ("pssync_open_exceptions", {}),
        ("pssync_input_records_total", {"topic": "cdc.psa.time_entry"}),
        ("pssync_time_to_post_seconds_count", {}),
    ]:
        total = sum(metric(m, name, **labels) for m in both)
        assert total == metric(one_metrics, name, **labels), (name, labels)
        assert total > 0, (name, labels)


def test_parked_time_entry_survives_a_restart_and_posts_when_its_project_arrives(
    settings_factory: SettingsFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    from tests.kafka_helpers import cdc_line
    from tests.worker_harness import ERP_PROJECT, TIME, erp_project, time_entry

    settings = settings_factory()
    create_topics(settings)
    worker = worker_factory(settings)
    produce_cli(settings, scenarios.reference_and_erp() + scenarios.psa_and_hr()[:4], tmp_path)
    produce_cli(
        settings, [cdc_line(TIME, time_entry("T9", "W1", "P9", "2026-03-13"), lsn=500)], tmp_path
    )
    drained(settings)
    assert collect(settings, ["erp.cmd.time_entry"], idle_s=1) == []  # parked on P9
    worker.stop()

    # a new process with empty local state: the parked entry comes back from the changelog
    restarted = settings.model_copy(update={"data_dir": tmp_path / "fresh-disk"})
    worker_factory(restarted)
    produce_cli(restarted, [cdc_line(ERP_PROJECT, erp_project("EP9", "P9"), lsn=501)], tmp_path)
    drained(restarted)
    posted = collect(restarted, ["erp.cmd.time_entry"], idle_s=1)
    assert [(c["value"]["type"], c["key"]) for c in posted] == [("POST_TIME_ENTRY", "T9")]
