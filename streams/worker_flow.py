"""The worker join: HR workers, ERP employees and ERP cost centers, per worker_id.

Co-partitioning (chosen on purpose): HR workers and ERP employees are
re-keyed by the ingest agents to the join key (HR `worker_id`; `erp:<id>` for an
ERP employee with no worker_id) on one internal topic, so every record for a
worker lands in one partition and one worker process. Cost centers are small
reference data: the ingest agent *broadcasts* each change to every partition
of that topic, so each partition keeps its own copy (like a global table) and
re-evaluates the workers it owns that depend on it. Time-driven rules (orphan
grace, dependency timeout) run on `tick` messages sent to the partitions a
worker owns.

Arrival order: re-keying merges several source topics, so two runs over the
same input can interleave them differently. With a reorder window W > 0,
changes wait in a persisted buffer (`q/<source ts>/...`) and are applied in
source commit-time order: when a buffered change has waited W, it is
released together with every buffered change of an earlier source time.
Changes of different topics that reach a
partition less than W apart are therefore always applied in source-time
order, which makes replays reproduce the same decisions and command IDs.
W = 0 applies changes as they come (least latency).

`WorkerFlow.process` is pure apart from its `StateView`: no Kafka, no clock.
State keys in a partition: `w/<join key>` worker state, `cc/<id>` cost center
copy with its dependents, `deadlines` due times of time-driven rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pssync.streams.changes import Change
from pssync.streams.findings import (
    Trigger,
    digest,
    iso,
    issue_commands,
    settle_findings,
)
from pssync.streams.outputs import Emit
from pssync.streams.rules import workers
from pssync.tables.view import StateView

Record = dict[str, Any]

GOLDEN_TOPIC = "reconciled.worker"


@dataclass(frozen=True, slots=True)
class FlowConfig:
    orphan_grace_ms: int
    dependency_timeout_ms: int
    reorder_window_ms: int = 0


class WorkerFlow:
    """Applies worker-keyed messages of one partition to state; returns what to emit."""

    def __init__(self, config: FlowConfig) -> None:
        self.config = config
        self.duplicates = 0
        # messages whose processing raised, with the error; the agent dead-letters them
        self.failures: list[tuple[Record, Exception]] = []

    def process(self, view: StateView, messages: list[Record], now_ms: int) -> list[Emit]:
        emits: list[Emit] = []
        ticks = []
        buffered = self.config.reorder_window_ms > 0
        for message in messages:
            if message["kind"] == "tick":
                ticks.append(message)
            elif buffered:
                self._enqueue(view, message, now_ms)
            else:
                emits += self._apply(view, message, now_ms)
        if buffered:
            for message in self._release(view, now_ms):
                emits += self._apply(view, message, now_ms)
        for tick in ticks:
            emits += self._on_tick(view, int(tick["now_ms"]))
        return emits

    def _apply(self, view: StateView, message: Record, now_ms: int) -> list[Emit]:
        try:
            change = Change.from_json(message["change"])
            if message["kind"] == "cost_center":
                return self._on_cost_center(view, change, now_ms)
            return self._on_change(view, message["key"], change, now_ms)
        except Exception as exc:  # a rule bug must not stop the partition: dead-letter it
            self.failures.append((message, exc))
            return []

    # -- reorder buffer ---------------------------------------------------
    @staticmethod
    def _enqueue(view: StateView, message: Record, now_ms: int) -> None:
        src = message["change"]["source"]
        ts = src.get("ts_ms") or now_ms
        position = src["lsn"] if src.get("lsn") is not None else f"o{src['offset']}"
        slot = f"q/{ts:015d}/{src['topic']}/{position}/{src['key']}/{message.get('key', '')}"
        view.put(slot, {"message": message, "arrived_ms": now_ms})

    def _release(self, view: StateView, now_ms: int) -> list[Record]:
        waiting = view.scan("q/")
        window = self.config.reorder_window_ms
        ripe = [slot for slot, entry in waiting if entry["arrived_ms"] + window <= now_ms]
        if not ripe:
            return []
        last = max(ripe)
        released = []
        for slot, entry in waiting:
            if slot > last:
                break
            released.append(entry["message"])
            view.put(slot, None)
        return released

    def buffered(self, view: StateView) -> int:
        return len(view.scan("q/"))

    # -- handlers ---------------------------------------------------------
    def _on_change(self, view: StateView, key: str, change: Change, now_ms: int) -> list[Emit]:
        state = view.get_for_update(f"w/{key}", workers.new_state(key))
        if not workers.apply_change(state, change):
            self.duplicates += 1
            return []
        trigger = Trigger(change.correlation_id, [change.source], change.source.ts_ms)
        return self._evaluate(view, key, state, trigger, now_ms)

    def _on_cost_center(self, view: StateView, change: Change, now_ms: int) -> list[Emit]:
        cc_id = change.entity_id
        entry = view.get_for_update(f"cc/{cc_id}", {"rec": None, "seen": {}, "dependents": []})
        if not workers.is_newer(entry["seen"], change.source):
            self.duplicates += 1
            return []
        workers.remember(entry["seen"], change.source)
        entry["rec"] = change.after
        trigger = Trigger(change.correlation_id, [change.source], change.source.ts_ms)
        emits: list[Emit] = []
        for key in list(entry["dependents"]):
            state = view.get(f"w/{key}")
            if state is None:
                continue
            view.put(f"w/{key}", state)
            emits += self._evaluate(view, key, state, trigger, now_ms)
        return emits

    def _on_tick(self, view: StateView, now_ms: int) -> list[Emit]:
        deadlines: dict[str, int] = view.get("deadlines") or {}
        emits: list[Emit] = []
        due = sorted(k for k, t in deadlines.items() if t <= now_ms)
        for key in due:
            state = view.get(f"w/{key}")
            if state is None:
                continue
            view.put(f"w/{key}", state)
            trigger = Trigger(f"tick:{key}:{now_ms}")
            emits += self._evaluate(view, key, state, trigger, now_ms)
        return emits

    # -- evaluation -------------------------------------------------------
    def _evaluate(
        self, view: StateView, key: str, state: Record, trigger: Trigger, now_ms: int
    ) -> list[Emit]:
        cost_centers = self._cost_centers_for(view, key, state)
        timing = workers.Timing(
            now_ms, self.config.orphan_grace_ms, self.config.dependency_timeout_ms
        )
        evaluation = workers.evaluate(state, cost_centers, timing)
        emits = settle_findings(state["open"], evaluation.findings, now_ms, trigger)
        emits += issue_commands(state["issued"], evaluation.commands, now_ms, trigger)
        emits += self._golden(state, now_ms, trigger)
        self._set_deadline(view, key, evaluation.deadline_ms)
        return emits

    def _cost_centers_for(self, view: StateView, key: str, state: Record) -> dict[str, Record]:
        """The HR worker's cost center (if known), registering this key as a dependent."""
        hr = state["hr"]
        cc_id = hr.get("cost_center") if hr else None
        previous = state.get("cc_ref")
        if previous and previous != cc_id:
            old = view.get(f"cc/{previous}")
            if old is not None and key in old["dependents"]:
                old["dependents"].remove(key)
                view.put(f"cc/{previous}", old)
        state["cc_ref"] = cc_id
        if not cc_id:
            return {}
        entry = view.get(f"cc/{cc_id}")
        if entry is None or key not in entry["dependents"]:
            entry = view.get_for_update(f"cc/{cc_id}", {"rec": None, "seen": {}, "dependents": []})
            entry["dependents"].append(key)
        return {cc_id: entry["rec"]} if entry["rec"] is not None else {}

    @staticmethod
    def _set_deadline(view: StateView, key: str, due_ms: int | None) -> None:
        deadlines: dict[str, int] = view.get("deadlines") or {}
        if deadlines.get(key) == due_ms:
            return
        deadlines = dict(deadlines)
        if due_ms is None:
            deadlines.pop(key, None)
        else:
            deadlines[key] = due_ms
        view.put("deadlines", deadlines)

    @staticmethod
    def _golden(state: Record, now_ms: int, trigger: Trigger) -> list[Emit]:
        result = workers.golden(state, list(state["open"]))
        if result is None:
            if state.get("golden") and state["golden"] != "tombstone":
                worker_id = state["golden_key"]
                state["golden"] = "tombstone"
                return [
                    Emit(
                        GOLDEN_TOPIC,
                        worker_id,
                        None,
                        trigger.correlation_id,
                        "golden",
                        trigger.source_ts_ms,
                    )
                ]
            return []
        worker_id, record = result
        fingerprint = digest(record)
        if state.get("golden") == fingerprint:
            return []
        state["golden"] = fingerprint
        state["golden_key"] = worker_id
        record["updated_at"] = iso(now_ms)
        return [
            Emit(
                GOLDEN_TOPIC,
                worker_id,
                record,
                trigger.correlation_id,
                "golden",
                trigger.source_ts_ms,
            )
        ]


def tick_message(now_ms: int) -> Record:
    """A tick: evaluate time-driven rules of this partition as of `now_ms`."""
    return {"kind": "tick", "now_ms": now_ms}
