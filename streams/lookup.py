"""Reads of the keyed flows' state for the operations API: entity lookup and validation.

Kafka Streams' interactive queries: an entity's state lives in one partition of
one keyed topic, held by one worker. `owner_partition` says which partition holds
an entity when its key tells (workers, projects); assignments and time entries are
keyed by their worker, so only a look at every partition can find them by their own
id (`find_entity` on every worker; the API scatters). `find_entity` and
`validate_project` answer from the partitions this process owns and return None
when the answer is elsewhere, for the caller to forward.

Reads are read-committed: the stores hold what the last commit wrote, never a
batch's half-applied view. Rules are the stream's own (`workers.golden`,
`projects.gate`, ...), so a lookup and the stream cannot disagree on a verdict.
"""

from __future__ import annotations

from typing import Any

from pssync.connectors.kafka import stable_partition
from pssync.settings import Settings
from pssync.streams.agents.base import PROJECT_KEYED, WORKER_KEYED
from pssync.streams.agents.project_keyed import TABLE as PROJECTS_TABLE
from pssync.streams.agents.worker_keyed import TABLE as WORKERS_TABLE
from pssync.streams.findings import iso, public_record
from pssync.streams.rules import assignments, projects, workers
from pssync.streams.runtime import Runtime
from pssync.streams.worker_flow import WorkerFlow
from pssync.tables.view import StateView

Record = dict[str, Any]

ENTITY_TYPES = ("worker", "project", "assignment", "time_entry")
# where each entity type's state lives: (keyed topic, table, state key prefix)
_PLACES = {
    "worker": (WORKER_KEYED, WORKERS_TABLE, "w/"),
    "assignment": (WORKER_KEYED, WORKERS_TABLE, "as/"),
    "time_entry": (WORKER_KEYED, WORKERS_TABLE, "te/"),
    "project": (PROJECT_KEYED, PROJECTS_TABLE, "p/"),
}


def owner_partition(settings: Settings, entity_type: str, entity_id: str) -> tuple[str, int] | None:
    """(physical keyed topic, partition) holding the entity, or None when only a scan of
    every partition can tell (assignments and time entries live with their worker)."""
    if entity_type not in ("worker", "project"):
        return None
    internal = _PLACES[entity_type][0]
    return settings.internal_topic(internal), stable_partition(entity_id, settings.partitions)


def held_partitions(rt: Runtime, internal: str) -> list[int]:
    """The partitions of keyed topic `internal` (WORKER_KEYED, PROJECT_KEYED) owned here."""
    physical = rt.settings.internal_topic(internal)
    return sorted(p for topic, p in rt.assigned if topic == physical)


async def find_entity(rt: Runtime, entity_type: str, entity_id: str) -> Record | None:
    """`{"golden", "open_findings", "recent_commands", "partition"}` of an entity held by
    this process, or None (not held here, or unknown)."""
    internal, table_name, prefix = _PLACES[entity_type]
    owner = owner_partition(rt.settings, entity_type, entity_id)
    held = held_partitions(rt, internal)
    candidates = [owner[1]] if owner is not None else held
    for partition in candidates:
        if partition not in held:
            continue
        view = await rt.partition_view(rt.table(table_name), partition)
        state = view.get(f"{prefix}{entity_id}")
        if state is not None:
            flow = rt.flows.get(rt.settings.internal_topic(internal))
            return describe(view, entity_type, state, flow) | {"partition": partition}
    return None


def describe(
    view: StateView, entity_type: str, state: Record, flow: object | None = None
) -> Record:
    """An entity's golden record, open findings and recent commands, from its state."""
    golden: Record | None
    if entity_type == "worker":
        found = workers.golden(state, list(state["open"]))
        golden = found[1] if found else None
    elif entity_type == "project":
        golden = projects.golden(state)
    elif entity_type == "assignment":
        facts = (
            flow.assignment_facts(view, state["rec"], set())
            if isinstance(flow, WorkerFlow)
            else assignments.AssignmentFacts()
        )
        golden = assignments.golden(state, facts)
    else:
        posted = state.get("posted")
        golden = None
        if state.get("rec") is not None:
            golden = dict(state["rec"]) | {
                "posted_command_id": posted["command_id"] if posted else None,
                "posted_period_id": posted["payload"].get("period_id") if posted else None,
            }
    if golden is not None and state.get("changed_ms") is not None:
        golden = golden | {"updated_at": iso(int(state["changed_ms"]))}
    findings = [public_record(r) for _, r in sorted(state["open"].items())]
    return {
        "golden": golden,
        "open_findings": findings,
        "recent_commands": list(reversed(state.get("recent") or [])),
    }


async def validate_project(rt: Runtime, body: Record) -> Record | None:
    """The governance gate for a project not created yet, from the broadcast copies of
    customers and SOWs in any project-keyed partition owned here (None: none is)."""
    held = held_partitions(rt, PROJECT_KEYED)
    if not held:
        return None
    view = await rt.partition_view(rt.table(PROJECTS_TABLE), held[0])
    return gate_report(view, body)


def gate_report(view: StateView, body: Record) -> Record:
    """Each check of PROJECT_GATE_FAILED, passed or not, with the facts it looked at.

    `failed_checks` is what the stream would name in the exception's context for a
    project with these fields; a check that needs a customer fails when there is none."""
    account = view.get(f"ca/{body['crm_account_id']}")
    customers: list[Record] = list(account["many"].values()) if account else []
    sow_id = body.get("sow_id")
    sow: Record | None = None
    if sow_id:
        entry = view.get(f"so/{sow_id}")
        sow = entry["rec"] if entry else None
    project = {"legal_entity": body["legal_entity"], "currency": body["currency"]}
    failed, customer = projects.gate(project, projects.ProjectFacts(customers, sow))
    if sow_id and sow is None:
        failed.append("sow_exists")  # as the stream names it
    chosen = customer or {}
    facts: dict[str, Record] = {
        "customer_exists": {
            "crm_account_id": body["crm_account_id"],
            "customer_ids": sorted(c["customer_id"] for c in customers),
        },
        "customer_approved": {
            "customer_id": chosen.get("customer_id"),
            "status": chosen.get("status"),
        },
        "customer_has_tax_profile": {
            "customer_id": chosen.get("customer_id"),
            "tax_profile": chosen.get("tax_profile"),
        },
        "legal_entity_matches": {
            "project": body["legal_entity"],
            "customer": chosen.get("legal_entity"),
            "sow": sow.get("legal_entity") if sow else None,
        },
        "currency_matches": {
            "project": body["currency"],
            "customer": chosen.get("currency"),
            "sow": sow.get("currency") if sow else None,
        },
    }
    names = list(projects.GATE_CHECKS)
    if sow_id:
        names.append("sow_exists")
        facts["sow_exists"] = {"sow_id": sow_id, "status": sow.get("status") if sow else None}
    checks = [
        {
            "check": check,
            "passed": check not in failed and (customer is not None or check == "sow_exists"),
            "facts": facts[check],
        }
        for check in names
    ]
    passed = not failed
    return {
        "passed": passed,
        "rule": None if passed else "PROJECT_GATE_FAILED",
        "failed_checks": failed,
        "checks": checks,
    }
