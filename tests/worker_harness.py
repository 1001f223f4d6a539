"""Drives the keyed flows without Kafka: the agents' routing, real RocksDB stores, a
harness clock.

Every change is sent at a harness time (`now`, default NOW): it is the change's event
time, and the harness then reports its one source read past it, so the change is
applied at once; `tick(now)` moves event time to `now` (timers due up to it fire).
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any

from pssync.avro.contract import TABLES
from pssync.streams.agents import INGEST_MODULES
from pssync.streams.agents.base import PROJECT_KEYED, WORKER_KEYED, IngestSpec
from pssync.streams.changes import Change, SourceRef
from pssync.streams.flow import Failure, FlowConfig, FlowResult, KeyedFlow
from pssync.streams.messages import Message, Routed, Watermark
from pssync.streams.outputs import Emit
from pssync.streams.project_flow import ProjectFlow
from pssync.streams.worker_flow import WorkerFlow
from pssync.tables.store import PartitionStore
from pssync.tables.view import StateView

NOW = 1_780_000_000_000  # 2026-05-28
HR, ERP, CC = "cdc.hr.worker", "cdc.erp.employee", "cdc.erp.cost_center"
GRACE_MS = 60_000
TIMEOUT_MS = 120_000
SLA_MS = 3_600_000
RETENTION_MS = 30 * 86_400_000
SOURCE = ("harness", 0)


def hr(
    worker_id: str = "W1",
    status: str = "ACTIVE",
    cc: str | None = "CC1",
    le: str = "LE1",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "worker_id": worker_id,
        "full_name": "Grace Hopper",
        "email": "grace@example.com",
        "employment_status": status,
        "hire_date": "2024-02-01",
        "termination_date": "2026-04-30" if status == "TERMINATED" else None,
        "cost_center": cc,
        "legal_entity": le,
        "manager_id": None,
        "job_profile": "Senior Consultant",
        "updated_at": "2026-05-01T00:00:00.000Z",
    } | extra


def erp(
    erp_id: str = "E1",
    worker_id: str | None = "W1",
    active: bool = True,
    cc: str | None = "CC1",
    le: str = "LE1",
) -> dict[str, Any]:
    return {
        "erp_employee_id": erp_id,
        "worker_id": worker_id,
        "is_active": active,
        "cost_center": cc,
        "legal_entity": le,
        "updated_at": "2026-05-01T00:00:00.000Z",
    }


def cost_center(cc_id: str = "CC1", le: str = "LE1", active: bool = True) -> dict[str, Any]:
    return {"cost_center_id": cc_id, "legal_entity": le, "is_active": active}


_KEYS = {t.topic: t.key[0] for t in TABLES}


def change(
    topic: str,
    after: dict[str, Any] | None,
    *,
    lsn: int,
    before: dict[str, Any] | None = None,
    op: str | None = None,
    offset: int | None = None,
    entity_id: str | None = None,
    ts: int = NOW - 1000,
) -> Change:
    image = after if after is not None else before
    key = entity_id or (image or {})[_KEYS[topic]]
    if op is None:
        op = "d" if after is None else ("u" if before is not None else "c")
    ref = SourceRef(topic, 0, lsn if offset is None else offset, key, lsn, ts)
    return Change(topic, key, op, before, after, ref, f"corr-{topic}-{key}-{lsn}", op == "r")


def at(ch: Change, ts: int) -> Change:
    """The same change, committed at `ts`."""
    return dataclasses.replace(ch, source=dataclasses.replace(ch.source, ts_ms=ts))


def _specs() -> dict[str, IngestSpec]:
    return {
        importlib.import_module(name).SPEC.topic: importlib.import_module(name).SPEC
        for name in INGEST_MODULES
    }


class Harness:
    """One partition of each keyed topic, fed the way the ingest agents feed them
    (their own routing specs and link tables), with real RocksDB stores."""

    def __init__(self, path: Path, retention_ms: int = RETENTION_MS) -> None:
        self.config = FlowConfig(
            GRACE_MS, TIMEOUT_MS, SLA_MS, retention_ms, idle_ttl_ms=5_000, sources=(SOURCE,)
        )
        self.store = PartitionStore(path)
        self.project_store = PartitionStore(path.with_name(path.name + "-projects"))
        self.link_store = PartitionStore(path.with_name(path.name + "-links"))
        self.flow = WorkerFlow(self.config)
        self.project_flow = ProjectFlow(self.config)
        self.emitted: list[Emit] = []
        # what each keyed batch wrote: the changelog records it sent (None = tombstone)
        self.changelog: list[dict[str, bytes | None]] = []
        self.failures: list[Failure] = []
        self.duplicates = 0
        self.late = 0
        self.specs = _specs()
        self.clock = 0
        self.retention_ms = retention_ms

    def flow_for(self, target: str) -> tuple[PartitionStore, KeyedFlow]:
        if target == WORKER_KEYED:
            return self.store, self.flow
        return self.project_store, self.project_flow

    def run(self, target: str, messages: list[Message]) -> FlowResult:
        """One batch of one keyed partition, as the keyed agent runs it."""
        store, flow = self.flow_for(target)
        view = StateView(store)
        result = flow.process(view, 0, messages, wall_ms=0)
        changes = view.changes()
        self.changelog.append(changes)
        store.write(changes, None)
        self.emitted += result.emits
        self.failures += result.failures
        self.duplicates += result.duplicates
        self.late += result.late
        return result

    def _watermark(self, now: int) -> Watermark:
        self.clock = max(self.clock, now)
        return Watermark(SOURCE[0], SOURCE[1], self.clock + 1, None, 0)

    def route(self, ch: Change) -> dict[str, list[Message]]:
        """The messages the ingest agent sends for `ch`, by target topic."""
        out: dict[str, list[Message]] = {WORKER_KEYED: [], PROJECT_KEYED: []}
        links = StateView(self.link_store)
        for route in self.specs[ch.topic].routes:
            if route.join_key is None:
                out[route.target].append(Routed(route.kind, None, ch))
                continue
            plan = IngestSpec.plan(route, ch, links if route.linked else None, self.retention_ms)
            new_key = route.join_key(ch.after) if ch.after else None
            for key in plan.targets:
                out[route.target].append(Routed(route.kind, key, ch, leaving=key != new_key))
        self.link_store.write(links.changes(), None)
        return out

    def send(self, ch: Change, now: int = NOW) -> list[Emit]:
        """`ch`, committed at `now` (its event time), applied at once."""
        ch = at(ch, now)
        emits: list[Emit] = []
        for target, messages in self.route(ch).items():
            if messages:
                emits += self.run(target, [*messages, self._watermark(now)]).emits
        return emits

    def tick(self, now: int) -> list[Emit]:
        """Event time moves to `now`: timers due up to it fire."""
        wm = self._watermark(now)
        return self.run(WORKER_KEYED, [wm]).emits + self.run(PROJECT_KEYED, [wm]).emits

    def close(self) -> None:
        self.store.close()
        self.project_store.close()
        self.link_store.close()

    def state(self, key: str) -> dict[str, Any] | None:
        return self.store.get(key if "/" in key else f"w/{key}")


def summary(emits: list[Emit]) -> list[tuple[str, str, str]]:
    """(kind, rule or command type, state or entity) per emit, in order."""
    out = []
    for e in emits:
        v = e.value or {}
        if e.kind == "command":
            out.append(("command", v["type"], v["entity_id"]))
        elif e.kind in ("alert", "exception"):
            out.append((e.kind, v["rule"], v["state"]))
        elif e.kind == "golden":
            out.append(("golden", str(e.key), "tombstone" if e.value is None else "record"))
    return out


def of_kind(emits: list[Emit], kind: str) -> list[dict[str, Any]]:
    return [e.value for e in emits if e.kind == kind and e.value is not None]


# -- the rest of the firm ------------------------------------------------------------------
RATE, PERIOD, CUSTOMER = "cdc.erp.cost_rate", "cdc.erp.period", "cdc.erp.customer"
ERP_PROJECT, PSA_PROJECT, SOW = "cdc.erp.project", "cdc.psa.project", "cdc.crm.sow"
ASSIGNMENT, TIME = "cdc.psa.assignment", "cdc.psa.time_entry"


def rate(
    rate_id: str = "R1",
    worker_id: str = "W1",
    start: str = "2026-01-01",
    end: str | None = None,
    amount: str = "80.00",
    currency: str = "USD",
) -> dict[str, Any]:
    return {
        "rate_id": rate_id,
        "worker_id": worker_id,
        "effective_from": start,
        "effective_to": end,
        "rate": amount,
        "currency": currency,
    }


def period(month: str = "2026-03", le: str = "LE1", status: str = "OPEN") -> dict[str, Any]:
    return {"period_id": f"{le}:{month}", "legal_entity": le, "period": month, "status": status}


def customer(
    customer_id: str = "CU1",
    account: str = "ACC1",
    status: str = "APPROVED",
    tax: str | None = "STD",
    le: str = "LE1",
    currency: str = "USD",
) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "crm_account_id": account,
        "name": "Acme Corp",
        "status": status,
        "legal_entity": le,
        "tax_profile": tax,
        "currency": currency,
    }


def sow(
    sow_id: str = "S1",
    account: str = "ACC1",
    status: str = "SIGNED",
    le: str = "LE1",
    currency: str = "USD",
    signed_at: str | None = "2026-05-28T20:26:40.000Z",
) -> dict[str, Any]:
    return {
        "sow_id": sow_id,
        "crm_account_id": account,
        "legal_entity": le,
        "currency": currency,
        "project_template": "TM-STD",
        "status": status,
        "signed_at": signed_at,
        "total_value": "120000.00",
    }


def psa_project(
    project_id: str = "P1",
    status: str = "ACTIVE",
    sow_id: str | None = None,
    account: str = "ACC1",
    le: str = "LE1",
    currency: str = "USD",
) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "sow_id": sow_id,
        "crm_account_id": account,
        "name": "Data platform",
        "legal_entity": le,
        "currency": currency,
        "status": status,
        "billing_type": "TIME_AND_MATERIALS",
        "start_date": "2026-01-05",
        "end_date": None,
    }


def erp_project(
    erp_id: str = "EP1",
    project_id: str | None = "P1",
    status: str = "ACTIVE",
    le: str = "LE1",
    currency: str = "USD",
) -> dict[str, Any]:
    return {
        "erp_project_id": erp_id,
        "project_id": project_id,
        "customer_id": "CU1",
        "legal_entity": le,
        "currency": currency,
        "status": status,
    }


def assignment(
    assignment_id: str = "A1",
    worker_id: str = "W1",
    project_id: str = "P1",
    status: str = "CONFIRMED",
    bill_rate: str = "150.00",
    start: str = "2026-03-01",
    end: str = "2026-06-30",
) -> dict[str, Any]:
    return {
        "assignment_id": assignment_id,
        "project_id": project_id,
        "worker_id": worker_id,
        "role": "Consultant",
        "start_date": start,
        "end_date": end,
        "allocation_pct": 80,
        "bill_rate": bill_rate,
        "status": status,
    }


def time_entry(
    te_id: str = "T1",
    worker_id: str = "W1",
    project_id: str = "P1",
    day: str = "2026-03-16",
    hours: str = "7.50",
    status: str = "APPROVED",
    billable: bool = True,
) -> dict[str, Any]:
    return {
        "time_entry_id": te_id,
        "worker_id": worker_id,
        "project_id": project_id,
        "assignment_id": None,
        "work_date": day,
        "hours": hours,
        "billable": billable,
        "status": status,
        "approved_at": "2026-03-20T17:00:00.000Z" if status == "APPROVED" else None,
    }


def staffed_firm(h: Harness) -> None:
    """A worker with an ERP employee and a rate, an ACTIVE ERP project, an open period."""
    h.send(change(CC, cost_center("CC1"), lsn=1))
    h.send(change(ERP, erp(), lsn=2))
    h.send(change(HR, hr(), lsn=3))
    h.send(change(RATE, rate(), lsn=4))
    h.send(change(PERIOD, period("2026-03"), lsn=5))
    h.send(change(PERIOD, period("2026-04"), lsn=6))
    h.send(change(PSA_PROJECT, psa_project(), lsn=7))
    h.send(change(ERP_PROJECT, erp_project(), lsn=8))
