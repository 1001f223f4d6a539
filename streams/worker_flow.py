"""The worker-keyed join: everything that hangs off a worker, per worker_id.

Co-partitioning (chosen on purpose): HR workers, ERP employees, ERP cost rates,
PSA assignments and PSA time entries are re-keyed by the ingest agents to the
worker's join key (HR `worker_id`; `erp:<id>` for an ERP employee with no
worker_id) on one internal topic, so all of a worker's records land in one
partition and one process. Small reference data — ERP cost centers, periods,
and project facts (PSA and ERP projects) — is *broadcast* to every partition,
which keeps its own copy (a global-table pattern, made explicit) and
re-evaluates the entities that read it.

State keys: `w/<worker>` (HR, ERP employees, cost rates), `as/<assignment>`,
`te/<time entry>`, copies `cc/<id>`, `pe/<period>`, `pr/<project>`, the marker
`pe-closed/<legal entity>` (the latest closed month whose period copy was
retired), and the engine's keys (`streams.flow`).

Retention (event time, `PSSYNC_RETENTION_S` after the fact): a time entry with
nothing pending whose period is closed; an assignment cancelled or ended; a
deleted worker, assignment or entry; a closed period copy nothing reads any
more (the marker then answers for it: a month at or before it is CLOSED); a
project copy whose PSA and ERP sides are closed and that nothing reads. A
change to an entry after it was retired is taken as a new entry: its earlier
posting is not reversed automatically (its period is closed, so nothing is
posted either: the entry raises TIME_IN_CLOSED_PERIOD for a human).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pssync.streams.changes import Change
from pssync.streams.findings import Trigger
from pssync.streams.flow import FlowConfig, KeyedFlow, Step, change_trigger
from pssync.streams.messages import Routed
from pssync.streams.outputs import Emit
from pssync.streams.rules import assignments, time_entries, workers
from pssync.streams.rules.common import accept
from pssync.tables.view import StateView

Record = dict[str, Any]

__all__ = ["FlowConfig", "WorkerFlow"]

WORKER_GOLDEN = "reconciled.worker"
ASSIGNMENT_GOLDEN = "reconciled.assignment"
WORKER_TOPICS = frozenset({workers.HR_TOPIC, workers.ERP_TOPIC, workers.RATE_TOPIC})
REFERENCE_KINDS = {"cost_center": "cc", "period": "pe", "project": "pr"}
CLOSED_MARKER = "pe-closed/"


def end_of_day_ms(day: str) -> int:
    """The first instant after the ISO date `day`, UTC, in ms."""
    start = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
    return int(start.timestamp() * 1000) + 86_400_000


class WorkerFlow(KeyedFlow):
    """Applies worker-keyed changes of one partition to state; returns what to emit."""

    # -- changes ----------------------------------------------------------
    def apply(self, view: StateView, routed: Routed, now_ms: int) -> Step:
        change = routed.change
        trigger = change_trigger(routed, now_ms)
        if routed.kind in REFERENCE_KINDS:
            prefix = REFERENCE_KINDS[routed.kind]
            return self._on_reference(view, prefix, change, trigger, now_ms)
        key = routed.key
        if change.topic in WORKER_TOPICS:
            if key is None:
                return Step()  # a worker's records are found by their key, never unknowingly
            state = view.get(f"w/{key}") or workers.new_state(key)
            if not workers.apply_change(state, change):
                return Step(duplicate=True)
            state["changed_ms"] = now_ms
            emits = self._evaluate_worker(view, f"w/{key}", state, trigger, now_ms)
            return Step(emits + self.reevaluate_dependents(view, f"w/{key}", trigger, now_ms))
        prefix, new = (
            ("as", assignments.new_state)
            if change.topic == assignments.TOPIC
            else ("te", time_entries.new_state)
        )
        skey = f"{prefix}/{change.entity_id}"
        existing = view.get(skey)
        if routed.leaving and existing is None:
            return Step()  # moved away from, or deleted at, a partition that never held it
        state = existing or new(change.entity_id)
        if not accept(state, change):
            return Step(duplicate=True)
        state["rec"] = None if routed.leaving else change.after
        state["src"] = change.source.to_json()
        state["changed_ms"] = now_ms
        return Step(self.reevaluate(view, skey, trigger, now_ms, state))

    def _on_reference(
        self, view: StateView, prefix: str, change: Change, trigger: Trigger, now_ms: int
    ) -> Step:
        project_id = (change.after or change.before or {}).get("project_id")
        ref_id = (project_id or f"erp:{change.entity_id}") if prefix == "pr" else change.entity_id
        key = f"{prefix}/{ref_id}"
        entry = view.get(key) or {"rec": None, "psa": None, "erp": {}, "seen": {}}
        if not accept(entry, change):
            return Step(duplicate=True)
        if prefix != "pr":
            was_closed = (entry["rec"] or {}).get("status") == "CLOSED"
            entry["rec"] = change.after
            closed = (change.after or {}).get("status") == "CLOSED"
            if closed and not was_closed:
                entry["closed_ms"] = now_ms
            elif not closed:
                entry.pop("closed_ms", None)
        elif change.topic == "cdc.psa.project":
            entry["psa"] = change.after
        elif change.after is None or change.after.get("project_id") != project_id:
            entry["erp"].pop(change.entity_id, None)
        else:
            entry["erp"][change.entity_id] = change.after
        entry["changed_ms"] = now_ms
        self._schedule_reference(view, key, entry)
        return Step(self.reevaluate_dependents(view, key, trigger, now_ms))

    # -- where an entity lives (exceptions' `owner`, actions) ---------------------
    def owner_of(self, key: str, state: Record) -> str | None:
        if key.startswith("w/"):
            return f"worker:{key[2:]}"
        rec = state.get("rec")
        return f"worker:{rec['worker_id']}" if rec else None

    def entity_key(self, entity_type: str, entity_id: str, owner_key: str) -> str | None:
        if entity_type == "assignment":
            return f"as/{entity_id}"
        if entity_type == "time_entry":
            return f"te/{entity_id}"
        return f"w/{owner_key}"

    # -- reference retention ---------------------------------------------------
    def _reference_retires_at(self, key: str, entry: Record) -> int | None:
        retention = self.config.retention_ms
        if key.startswith("pe/"):
            closed = entry.get("closed_ms")
            return None if closed is None else closed + retention
        if key.startswith("pr/"):
            psa, erps = entry.get("psa"), entry.get("erp") or {}
            psa_done = psa is None or psa.get("status") == "CLOSED"
            erp_done = all(e.get("status") == "CLOSED" for e in erps.values())
            return entry["changed_ms"] + retention if psa_done and erp_done else None
        return None

    def _schedule_reference(self, view: StateView, key: str, entry: Record) -> None:
        self.set_deadline(view, key, entry, self._reference_retires_at(key, entry))
        view.put(key, entry)

    def _retire_reference(self, view: StateView, key: str, now_ms: int) -> None:
        """Forget a closed period or project copy once retention passed and nothing reads it."""
        entry = view.get(key)
        if entry is None:
            return
        due = self._reference_retires_at(key, entry)
        if due is None or now_ms < due or view.first_key(f"dep/{key}/") is not None:
            return
        if key.startswith("pe/"):
            rec = entry["rec"]
            marker = f"{CLOSED_MARKER}{rec['legal_entity']}"
            if rec["period"] > (view.get(marker) or ""):
                view.put(marker, rec["period"])
        self.purge(view, key, entry)

    # -- evaluation -------------------------------------------------------
    def reevaluate(
        self, view: StateView, key: str, trigger: Trigger, now_ms: int, state: Record | None = None
    ) -> list[Emit]:
        if key.startswith(("pe/", "pr/")):
            self._retire_reference(view, key, now_ms)
            return []
        state = state if state is not None else view.get(key)
        if state is None:
            return []
        if key.startswith("w/"):
            return self._evaluate_worker(view, key, state, trigger, now_ms)
        if key.startswith("as/"):
            return self._evaluate_assignment(view, key, state, trigger, now_ms)
        return self._evaluate_time_entry(view, key, state, trigger, now_ms)

    @staticmethod
    def _lookup(view: StateView, ref: str, refs: set[str]) -> Any:
        refs.add(ref)
        return view.get(ref)

    def _cost_centers(
        self, view: StateView, worker: Record | None, refs: set[str]
    ) -> dict[str, Record]:
        cc_id = worker.get("cost_center") if worker else None
        if not cc_id:
            return {}
        entry = self._lookup(view, f"cc/{cc_id}", refs)
        return {cc_id: entry["rec"]} if entry and entry["rec"] is not None else {}

    def _evaluate_worker(
        self, view: StateView, key: str, state: Record, trigger: Trigger, now_ms: int
    ) -> list[Emit]:
        refs: set[str] = set()
        cost_centers = self._cost_centers(view, state["hr"], refs)
        evaluation = workers.evaluate(state, cost_centers, self.timing(now_ms))
        gone = state["hr"] is None and not state["erp"] and not state.get("rates")
        purge_at = state.get("changed_ms", 0) + self.config.retention_ms if gone else None

        def golden(state: Record) -> list[Emit]:
            record = workers.golden(state, list(state["open"]))
            record_key, value = record if record else (state["key"], None)
            return self.golden(state, WORKER_GOLDEN, record_key, value, trigger)

        return self.settle(view, key, state, evaluation, trigger, now_ms, refs, purge_at, golden)

    def _worker_facts(self, view: StateView, worker_id: str, refs: set[str]) -> Record | None:
        state: Record | None = self._lookup(view, f"w/{worker_id}", refs)
        return state

    def assignment_facts(
        self, view: StateView, rec: Record | None, refs: set[str]
    ) -> assignments.AssignmentFacts:
        """What an assignment's rules and golden record read: its worker, their rates and
        cost center, whether its project is known (`refs` collects what was read)."""
        facts = assignments.AssignmentFacts()
        if rec is not None:
            worker_state = self._worker_facts(view, rec["worker_id"], refs)
            if worker_state is not None:
                facts.worker = worker_state["hr"]
                facts.rates = list(worker_state.get("rates", {}).values())
            facts.cost_centers = self._cost_centers(view, facts.worker, refs)
            project = self._lookup(view, f"pr/{rec['project_id']}", refs)
            facts.project_known = bool(project and project.get("psa"))
        return facts

    def _evaluate_assignment(
        self, view: StateView, key: str, state: Record, trigger: Trigger, now_ms: int
    ) -> list[Emit]:
        rec = state["rec"]
        refs: set[str] = set()
        facts = self.assignment_facts(view, rec, refs)
        purge_at = state.get("changed_ms", 0) + self.config.retention_ms
        if rec is not None and rec["status"] != "CANCELLED":
            ended = end_of_day_ms(rec["end_date"]) + self.config.retention_ms
            purge_at = max(purge_at, ended)
        evaluation = assignments.evaluate(state, facts, self.timing(now_ms))

        def golden(state: Record) -> list[Emit]:
            record = assignments.golden(state, facts)
            return self.golden(state, ASSIGNMENT_GOLDEN, state["id"], record, trigger)

        return self.settle(view, key, state, evaluation, trigger, now_ms, refs, purge_at, golden)

    def _period(self, view: StateView, pid: str, refs: set[str]) -> tuple[Record | None, int]:
        """The period record (or, for a retired one, CLOSED from the marker) and when it
        closed (0 if unknown)."""
        entry = self._lookup(view, f"pe/{pid}", refs)
        if entry and entry["rec"] is not None:
            return entry["rec"], int(entry.get("closed_ms") or 0)
        legal_entity, _, month = pid.partition(":")
        closed_through = view.get(f"{CLOSED_MARKER}{legal_entity}")
        if closed_through is not None and month <= closed_through:
            record = {"period_id": pid, "legal_entity": legal_entity, "period": month}
            return record | {"status": "CLOSED"}, 0
        return None, 0

    def _next_open_period(self, view: StateView, legal_entity: str, pid: str) -> str | None:
        for key, entry in view.scan(f"pe/{legal_entity}:"):
            if key > f"pe/{pid}" and entry["rec"] and entry["rec"]["status"] == "OPEN":
                return str(entry["rec"]["period_id"])
        return None

    def _evaluate_time_entry(
        self, view: StateView, key: str, state: Record, trigger: Trigger, now_ms: int
    ) -> list[Emit]:
        rec = state["rec"]
        refs: set[str] = set()
        facts = time_entries.TimeFacts()
        retention = self.config.retention_ms
        purge_at = None if rec is not None else state.get("changed_ms", 0) + retention
        if rec is not None:
            worker_state = self._worker_facts(view, rec["worker_id"], refs)
            if worker_state is not None:
                facts.worker = worker_state["hr"]
                facts.rates = list(worker_state.get("rates", {}).values())
                linked = sorted(
                    worker_state["erp"].items(),
                    key=lambda kv: (not kv[1]["rec"].get("is_active"), kv[0]),
                )
                facts.erp_employee_id = linked[0][0] if linked else None
            project = self._lookup(view, f"pr/{rec['project_id']}", refs) or {"erp": {}}
            erps = sorted(
                project["erp"].values(),
                key=lambda e: (e.get("status") != "ACTIVE", e["erp_project_id"]),
            )
            facts.erp_project = erps[0] if erps else None
            if facts.erp_project is not None:
                entity = facts.erp_project["legal_entity"]
                pid = time_entries.period_id(entity, rec["work_date"])
                facts.period, closed_ms = self._period(view, pid, refs)
                if facts.period is not None and facts.period["status"] == "CLOSED":
                    facts.next_open_period = self._next_open_period(view, entity, pid)
                    post_to = (state.get("ops") or {}).get("post_to")
                    if post_to:  # an operator chose the next open period (streams.actions)
                        facts.post_to, _ = self._period(view, post_to, refs)
                    purge_at = max(closed_ms, state.get("changed_ms", 0)) + retention
        evaluation = time_entries.evaluate(state, facts, self.timing(now_ms))
        emits = self.settle(view, key, state, evaluation, trigger, now_ms, refs, purge_at)
        if view.get(key) is None:  # retired: its period copy may now be free to go too
            for ref in refs:
                if ref.startswith("pe/"):
                    self._retire_reference(view, ref, now_ms)
        return emits
