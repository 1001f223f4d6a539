"""Entity lookup and validation on demand, read from the flows' state (no Kafka).

The seeded firm runs through the in-process pipeline; then `streams.lookup` reads
its stores as a worker's API would. The answers must agree with what the stream
emitted: the golden records on `reconciled.*`, the open exceptions, the commands,
and the governance gate's verdict for every project the stream judged.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pssync.streams.agents.base import PROJECT_KEYED, WORKER_KEYED
from pssync.streams.flow import FlowConfig
from pssync.streams.lookup import describe, gate_report
from pssync.streams.offline import OfflinePipeline
from pssync.tables.view import StateView
from tests.test_equivalence import CONFIG, SOURCE_PARTITIONS, firm, trickle

Record = dict[str, Any]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OfflinePipeline]:
    changes, _ = firm("every-rule")
    config: FlowConfig = CONFIG
    done = OfflinePipeline(
        tmp_path_factory.mktemp("firm"), config, partitions=3, source_partitions=SOURCE_PARTITIONS
    )
    done.run(trickle(changes), produced="just-in-time")
    done.finish(idle_for_ms=2 * 86_400_000)
    yield done
    done.close()


def last(pipeline: OfflinePipeline, topic: str) -> dict[str, Record | None]:
    return {str(e.key): e.value for e in pipeline.emits if e.topic == topic}


def find(pipeline: OfflinePipeline, target: str, key: str) -> tuple[StateView, Record]:
    for p in range(pipeline.partitions):
        view = StateView(pipeline.stores[(target, p)])
        state = view.get(key)
        if state is not None:
            return view, state
    raise AssertionError(f"{key} is in no partition of {target}")


def test_an_entity_lookup_matches_what_the_stream_emitted(pipeline: OfflinePipeline) -> None:
    exceptions = {k: v for k, v in last(pipeline, "sync.exceptions").items() if v}
    open_by_entity: dict[tuple[str, str], set[str]] = {}
    for record in exceptions.values():
        if record["state"] == "OPEN":
            key = (record["entity_type"], record["entity_id"])
            open_by_entity.setdefault(key, set()).add(record["exception_id"])
    golden = {
        "worker": last(pipeline, "reconciled.worker"),
        "project": last(pipeline, "reconciled.project"),
        "assignment": last(pipeline, "reconciled.assignment"),
    }
    prefixes = {"worker": "w/", "project": "p/", "assignment": "as/", "time_entry": "te/"}
    checked = 0
    for (entity_type, entity_id), ids in sorted(open_by_entity.items()):
        target = PROJECT_KEYED if entity_type == "project" else WORKER_KEYED
        view, state = find(pipeline, target, f"{prefixes[entity_type]}{entity_id}")
        flow = pipeline.flows[target]
        answer = describe(view, entity_type, state, flow)
        found = {f["exception_id"] for f in answer["open_findings"] if "exception_id" in f}
        assert found == ids
        if entity_type in golden:
            emitted = golden[entity_type][entity_id]
            assert emitted is not None
            expected = {k: v for k, v in emitted.items() if k != "updated_at"}
            assert {k: v for k, v in answer["golden"].items() if k != "updated_at"} == expected
        checked += 1
    assert checked >= 5
    # a worker's recent commands are the commands the stream issued for it
    upserts = [
        e.value
        for e in pipeline.emits
        if e.topic == "erp.cmd.employee" and e.value and e.value["type"] == "UPSERT_EMPLOYEE"
    ]
    worker_id = upserts[-1]["payload"]["worker_id"]
    view, state = find(pipeline, WORKER_KEYED, f"w/{worker_id}")
    recent = describe(view, "worker", state)["recent_commands"]
    assert upserts[-1]["command_id"] in {c["command_id"] for c in recent}


def test_validation_on_demand_gives_the_streams_verdict(pipeline: OfflinePipeline) -> None:
    exceptions = [
        v
        for v in last(pipeline, "sync.exceptions").values()
        if v and v["rule"] == "PROJECT_GATE_FAILED"
    ]
    created = {
        e.value["entity_id"]
        for e in pipeline.emits
        if e.topic == "erp.cmd.project" and e.value and e.value["type"] == "CREATE_PROJECT"
    }
    assert exceptions
    assert created
    view = StateView(pipeline.stores[(PROJECT_KEYED, 0)])  # any partition: copies are broadcast
    for project_id in sorted(created | {e["entity_id"] for e in exceptions}):
        _, state = find(pipeline, PROJECT_KEYED, f"p/{project_id}")
        psa = state["psa"]
        body = {
            "crm_account_id": psa["crm_account_id"],
            "legal_entity": psa["legal_entity"],
            "currency": psa["currency"],
            "sow_id": psa.get("sow_id"),
        }
        report = gate_report(view, body)
        judged = [e for e in exceptions if e["entity_id"] == project_id]
        if judged:
            assert report["passed"] is False
            assert report["rule"] == "PROJECT_GATE_FAILED"
            assert ",".join(report["failed_checks"]) == judged[0]["context"]["failed_checks"]
            failing = {c["check"] for c in report["checks"] if not c["passed"]}
            assert set(report["failed_checks"]) <= failing
        else:
            assert report["passed"] is True, report
            assert all(c["passed"] for c in report["checks"])
        assert {c["check"] for c in report["checks"]} >= {
            "customer_exists",
            "customer_approved",
            "customer_has_tax_profile",
            "legal_entity_matches",
            "currency_matches",
        }


def test_an_unknown_account_fails_the_gate_naming_customer_exists(
    pipeline: OfflinePipeline, tmp_path: Path
) -> None:
    view = StateView(pipeline.stores[(PROJECT_KEYED, 0)])
    body = {"crm_account_id": "nobody", "legal_entity": "DE01", "currency": "EUR"}
    report = gate_report(view, body)
    assert report["passed"] is False
    assert report["failed_checks"] == ["customer_exists"]
    assert report["checks"][0] == {
        "check": "customer_exists",
        "passed": False,
        "facts": {"crm_account_id": "nobody", "customer_ids": []},
    }
