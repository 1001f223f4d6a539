"""The machinery a keyed flow shares: reorder buffer, ticks, deadlines, dependents, settling.

A flow owns the state of one partition of an internal keyed topic. Entities
live under state keys (`w/W-1`, `te/T-9`, `p/P-3`, ...); reference data copies
(`cc/`, `pe/`, `pr/`, ...) list the entities that depend on them under
`dep/<reference key>`, so a reference change re-evaluates exactly those.

Arrival order: re-keying merges several source topics, so two runs over the
same input can interleave them differently. With a reorder window W > 0,
changes wait in a persisted buffer (`q/<source ts>/...`) and are applied in
source commit-time order: when a buffered change has waited W, it is released
together with every buffered change of an earlier source time. Changes that
reach a partition less than W apart are therefore applied in source-time
order, which makes replays reproduce the same decisions and command IDs.
W = 0 applies changes as they come (least latency). The buffer is state: it
survives a restart like any other key.

Time: `tick` messages carry the clock; entities whose deadline (a grace, an
SLA, a dependency timeout) has come are evaluated again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pssync.streams.findings import Trigger, digest, iso, issue_commands, settle_findings
from pssync.streams.outputs import Emit
from pssync.streams.rules.common import Evaluation, Timing
from pssync.tables.view import StateView

Record = dict[str, Any]


@dataclass(frozen=True, slots=True)
class FlowConfig:
    orphan_grace_ms: int
    dependency_timeout_ms: int
    reorder_window_ms: int = 0
    project_setup_sla_ms: int = 86_400_000


def tick_message(now_ms: int) -> Record:
    """A tick: evaluate time-driven rules of this partition as of `now_ms`."""
    return {"kind": "tick", "now_ms": now_ms}


class KeyedFlow:
    """Base of the worker and project flows; subclasses apply messages and evaluate."""

    def __init__(self, config: FlowConfig) -> None:
        self.config = config
        self.duplicates = 0
        # messages whose processing raised, with the error; the agent dead-letters them
        self.failures: list[tuple[Record, Exception]] = []

    def timing(self, now_ms: int) -> Timing:
        c = self.config
        return Timing(now_ms, c.orphan_grace_ms, c.dependency_timeout_ms, c.project_setup_sla_ms)

    # -- to implement -----------------------------------------------------
    def apply(self, view: StateView, message: Record, now_ms: int) -> list[Emit]:
        raise NotImplementedError

    def reevaluate(self, view: StateView, key: str, trigger: Trigger, now_ms: int) -> list[Emit]:
        raise NotImplementedError

    # -- the batch --------------------------------------------------------
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
                emits += self._guarded(view, message, now_ms)
        if buffered:
            for message in self._release(view, now_ms):
                emits += self._guarded(view, message, now_ms)
        for tick in ticks:
            emits += self._on_tick(view, int(tick["now_ms"]))
        return emits

    def _guarded(self, view: StateView, message: Record, now_ms: int) -> list[Emit]:
        try:
            return self.apply(view, message, now_ms)
        except Exception as exc:  # a rule bug must not stop the partition: dead-letter it
            self.failures.append((message, exc))
            return []

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

    def _on_tick(self, view: StateView, now_ms: int) -> list[Emit]:
        deadlines: dict[str, int] = view.get("deadlines") or {}
        emits: list[Emit] = []
        for key in sorted(k for k, t in deadlines.items() if t <= now_ms):
            emits += self.reevaluate(view, key, Trigger(f"tick:{key}:{now_ms}"), now_ms)
        return emits

    # -- shared steps -----------------------------------------------------
    def settle(
        self,
        view: StateView,
        key: str,
        state: Record,
        evaluation: Evaluation,
        trigger: Trigger,
        now_ms: int,
    ) -> list[Emit]:
        """Emit what changed for one entity, remember its deadline, mark it written."""
        view.put(key, state)
        open_before = _open_summary(state["open"])
        emits = settle_findings(state["open"], evaluation.findings, now_ms, trigger)
        emits += issue_commands(state["issued"], evaluation.commands, now_ms, trigger)
        self.set_deadline(view, key, evaluation.deadline_ms)
        _count(view, OPEN_INDEX, open_before, _open_summary(state["open"]))
        waiting = sorted({d.split(":", 1)[0] for d in evaluation.waiting_for})
        _count(view, PARKED_INDEX, state.get("waiting", []), waiting)
        state["waiting"] = waiting
        return emits

    @staticmethod
    def set_deadline(view: StateView, key: str, due_ms: int | None) -> None:
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
    def depend(view: StateView, reference: str, key: str) -> None:
        """Record that entity `key` must be re-evaluated when `reference` changes."""
        dependents: list[str] = view.get(f"dep/{reference}") or []
        if key not in dependents:
            view.put(f"dep/{reference}", [*dependents, key])

    @staticmethod
    def undepend(view: StateView, reference: str, key: str) -> None:
        dependents: list[str] = view.get(f"dep/{reference}") or []
        if key in dependents:
            view.put(f"dep/{reference}", [k for k in dependents if k != key])

    @staticmethod
    def dependents(view: StateView, reference: str) -> list[str]:
        return list(view.get(f"dep/{reference}") or [])

    def reevaluate_dependents(
        self, view: StateView, reference: str, trigger: Trigger, now_ms: int
    ) -> list[Emit]:
        """Evaluate again every entity that depends on `reference`, which just changed."""
        emits: list[Emit] = []
        for dependent in self.dependents(view, reference):
            emits += self.reevaluate(view, dependent, trigger, now_ms)
        return emits

    @staticmethod
    def golden(
        state: Record, topic: str, key: str, record: Record | None, now_ms: int, trigger: Trigger
    ) -> list[Emit]:
        """A golden record if it changed since the last one (a tombstone when it went away)."""
        if record is None:
            if state.get("golden") and state["golden"] != "tombstone":
                state["golden"] = "tombstone"
                return [
                    Emit(
                        topic,
                        state.get("golden_key", key),
                        None,
                        trigger.correlation_id,
                        "golden",
                        trigger.source_ts_ms,
                    )
                ]
            return []
        fingerprint = digest(record)
        if state.get("golden") == fingerprint:
            return []
        state["golden"] = fingerprint
        state["golden_key"] = key
        return [
            Emit(
                topic,
                key,
                record | {"updated_at": iso(now_ms)},
                trigger.correlation_id,
                "golden",
                trigger.source_ts_ms,
            )
        ]


# Per-partition counts kept in state, for the gauges each worker reports about the
# partitions it owns (read at scrape time; they move with the partition on rebalance).
OPEN_INDEX = "idx/open"  # "alert|RULE|SEVERITY" or "exception|RULE|" -> open findings
PARKED_INDEX = "idx/parked"  # dependency kind -> entities waiting on one


def _open_summary(open_findings: dict[str, Record]) -> list[str]:
    return sorted(
        f"{slot.split('|')[0]}|{slot.split('|')[1]}|{record.get('severity') or ''}"
        for slot, record in open_findings.items()
    )


def _count(view: StateView, index: str, before: list[str], after: list[str]) -> None:
    if before == after:
        return
    counts: dict[str, int] = dict(view.get(index) or {})
    for name in before:
        counts[name] = counts.get(name, 0) - 1
    for name in after:
        counts[name] = counts.get(name, 0) + 1
    view.put(index, {k: v for k, v in counts.items() if v > 0})


def change_trigger(message: Record) -> Trigger:
    from pssync.streams.changes import SourceRef

    change = message["change"]
    ref = SourceRef.from_json(change["source"])
    return Trigger(change["correlation_id"], [ref], ref.ts_ms)
