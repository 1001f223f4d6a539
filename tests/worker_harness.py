"""Drives WorkerFlow without Kafka: the agents' routing, a real RocksDB store, a fixed clock."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from pssync.avro.contract import TABLES
from pssync.streams.agents import INGEST_MODULES
from pssync.streams.agents.base import PROJECT_KEYED, WORKER_KEYED, IngestSpec
from pssync.streams.changes import Change, SourceRef
from pssync.streams.flow import FlowConfig, KeyedFlow, tick_message
from pssync.streams.outputs import Emit
from pssync.streams.project_flow import ProjectFlow
from pssync.streams.routing import link_targets, new_link
from pssync.streams.worker_flow import WorkerFlow
from pssync.tables.store import PartitionStore
from pssync.tables.view import StateView

NOW = 1_780_000_000_000  # 2026-05-28
HR, ERP, CC = "cdc.hr.worker", "cdc.erp.employee", "cdc.erp.cost_center"
GRACE_MS = 60_000
TIMEOUT_MS = 120_000
SLA_MS = 3_600_000


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
) -> Change:
    image = after if after is not None else before
    key = entity_id or (image or {})[_KEYS[topic]]
    if op is None:
        op = "d" if after is None else ("u" if before is not None else "c")
    ref = SourceRef(topic, 0, lsn if offset is None else offset, key, lsn, NOW - 1000)
    return Change(topic, key, op, before, after, ref, f"corr-{topic}-{key}-{lsn}", op == "r")


def _specs() -> dict[str, IngestSpec]:
    return {
        importlib.import_module(name).SPEC.topic: importlib.import_module(name).SPEC
        for name in INGEST_MODULES
    }


class Harness:
    """One partition of each keyed topic, fed the way the ingest agents feed them
    (their own routing specs), with real RocksDB stores and a fixed clock."""

    def __init__(self, path: Path, window_ms: int = 0) -> None:
        config = FlowConfig(GRACE_MS, TIMEOUT_MS, window_ms, SLA_MS)
        self.store = PartitionStore(path)
        self.project_store = PartitionStore(path.with_name(path.name + "-projects"))
        self.flow = WorkerFlow(config)
        self.project_flow = ProjectFlow(config)
        self.links: dict[str, dict[str, Any]] = {}
        self.emitted: list[Emit] = []
        self.specs = _specs()

    def _run(self, target: str, messages: list[dict[str, Any]], now: int) -> list[Emit]:
        store = self.store if target == WORKER_KEYED else self.project_store
        flow: KeyedFlow = self.flow if target == WORKER_KEYED else self.project_flow
        view = StateView(store)
        emits = flow.process(view, messages, now)
        store.write(view.changes(), None)
        self.emitted += emits
        return emits

    def send(self, ch: Change, now: int = NOW) -> list[Emit]:
        emits: list[Emit] = []
        for route in self.specs[ch.topic].routes:
            message: dict[str, Any] = {"kind": route.kind, "change": ch.to_json()}
            if route.join_key is None:
                emits += self._run(route.target, [message], now)
                continue
            if route.linked:
                link = self.links.setdefault(f"{ch.topic}/{route.kind}/{ch.entity_id}", new_link())
                targets = link_targets(link, ch, route.join_key)
            else:
                key = route.join_key(ch.after or ch.before or {})
                targets = [key] if key else []
            emits += self._run(route.target, [message | {"key": t} for t in targets], now)
        return emits

    def tick(self, now: int) -> list[Emit]:
        return self._run(WORKER_KEYED, [tick_message(now)], now) + self._run(
            PROJECT_KEYED, [tick_message(now)], now
        )

    def close(self) -> None:
        self.store.close()
        self.project_store.close()

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
