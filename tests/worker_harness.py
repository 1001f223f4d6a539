"""Drives WorkerFlow without Kafka: the agents' routing, a real RocksDB store, a fixed clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pssync.streams.changes import Change, SourceRef
from pssync.streams.outputs import Emit
from pssync.streams.routing import erp_employee_targets, new_link
from pssync.streams.worker_flow import FlowConfig, WorkerFlow, tick_message
from pssync.tables.store import PartitionStore
from pssync.tables.view import StateView

NOW = 1_780_000_000_000  # 2026-05-28
HR, ERP, CC = "cdc.hr.worker", "cdc.erp.employee", "cdc.erp.cost_center"
GRACE_MS = 60_000
TIMEOUT_MS = 120_000


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


_KEYS = {HR: "worker_id", ERP: "erp_employee_id", CC: "cost_center_id"}


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


class Harness:
    """One partition of the worker-keyed topic, fed the way the ingest agents feed it."""

    def __init__(self, path: Path) -> None:
        self.store = PartitionStore(path)
        self.flow = WorkerFlow(
            FlowConfig(orphan_grace_ms=GRACE_MS, dependency_timeout_ms=TIMEOUT_MS)
        )
        self.links: dict[str, dict[str, Any]] = {}
        self.emitted: list[Emit] = []

    def _run(self, messages: list[dict[str, Any]], now: int) -> list[Emit]:
        view = StateView(self.store)
        emits = self.flow.process(view, messages, now)
        self.store.write(view.changes(), None)
        self.emitted += emits
        return emits

    def send(self, ch: Change, now: int = NOW) -> list[Emit]:
        if ch.topic == CC:
            return self._run([{"kind": "cost_center", "change": ch.to_json()}], now)
        if ch.topic == HR:
            targets = [ch.entity_id]
        else:
            link = self.links.setdefault(ch.entity_id, new_link())
            targets = erp_employee_targets(link, ch)
        return self._run(
            [{"kind": "change", "key": t, "change": ch.to_json()} for t in targets], now
        )

    def tick(self, now: int) -> list[Emit]:
        return self._run([tick_message(now)], now)

    def state(self, key: str) -> dict[str, Any] | None:
        return self.store.get(f"w/{key}")


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
