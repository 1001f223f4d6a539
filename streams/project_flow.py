"""The project-keyed join: PSA projects vs ERP projects behind the governance gate; SOWs.

Co-partitioning (chosen on purpose): PSA and ERP projects are re-keyed by the
PSA `project_id` (an ERP project without one by `erp:<id>`) onto the internal
`project-keyed` topic. The gate's reference data — ERP customers (looked up by
crm_account_id) and CRM SOWs — is broadcast to every partition, which keeps
copies (`ca/<crm_account_id>`, `so/<sow_id>`). SOW_SIGNED_WITHOUT_PROJECT is
evaluated by the partition that owns `s/<sow_id>`: the SOW and every PSA project
reference to it (`sow_ref`) are routed there by sow_id.
"""

from __future__ import annotations

from typing import Any

from pssync.streams.changes import Change
from pssync.streams.findings import Trigger
from pssync.streams.flow import KeyedFlow, change_trigger
from pssync.streams.outputs import Emit
from pssync.streams.rules import projects
from pssync.streams.rules.common import accept
from pssync.tables.view import StateView

Record = dict[str, Any]

GOLDEN = "reconciled.project"
PSA_PROJECT = "cdc.psa.project"


class ProjectFlow(KeyedFlow):
    def apply(self, view: StateView, message: Record, now_ms: int) -> list[Emit]:
        change = Change.from_json(message["change"])
        trigger = change_trigger(message)
        kind = message["kind"]
        if kind == "customer":
            crm = (change.after or change.before or {}).get("crm_account_id")
            return self._copy(view, f"ca/{crm}", change, trigger, now_ms, many=True)
        if kind == "sow_fact":
            return self._copy(view, f"so/{change.entity_id}", change, trigger, now_ms)
        if kind in ("sow", "sow_ref"):
            return self._on_sow(view, message["key"], kind, change, trigger, now_ms)
        key = f"p/{message['key']}"
        state = view.get(key) or projects.new_state(message["key"])
        if not accept(state, change):
            self.duplicates += 1
            return []
        if change.topic == PSA_PROJECT:
            state["psa"], state["psa_src"] = change.after, change.source.to_json()
        elif change.after is not None and change.after.get("project_id") == message["key"]:
            state["erp"][change.entity_id] = {"rec": change.after, "src": change.source.to_json()}
        else:
            state["erp"].pop(change.entity_id, None)
        return self.reevaluate(view, key, trigger, now_ms, state)

    def _copy(
        self,
        view: StateView,
        key: str,
        change: Change,
        trigger: Trigger,
        now_ms: int,
        many: bool = False,
    ) -> list[Emit]:
        entry = view.get(key) or {"rec": None, "many": {}, "seen": {}}
        if not accept(entry, change):
            self.duplicates += 1
            return []
        if many:
            if change.after is None:
                entry["many"].pop(change.entity_id, None)
            else:
                entry["many"][change.entity_id] = change.after
        else:
            entry["rec"] = change.after
        view.put(key, entry)
        return self.reevaluate_dependents(view, key, trigger, now_ms)

    def _on_sow(
        self,
        view: StateView,
        sow_key: str,
        kind: str,
        change: Change,
        trigger: Trigger,
        now_ms: int,
    ) -> list[Emit]:
        sow_id = sow_key.removeprefix("s:")
        key = f"s/{sow_id}"
        state = view.get(key) or projects.new_sow_state(sow_id)
        if not accept(state, change):
            self.duplicates += 1
            return []
        if kind == "sow":
            state["sow"] = change.after
        else:
            refers = change.after is not None and change.after.get("sow_id") == sow_id
            state["refs"][change.entity_id] = refers
        return self.reevaluate(view, key, trigger, now_ms, state)

    def reevaluate(
        self, view: StateView, key: str, trigger: Trigger, now_ms: int, state: Record | None = None
    ) -> list[Emit]:
        state = state if state is not None else view.get(key)
        if state is None:
            return []
        if key.startswith("s/"):
            evaluation = projects.evaluate_sow(state, state.get("sow"), self.timing(now_ms))
            return self.settle(view, key, state, evaluation, trigger, now_ms)
        facts = projects.ProjectFacts()
        psa = state["psa"]
        if psa is not None:
            self.depend(view, f"ca/{psa['crm_account_id']}", key)
            account = view.get(f"ca/{psa['crm_account_id']}")
            facts.customers = list(account["many"].values()) if account else []
            if psa.get("sow_id"):
                self.depend(view, f"so/{psa['sow_id']}", key)
                sow = view.get(f"so/{psa['sow_id']}")
                facts.sow = sow["rec"] if sow else None
        evaluation = projects.evaluate(state, facts, self.timing(now_ms))
        emits = self.settle(view, key, state, evaluation, trigger, now_ms)
        return emits + self.golden(
            state, GOLDEN, state["id"], projects.golden(state), now_ms, trigger
        )
