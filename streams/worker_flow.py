"""The worker-keyed join: everything that hangs off a worker, per worker_id.

Co-partitioning (chosen on purpose): HR workers, ERP employees, ERP cost rates,
PSA assignments and PSA time entries are re-keyed by the ingest agents to the
worker's join key (HR `worker_id`; `erp:<id>` for an ERP employee with no
worker_id) on one internal topic, so all of a worker's records land in one
partition and one process. Small reference data — ERP cost centers, periods,
and project facts (PSA and ERP projects) — is *broadcast* to every partition,
which keeps its own copy (a global-table pattern, made explicit) and
re-evaluates the entities that depend on it.

State keys: `w/<worker>` (HR, ERP employees, cost rates), `as/<assignment>`,
`te/<time entry>`, copies `cc/<id>`, `pe/<period>`, `pr/<project>`, and the
`dep/`, `deadlines`, `q/` bookkeeping of `streams.flow`.
"""

from __future__ import annotations

from typing import Any

from pssync.streams.changes import Change
from pssync.streams.findings import Trigger
from pssync.streams.flow import FlowConfig, KeyedFlow, change_trigger, tick_message
from pssync.streams.outputs import Emit
from pssync.streams.rules import assignments, time_entries, workers
from pssync.streams.rules.common import accept
from pssync.tables.view import StateView

Record = dict[str, Any]

__all__ = ["FlowConfig", "WorkerFlow", "tick_message"]

WORKER_GOLDEN = "reconciled.worker"
ASSIGNMENT_GOLDEN = "reconciled.assignment"
WORKER_TOPICS = frozenset({workers.HR_TOPIC, workers.ERP_TOPIC, workers.RATE_TOPIC})
REFERENCE_KINDS = {"cost_center": "cc", "period": "pe", "project": "pr"}


class WorkerFlow(KeyedFlow):
    """Applies worker-keyed messages of one partition to state; returns what to emit."""

    # -- messages ---------------------------------------------------------
    def apply(self, view: StateView, message: Record, now_ms: int) -> list[Emit]:
        change = Change.from_json(message["change"])
        trigger = change_trigger(message)
        kind = message["kind"]
        if kind in REFERENCE_KINDS:
            return self._on_reference(view, REFERENCE_KINDS[kind], change, trigger, now_ms)
        key = message["key"]
        if change.topic in WORKER_TOPICS:
            state = view.get(f"w/{key}") or workers.new_state(key)
            if not workers.apply_change(state, change):
                self.duplicates += 1
                return []
            emits = self._evaluate_worker(view, f"w/{key}", state, trigger, now_ms)
            return emits + self.reevaluate_dependents(view, f"w/{key}", trigger, now_ms)
        prefix, new = (
            ("as", assignments.new_state)
            if change.topic == assignments.TOPIC
            else ("te", time_entries.new_state)
        )
        state = view.get(f"{prefix}/{change.entity_id}") or new(change.entity_id)
        if not accept(state, change):
            self.duplicates += 1
            return []
        here = change.after is not None and change.after.get("worker_id") == key
        state["rec"] = change.after if here else None
        state["src"] = change.source.to_json()
        return self.reevaluate(view, f"{prefix}/{change.entity_id}", trigger, now_ms, state)

    def _on_reference(
        self, view: StateView, prefix: str, change: Change, trigger: Trigger, now_ms: int
    ) -> list[Emit]:
        project_id = (change.after or change.before or {}).get("project_id")
        ref_id = (project_id or f"erp:{change.entity_id}") if prefix == "pr" else change.entity_id
        key = f"{prefix}/{ref_id}"
        entry = view.get(key) or {"rec": None, "psa": None, "erp": {}, "seen": {}}
        if not accept(entry, change):
            self.duplicates += 1
            return []
        if prefix != "pr":
            entry["rec"] = change.after
        elif change.topic == "cdc.psa.project":
            entry["psa"] = change.after
        elif change.after is None or change.after.get("project_id") != project_id:
            entry["erp"].pop(change.entity_id, None)
        else:
            entry["erp"][change.entity_id] = change.after
        view.put(key, entry)
        return self.reevaluate_dependents(view, key, trigger, now_ms)

    # -- evaluation -------------------------------------------------------
    def reevaluate(
        self, view: StateView, key: str, trigger: Trigger, now_ms: int, state: Record | None = None
    ) -> list[Emit]:
        state = state if state is not None else view.get(key)
        if state is None:
            return []
        if key.startswith("w/"):
            return self._evaluate_worker(view, key, state, trigger, now_ms)
        if key.startswith("as/"):
            return self._evaluate_assignment(view, key, state, trigger, now_ms)
        return self._evaluate_time_entry(view, key, state, trigger, now_ms)

    def _cost_centers(self, view: StateView, key: str, worker: Record | None) -> dict[str, Record]:
        cc_id = worker.get("cost_center") if worker else None
        if not cc_id:
            return {}
        self.depend(view, f"cc/{cc_id}", key)
        entry = view.get(f"cc/{cc_id}")
        return {cc_id: entry["rec"]} if entry and entry["rec"] is not None else {}

    def _evaluate_worker(
        self, view: StateView, key: str, state: Record, trigger: Trigger, now_ms: int
    ) -> list[Emit]:
        previous = state.get("cc_ref")
        hr = state["hr"]
        if previous and previous != (hr or {}).get("cost_center"):
            self.undepend(view, f"cc/{previous}", key)
        state["cc_ref"] = (hr or {}).get("cost_center")
        evaluation = workers.evaluate(state, self._cost_centers(view, key, hr), self.timing(now_ms))
        emits = self.settle(view, key, state, evaluation, trigger, now_ms)
        golden = workers.golden(state, list(state["open"]))
        record_key, record = golden if golden else (state["key"], None)
        return emits + self.golden(state, WORKER_GOLDEN, record_key, record, now_ms, trigger)

    def _worker_facts(self, view: StateView, key: str, worker_id: str) -> Record | None:
        self.depend(view, f"w/{worker_id}", key)
        state: Record | None = view.get(f"w/{worker_id}")
        return state

    def _evaluate_assignment(
        self, view: StateView, key: str, state: Record, trigger: Trigger, now_ms: int
    ) -> list[Emit]:
        rec = state["rec"]
        facts = assignments.AssignmentFacts()
        if rec is not None:
            worker_state = self._worker_facts(view, key, rec["worker_id"])
            if worker_state is not None:
                facts.worker = worker_state["hr"]
                facts.rates = list(worker_state.get("rates", {}).values())
            facts.cost_centers = self._cost_centers(view, key, facts.worker)
            self.depend(view, f"pr/{rec['project_id']}", key)
            project = view.get(f"pr/{rec['project_id']}")
            facts.project_known = bool(project and project.get("psa"))
        evaluation = assignments.evaluate(state, facts, self.timing(now_ms))
        emits = self.settle(view, key, state, evaluation, trigger, now_ms)
        record = assignments.golden(state, facts)
        return emits + self.golden(state, ASSIGNMENT_GOLDEN, state["id"], record, now_ms, trigger)

    def _evaluate_time_entry(
        self, view: StateView, key: str, state: Record, trigger: Trigger, now_ms: int
    ) -> list[Emit]:
        rec = state["rec"]
        facts = time_entries.TimeFacts()
        if rec is not None:
            worker_state = self._worker_facts(view, key, rec["worker_id"])
            if worker_state is not None:
                facts.worker = worker_state["hr"]
                facts.rates = list(worker_state.get("rates", {}).values())
                linked = sorted(
                    worker_state["erp"].items(),
                    key=lambda kv: (not kv[1]["rec"].get("is_active"), kv[0]),
                )
                facts.erp_employee_id = linked[0][0] if linked else None
            self.depend(view, f"pr/{rec['project_id']}", key)
            project = view.get(f"pr/{rec['project_id']}") or {"erp": {}}
            erps = sorted(
                project["erp"].values(),
                key=lambda e: (e.get("status") != "ACTIVE", e["erp_project_id"]),
            )
            facts.erp_project = erps[0] if erps else None
            if facts.erp_project is not None:
                entity = facts.erp_project["legal_entity"]
                period_id = time_entries.period_id(entity, rec["work_date"])
                self.depend(view, f"pe/{period_id}", key)
                period = view.get(f"pe/{period_id}")
                facts.period = period["rec"] if period else None
                facts.next_open_period = next(
                    (
                        e["rec"]["period_id"]
                        for k, e in view.scan(f"pe/{entity}:")
                        if k > f"pe/{period_id}" and e["rec"] and e["rec"]["status"] == "OPEN"
                    ),
                    None,
                )
        evaluation = time_entries.evaluate(state, facts, self.timing(now_ms))
        return self.settle(view, key, state, evaluation, trigger, now_ms)
