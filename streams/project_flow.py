"""The project-keyed join: PSA projects vs ERP projects behind the governance gate; SOWs.

Co-partitioning (chosen on purpose): PSA and ERP projects are re-keyed by the
PSA `project_id` (an ERP project without one by `erp:<id>`) onto the internal
`project-keyed` topic. The gate's reference data — ERP customers (looked up by
crm_account_id) and CRM SOWs — is broadcast to every partition, which keeps
copies (`ca/<crm_account_id>`, `so/<sow_id>`). SOW_SIGNED_WITHOUT_PROJECT is
evaluated by the partition that owns `s/<sow_id>`: the SOW and every PSA project
reference to it (`sow_ref`) are routed there by sow_id.

Retention: a deleted project (PSA and ERP sides gone) and a deleted SOW with no
project referring to it leave state `PSSYNC_RETENTION_S` after the delete.
Closed projects stay: if one is reopened, its ERP project must still be known,
or pssync would create a second one.
"""

from __future__ import annotations

from typing import Any

from pssync.streams.changes import Change
from pssync.streams.findings import Trigger
from pssync.streams.flow import KeyedFlow, Step, change_trigger
from pssync.streams.messages import Routed
from pssync.streams.outputs import Emit
from pssync.streams.rules import projects
from pssync.streams.rules.common import accept
from pssync.tables.view import StateView

Record = dict[str, Any]

GOLDEN = "reconciled.project"
PSA_PROJECT = "cdc.psa.project"


class ProjectFlow(KeyedFlow):
    def apply(self, view: StateView, routed: Routed, now_ms: int) -> Step:
        change = routed.change
        trigger = change_trigger(routed, now_ms)
        kind = routed.kind
        if kind == "customer":
            crm = (change.after or change.before or {}).get("crm_account_id")
            return self._copy(view, f"ca/{crm}", change, trigger, now_ms, many=True)
        if kind == "sow_fact":
            return self._copy(view, f"so/{change.entity_id}", change, trigger, now_ms)
        if routed.key is None:
            return Step()
        if kind in ("sow", "sow_ref"):
            return self._on_sow(view, routed.key, kind, change, trigger, now_ms)
        key = f"p/{routed.key}"
        state = view.get(key) or projects.new_state(routed.key)
        if not accept(state, change):
            return Step(duplicate=True)
        if change.topic == PSA_PROJECT:
            state["psa"], state["psa_src"] = change.after, change.source.to_json()
        elif change.after is not None and change.after.get("project_id") == routed.key:
            state["erp"][change.entity_id] = {"rec": change.after, "src": change.source.to_json()}
        else:
            state["erp"].pop(change.entity_id, None)
        state["changed_ms"] = now_ms
        return Step(self.reevaluate(view, key, trigger, now_ms, state))

    def _copy(
        self,
        view: StateView,
        key: str,
        change: Change,
        trigger: Trigger,
        now_ms: int,
        many: bool = False,
    ) -> Step:
        entry = view.get(key) or {"rec": None, "many": {}, "seen": {}}
        if not accept(entry, change):
            return Step(duplicate=True)
        if many:
            if change.after is None:
                entry["many"].pop(change.entity_id, None)
            else:
                entry["many"][change.entity_id] = change.after
        else:
            entry["rec"] = change.after
        view.put(key, entry)
        return Step(self.reevaluate_dependents(view, key, trigger, now_ms))

    def _on_sow(
        self,
        view: StateView,
        sow_key: str,
        kind: str,
        change: Change,
        trigger: Trigger,
        now_ms: int,
    ) -> Step:
        sow_id = sow_key.removeprefix("s:")
        key = f"s/{sow_id}"
        state = view.get(key) or projects.new_sow_state(sow_id)
        if not accept(state, change):
            return Step(duplicate=True)
        if kind == "sow":
            state["sow"] = change.after
        else:
            refers = change.after is not None and change.after.get("sow_id") == sow_id
            state["refs"][change.entity_id] = refers
        state["changed_ms"] = now_ms
        return Step(self.reevaluate(view, key, trigger, now_ms, state))

    def owner_of(self, key: str, state: Record) -> str | None:
        # p/<project key> and s/<sow> (routed as `s:<sow>`): their join keys
        return f"project:{key[2:]}" if key.startswith("p/") else f"project:s:{key[2:]}"

    def entity_key(self, entity_type: str, entity_id: str, owner_key: str) -> str | None:
        if owner_key.startswith("s:"):
            return f"s/{owner_key[2:]}"
        return f"p/{owner_key}"

    def reevaluate(
        self, view: StateView, key: str, trigger: Trigger, now_ms: int, state: Record | None = None
    ) -> list[Emit]:
        state = state if state is not None else view.get(key)
        if state is None:
            return []
        retention = self.config.retention_ms
        if key.startswith("s/"):
            evaluation = projects.evaluate_sow(state, state.get("sow"), self.timing(now_ms))
            gone = state.get("sow") is None and not any(state["refs"].values())
            purge_at = state.get("changed_ms", 0) + retention if gone else None
            return self.settle(view, key, state, evaluation, trigger, now_ms, set(), purge_at)
        refs: set[str] = set()
        facts = projects.ProjectFacts()
        psa = state["psa"]
        if psa is not None:
            refs.add(f"ca/{psa['crm_account_id']}")
            account = view.get(f"ca/{psa['crm_account_id']}")
            facts.customers = list(account["many"].values()) if account else []
            if psa.get("sow_id"):
                refs.add(f"so/{psa['sow_id']}")
                sow = view.get(f"so/{psa['sow_id']}")
                facts.sow = sow["rec"] if sow else None
        evaluation = projects.evaluate(state, facts, self.timing(now_ms))
        gone = psa is None and not state["erp"]
        purge_at = state.get("changed_ms", 0) + retention if gone else None

        def golden(state: Record) -> list[Emit]:
            return self.golden(state, GOLDEN, state["id"], projects.golden(state), trigger)

        return self.settle(view, key, state, evaluation, trigger, now_ms, refs, purge_at, golden)
