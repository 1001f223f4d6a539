"""The keyed flows' engine: buffer, align, release in order, timers, and isolation.

A keyed flow owns the state of one partition of an internal keyed topic. Per
batch (`process`) it:

1. buffers every routed change under its place in the total order
   (`q/<event time>/<rank>/<position>/...`, see `streams.alignment`) and takes
   the sources' watermarks;
2. computes the aligned time `A` (never going back) and releases, in order,
   every buffered change below `A` merged with every timer due below `A`
   (timers after the changes of their instant);
3. applies each released change, or fires each timer, inside a savepoint of the
   state view: a change or timer whose processing raises is rolled back, leaves
   no trace in state, and is returned as a `Failure` for the dead-letter topic;
   the partition carries on.

Guarantee: changes and timers are applied in one total order (event time, topic
rank, source position; a timer after the changes of its instant), so the same
input gives the same decisions and IDs however it was read, unless a record
arrives after `A` passed it (counted as late; see `streams.alignment`). Cost: in
steady state a change waits until every active source has moved past it or gone
idle, at most about `PSSYNC_SOURCE_IDLE_S` plus a batch; a batch applies at most
`max_release` changes and fires at most `max_timers` timers, so a released backlog
(or a jump of stream time) is worked off over several batches, in the same order.

What happened comes back as a `FlowResult` value (emits, failures, duplicates,
counts); nothing is left on `self` for the caller to read.

Time: each entity has at most one deadline (the earliest of its grace periods,
SLAs, dependency timeouts and retention), indexed by due time
(`dl/<due>/<key>`), so a batch reads only the timers that came due. Rules see
the partition's stream clock as `now`: the latest source commit time (for a
snapshot read, its read time) or due time among what was applied, never
going back. Timers count on it; a replay fires the same timers at the same
stream times, and a finding a timer opens takes its ID from the entity and the
due time. Records are stamped with the stream clock (`Trigger.at_ms`). A deadline
is always after the stream time it was set at (`settle` refuses one that is not: it
would fire again at once, for ever), so a timer that re-arms moves strictly forward.

Dependents: an entity that reads a reference (a cost center, a period, a
project, a worker) is indexed under `dep/<reference>/<entity>`; a change of the
reference re-evaluates exactly those (a prefix scan), and each entity keeps the
list of what it reads (`reads`) so the index follows it.

Retention: an entity with nothing pending (no open finding, nothing parked)
whose subclass names a purge time is deleted, with its index keys, once stream
time passes it; the changelog tombstones let compaction free it.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pssync.avro.contract import ACTIONS_TOPIC
from pssync.streams.actions import apply_action
from pssync.streams.alignment import Alignment, buffer_slot, slot_time, time_key
from pssync.streams.findings import Trigger, digest, iso, issue_commands, settle_findings
from pssync.streams.messages import Message, Routed, Watermark, Watermarks
from pssync.streams.outputs import Emit
from pssync.streams.rules.common import Evaluation, Timing
from pssync.tables.view import StateView

log = logging.getLogger(__name__)

Record = dict[str, Any]

CLOCK = "clock"


@dataclass(frozen=True, slots=True)
class FlowConfig:
    orphan_grace_ms: int
    dependency_timeout_ms: int
    project_setup_sla_ms: int = 86_400_000
    # how long what is finished stays in state after it finished (event time)
    retention_ms: int = 35 * 86_400_000
    # an idle source's report counts for this long (its worker refreshes it every tick)
    idle_ttl_ms: int = 5_000
    # with only snapshots read, every source idle this long before the clock starts
    snapshot_idle_ms: int = 60_000
    # every source partition this keyed topic can receive changes from
    sources: tuple[tuple[str, int], ...] = ()
    # changes applied per batch at most (what is left is applied by the next batch):
    # bounds a batch's memory when a backlog is released at once
    max_release: int = 20_000
    # timers fired per batch at most (the next batch goes on from the next one, in the
    # same order): bounds a batch when stream time jumps far and many timers come due
    max_timers: int = 20_000


@dataclass(slots=True)
class Failure:
    """A routed change or a timer whose processing raised (rolled back)."""

    error: Exception
    routed: Routed | None = None
    timer_key: str | None = None
    due_ms: int | None = None


@dataclass(slots=True)
class Step:
    """What applying one change did: its emits, or that it was a duplicate."""

    emits: list[Emit] = field(default_factory=list)
    duplicate: bool = False


@dataclass(slots=True)
class FlowResult:
    """What a batch did, for the agent to send and count."""

    emits: list[Emit] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    duplicates: int = 0
    buffered: int = 0  # routed changes received into the buffer
    released: int = 0  # changes applied
    late: int = 0  # changes (not redeliveries) applied after stream time had passed them
    timers: int = 0  # timers fired
    aligned_ms: int | None = None
    stream_ms: int | None = None
    holding: list[str] = field(default_factory=list)  # sources holding the aligned time


class DeadlineError(RuntimeError):
    """A rule asked for a deadline that is not after the stream time it evaluated at."""


def deadline_key(due_ms: int, key: str) -> str:
    return f"dl/{time_key(due_ms)}/{key}"


class KeyedFlow:
    """Base of the worker and project flows; subclasses apply changes and evaluate."""

    def __init__(self, config: FlowConfig) -> None:
        self.config = config
        self._alignments: dict[int, Alignment] = {}
        # the release loop's timers (due, key) and horizon, while it runs
        self._heap: list[tuple[int, str]] | None = None
        self._horizon = 0

    def timing(self, now_ms: int) -> Timing:
        c = self.config
        return Timing(now_ms, c.orphan_grace_ms, c.dependency_timeout_ms, c.project_setup_sla_ms)

    # -- to implement -----------------------------------------------------
    def apply(self, view: StateView, routed: Routed, now_ms: int) -> Step:
        raise NotImplementedError

    def owner_of(self, key: str, state: Record) -> str | None:
        """The exception `owner` of the entity at `key`: `<flow>:<join key>`."""
        return None

    def entity_key(self, entity_type: str, entity_id: str, owner_key: str) -> str | None:
        """The state key of an entity an action names (None: not this flow's)."""
        return None

    def reevaluate(self, view: StateView, key: str, trigger: Trigger, now_ms: int) -> list[Emit]:
        raise NotImplementedError

    # -- the batch --------------------------------------------------------
    def forget(self, partition: int) -> None:
        """The partition moved away: drop what was kept in memory about it."""
        self._alignments.pop(partition, None)

    def alignment(self, view: StateView, partition: int) -> Alignment:
        alignment = self._alignments.get(partition)
        if alignment is None:
            c = self.config
            alignment = Alignment(c.sources, c.idle_ttl_ms, c.snapshot_idle_ms)
            for key, ts in view.scan("wm/"):
                topic, _, number = key[3:].rpartition("/")
                alignment.restore((topic, int(number)), ts)
            self._alignments[partition] = alignment
        return alignment

    def process(
        self, view: StateView, partition: int, messages: list[Message], wall_ms: int
    ) -> FlowResult:
        """Buffer, align and release one batch of one partition (see the module doc)."""
        result = FlowResult()
        alignment = self.alignment(view, partition)
        for message in messages:
            if isinstance(message, Routed):
                if message.raw is not None:  # kept as read: no second encoding
                    view.insert_encoded(buffer_slot(message), message, message.raw)
                else:
                    view.insert(buffer_slot(message), message.to_json())
                result.buffered += 1
            elif isinstance(message, Watermark | Watermarks):
                for wm in message.items if isinstance(message, Watermarks) else (message,):
                    if alignment.observe(wm):
                        ts = alignment.sources[(wm.source, wm.partition)].ts
                        view.put(f"wm/{wm.source}/{wm.partition}", ts)
        clock: Record = dict(view.get(CLOCK) or {"aligned": None, "order": 0, "stream": None})
        aligned = alignment.aligned(wall_ms)
        if aligned is not None and (clock["aligned"] is None or aligned > clock["aligned"]):
            clock["aligned"] = aligned
        if clock["aligned"] is not None:
            self._release(view, clock, result)
        view.put(CLOCK, clock)
        result.aligned_ms, result.stream_ms = clock["aligned"], clock["stream"]
        result.holding = alignment.holding(wall_ms)
        return result

    def _release(self, view: StateView, clock: Record, result: FlowResult) -> None:
        horizon: int = clock["aligned"]
        end = time_key(horizon)
        ready = view.scan("q/", f"q/{end}", limit=self.config.max_release)
        # when the batch stops short, only timers due before the first change left run
        stop = slot_time(ready[-1][0]) + 1 if len(ready) == self.config.max_release else None
        # the deadlines due, read with their values (into the view's cache): the check below
        # that each is still set is then no point read per timer (a storm fires thousands)
        heap = [(slot_time(k), k.split("/", 2)[2]) for k, _ in view.scan("dl/", f"dl/{end}")]
        heapq.heapify(heap)
        self._heap, self._horizon = heap, horizon
        i = fired = 0
        try:
            while i < len(ready) or heap:
                at = slot_time(ready[i][0]) if i < len(ready) else None
                if at is None and stop is not None and heap and heap[0][0] >= stop - 1:
                    break  # changes at the same time may be left: the next batch goes on
                if heap and (at is None or heap[0][0] < at):
                    if fired >= self.config.max_timers:
                        # every change before this timer was applied, none after it: the
                        # next batch goes on from here (its deadline key is still there)
                        break
                    due, key = heapq.heappop(heap)
                    if view.get(deadline_key(due, key)) is None:
                        continue  # moved, or already fired
                    view.delete(deadline_key(due, key))
                    fired += 1
                    self._fire(view, key, due, clock, result)
                    continue
                slot, entry = ready[i]
                i += 1
                view.delete(slot)
                assert at is not None
                routed = entry if isinstance(entry, Routed) else Routed.from_json(entry)
                self._apply(view, routed, at, clock, result)
        finally:
            self._heap = None

    @staticmethod
    def _advance(clock: Record, order_ms: int, at_ms: int) -> int:
        """Move the order position and the stream clock; the clock's new value."""
        clock["order"] = max(clock.get("order") or 0, order_ms)
        stream = at_ms if clock["stream"] is None else max(clock["stream"], at_ms)
        clock["stream"] = stream
        return stream

    def _apply(
        self, view: StateView, routed: Routed, at: int, clock: Record, result: FlowResult
    ) -> None:
        late = at < (clock.get("order") or 0)
        source_ts = routed.change.source.ts_ms
        now = self._advance(clock, at, at if source_ts is None else max(at, source_ts))
        view.savepoint()
        try:
            if routed.change.topic == ACTIONS_TOPIC:  # a person's action (streams.actions)
                emitted, duplicate = apply_action(self, view, routed, now)
                step = Step(emitted, duplicate)
            else:
                step = self.apply(view, routed, now)
        except Exception as exc:  # a rule bug must not stop the partition: dead-letter it
            view.rollback()
            result.failures.append(Failure(exc, routed=routed))
            return
        view.release()
        result.released += 1
        result.duplicates += step.duplicate
        result.late += late and not step.duplicate  # a late redelivery is harmless
        result.emits += step.emits

    def _fire(self, view: StateView, key: str, due: int, clock: Record, result: FlowResult) -> None:
        now = self._advance(clock, due, due)
        trigger = Trigger.timer(key, due, now)
        view.savepoint()
        try:
            emits = self.reevaluate(view, key, trigger, now)
        except Exception as exc:
            view.rollback()
            result.failures.append(Failure(exc, timer_key=key, due_ms=due))
            return
        view.release()
        result.timers += 1
        result.emits += emits

    # -- deadlines and dependents ------------------------------------------
    def set_deadline(self, view: StateView, key: str, state: Record, due_ms: int | None) -> None:
        """Make `due_ms` the entity's one deadline (None: no timer)."""
        old = state.get("due")
        if old == due_ms and (due_ms is None or view.get(deadline_key(due_ms, key)) is not None):
            return
        if old is not None and old != due_ms:
            view.delete(deadline_key(old, key))
        if due_ms is not None:
            view.put(deadline_key(due_ms, key), 1)
            if self._heap is not None and due_ms < self._horizon:
                heapq.heappush(self._heap, (due_ms, key))
        state["due"] = due_ms

    @staticmethod
    def set_refs(view: StateView, key: str, state: Record, refs: set[str]) -> None:
        """Index `key` under each reference it read (and no longer under the others)."""
        old = set(state.get("reads") or ())
        if old == refs:
            return
        for ref in old - refs:
            view.delete(f"dep/{ref}/{key}")
        for ref in refs - old:
            view.put(f"dep/{ref}/{key}", 1)
        state["reads"] = sorted(refs)

    @staticmethod
    def dependents(view: StateView, reference: str) -> list[str]:
        prefix = f"dep/{reference}/"
        return [k[len(prefix) :] for k in view.keys(prefix)]

    def reevaluate_dependents(
        self, view: StateView, reference: str, trigger: Trigger, now_ms: int
    ) -> list[Emit]:
        """Evaluate again every entity that reads `reference`, which just changed."""
        emits: list[Emit] = []
        for dependent in self.dependents(view, reference):
            emits += self.reevaluate(view, dependent, trigger, now_ms)
        return emits

    def purge(self, view: StateView, key: str, state: Record) -> None:
        """Forget a finished entity: its state, its deadline and its index keys."""
        if state.get("due") is not None:
            view.delete(deadline_key(state["due"], key))
        for ref in state.get("reads") or ():
            view.delete(f"dep/{ref}/{key}")
        view.delete(key)

    # -- settling one entity -----------------------------------------------
    def settle(
        self,
        view: StateView,
        key: str,
        state: Record,
        evaluation: Evaluation,
        trigger: Trigger,
        now_ms: int,
        refs: set[str],
        purge_at: int | None = None,
        golden: Callable[[Record], list[Emit]] | None = None,
    ) -> list[Emit]:
        """Emit what changed for one entity (findings, commands, then `golden(state)`);
        keep its deadline, references and counts; forget it once nothing is pending
        and `purge_at` has passed."""
        open_before = _open_summary(state["open"])
        ops = state.get("ops")
        owner = self.owner_of(key, state)
        emits = settle_findings(state["open"], evaluation.findings, trigger, owner, ops)
        if ops is not None and not ops:
            del state["ops"]
        commands = issue_commands(state["issued"], evaluation.commands, trigger)
        if commands:
            recent = state.setdefault("recent", [])
            recent += [_command_summary(e) for e in commands]
            del recent[:-RECENT_COMMANDS]
        emits += commands
        if golden is not None:
            emits += golden(state)
        _count(view, OPEN_INDEX, open_before, _open_summary(state["open"]))
        waiting = sorted({d.split(":", 1)[0] for d in evaluation.waiting_for})
        _count(view, PARKED_INDEX, state.get("waiting", []), waiting)
        state["waiting"] = waiting
        if purge_at is not None and not state["open"] and not waiting:
            if now_ms >= purge_at:
                self.purge(view, key, state)
                return emits
        else:
            purge_at = None
        due = evaluation.deadline_ms
        if due is not None and due <= now_ms:
            # a timer due at or before now would fire again at once, for ever (a rule bug):
            # refused, so the change or timer is dead-lettered instead of spinning
            raise DeadlineError(f"{key}: deadline {due} is not after stream time {now_ms}")
        if purge_at is not None:
            due = purge_at if due is None else min(due, purge_at)
        self.set_deadline(view, key, state, due)
        self.set_refs(view, key, state, refs)
        view.put(key, state)
        return emits

    @staticmethod
    def golden(
        state: Record, topic: str, key: str, record: Record | None, trigger: Trigger
    ) -> list[Emit]:
        """A golden record if it changed since the last one (a tombstone when it went away);
        it marks `state`, so call it where `settle` asks (its `golden` argument)."""
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
                record | {"updated_at": iso(trigger.at_ms)},
                trigger.correlation_id,
                "golden",
                trigger.source_ts_ms,
            )
        ]


# the last commands an entity issued, kept for the entity lookup (`streams.lookup`)
RECENT_COMMANDS = 5


def _command_summary(emit: Emit) -> Record:
    value = emit.value or {}
    payload = value.get("payload") or {}
    summary = {k: value.get(k) for k in ("command_id", "type", "rule", "issued_at")}
    return summary | {"topic": emit.topic, "period_id": payload.get("period_id")}


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


def change_trigger(routed: Routed, now_ms: int) -> Trigger:
    """The trigger of a routed change applied at stream time `now_ms`."""
    change = routed.change
    ref = change.source
    return Trigger(change.correlation_id, [ref], ref.ts_ms, now_ms)
