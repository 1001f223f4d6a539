"""Event-time alignment: when a keyed partition may apply a change, and in what order.

A keyed partition receives re-keyed changes from every source partition that
can be joined with it (11 CDC topics x their partitions), interleaved however
the ingest agents happened to read them. Deciding on arrival would make the
outputs depend on reading speed: in a backlog the HR topic may be read minutes
of source time ahead of the ERP topic, and "no ERP employee yet" becomes a
duplicate UPSERT_EMPLOYEE. So a keyed partition applies a change only once
every source it can be joined with has been read past the change's source time
(Kafka Streams' stream-time synchronisation, `max.task.idle.ms`; Flink's
watermarks with idleness):

- **Watermarks.** Each ingest agent reports, per source partition, the highest
  event time it has read and forwarded (`messages.Watermark`), after every
  batch and on a timer. A report is sent after the changes it covers, on the
  same producer, so a keyed partition that reads the report has read them.
- **Idle sources.** A source partition that is caught up (nothing left to read)
  and has had no new record for `PSSYNC_SOURCE_IDLE_S` is idle and stops
  holding the others back. An idle report counts only while it is fresh
  (refreshed every tick, expiring after `idle_ttl_ms`), so a source whose worker
  died holds stream time where it was until its new owner reports.
- **Aligned time** `A` = the lowest event time among the sources that are not
  idle; while every source is idle it moves with the wall clock from the highest
  event time read (from the snapshot point only after `PSSYNC_SNAPSHOT_IDLE_S`:
  a snapshot's tables arrive one after another, with every source idle in
  between). It never goes back. A change (or timer) is applied once its time is
  below `A`.
- **Total order.** Released changes are applied in (event time, topic rank,
  source position, entity, route, the new owner's copy first) order
  (`buffer_slot`); a timer due at `t` runs after the changes at `t`. The
  topic rank is dependency order (reference data, then the ERP, PSA projects,
  the CRM, HR and the rest of the PSA), which decides ties: rows of one source
  transaction, and snapshots.
- **Snapshots.** Every Debezium snapshot read (`op` "r") has event time
  `SNAPSHOT_POINT` (0): a snapshot is the state before any streamed change, one
  point in time for every source, ordered by rank. Giving each source its own
  snapshot time would order one platform's whole snapshot before another's and
  bring back the day-one duplicates. A snapshot is applied once some source has
  streamed past it, or every source has been idle for `PSSYNC_SNAPSHOT_IDLE_S`;
  a source whose snapshot comes later still (a connector started after the
  others streamed on) is late.

Guarantee: with no late record, the order in which changes and timers are
applied, hence every decision and ID, is a function of the input alone. A record
is late if it arrives after `A` passed its event time: a source partition that
was idle receives a change older than the newest event time read elsewhere plus
its wall-clock idle time (source clocks or pipelines skewed by more than
`PSSYNC_SOURCE_IDLE_S`), or a redelivery. Late records are applied at once,
counted (`pssync_late_changes_total`), and their duplicates are recognised as
usual. An idle partition that gets a record says so before decoding it
(`SourceProgress.woken`), which leaves a window of the pipeline's own latency
(milliseconds) in which a record there can still be late. With real sources,
event time runs with the wall clock and that window is milliseconds of event
time; a simulator that streams days in minutes multiplies it by its speed-up,
so a test streaming one uses timers far beyond that.

Latency in steady state: a change waits until every active source has moved
past it, or has gone idle: at most about `PSSYNC_SOURCE_IDLE_S` plus one batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pssync.streams.changes import SNAPSHOT_POINT
from pssync.streams.messages import Routed, Watermark

__all__ = ["SNAPSHOT_POINT", "Alignment", "SourceState", "buffer_slot", "slot_time", "time_key"]

# Dependency order: what a rule follows comes first, so a consistent snapshot never
# shows a half-applied state: ERP employees before HR workers, ERP projects before PSA
# projects. PSA projects come before SOWs: a project waiting for its SOW only parks,
# but a signed SOW without its projects would be past its setup SLA at once.
TOPIC_RANK: dict[str, int] = {
    "cdc.erp.cost_center": 0,
    "cdc.erp.period": 1,
    "cdc.erp.customer": 2,
    "cdc.erp.cost_rate": 3,
    "cdc.erp.employee": 4,
    "cdc.erp.project": 5,
    "cdc.psa.project": 6,
    "cdc.crm.sow": 7,
    "cdc.hr.worker": 8,
    "cdc.psa.assignment": 9,
    "cdc.psa.time_entry": 10,
}
OTHER_RANK = 50
TIME_DIGITS = 15
MAX_TIME = 10**TIME_DIGITS - 1


def time_key(ms: int) -> str:
    """A time as a fixed-width string that sorts like the number (clamped to 0..MAX_TIME)."""
    return f"{min(max(ms, 0), MAX_TIME):0{TIME_DIGITS}d}"


def buffer_slot(routed: Routed) -> str:
    """The state key a routed change waits under: its place in the total order."""
    change = routed.change
    src = change.source
    # the source position, then the Kafka one: a redelivery (same position) sorts after
    # the first delivery, which is applied first whether or not the two were read together
    # (with no source position, the Kafka one: stable for one input, not across re-imports)
    offset = f"{src.partition:06d}.{max(src.offset, 0):020d}"
    has_lsn = src.lsn is not None and src.lsn >= 0
    position = f"l{src.lsn:020d}/{offset}" if has_lsn else f"o{offset}"
    rank = TOPIC_RANK.get(change.topic, OTHER_RANK)
    # the new owner's copy of a change before the previous owner's (`leaving`)
    return (
        f"q/{time_key(change.event_ts)}/{rank:02d}/{position}/{change.topic}/"
        f"{change.entity_id}/{routed.kind}/{int(routed.leaving)}/{routed.key or ''}"
    )


def slot_time(slot: str) -> int:
    """The event time of a buffer slot or deadline key (`q/<time>/...`, `dl/<time>/...`)."""
    return int(slot.split("/", 2)[1])


@dataclass(slots=True)
class SourceState:
    """What a keyed partition knows of one source partition."""

    ts: int | None = None  # highest event time read (durable)
    idle_since: int | None = None  # wall ms it went idle (None: it has records to read)
    sent_ms: int = 0  # wall ms of the last report (an idle report expires)


class Alignment:
    """The aligned stream time of one keyed partition, from its sources' watermarks.

    Pure: the wall clock is passed in. `expected` names every source partition the
    keyed topic can receive changes from; one that has not reported holds time back.
    """

    def __init__(
        self, expected: Iterable[tuple[str, int]], idle_ttl_ms: int, snapshot_idle_ms: int = 0
    ) -> None:
        self.idle_ttl_ms = idle_ttl_ms
        self.snapshot_idle_ms = snapshot_idle_ms
        self.sources: dict[tuple[str, int], SourceState] = {
            source: SourceState() for source in expected
        }
        self.reported: set[tuple[str, int]] = set()

    def restore(self, source: tuple[str, int], ts: int | None) -> None:
        """A durable event time from state (after a restart: not idle until reported)."""
        self.sources.setdefault(source, SourceState()).ts = ts

    def observe(self, wm: Watermark) -> bool:
        """Take a report; True if the durable event time moved (to be persisted)."""
        source = (wm.source, wm.partition)
        state = self.sources.setdefault(source, SourceState())
        self.reported.add(source)
        state.idle_since = wm.idle_since
        state.sent_ms = max(state.sent_ms, wm.sent_ms)
        if wm.ts is not None and (state.ts is None or wm.ts > state.ts):
            state.ts = wm.ts
            return True
        return False

    def is_idle(self, state: SourceState, now_ms: int) -> bool:
        return state.idle_since is not None and now_ms - state.sent_ms <= self.idle_ttl_ms

    def aligned(self, now_ms: int) -> int | None:
        """Event time below which every source has been read; None while unknown."""
        active = [s for s in self.sources.values() if not self.is_idle(s, now_ms)]
        if active:
            if any(s.ts is None for s in active):
                return None
            return min(s.ts for s in active if s.ts is not None)
        furthest = [s.ts for s in self.sources.values() if s.ts is not None]
        if not furthest:
            return None
        since = max(s.idle_since for s in self.sources.values() if s.idle_since is not None)
        # nothing streamed yet, only snapshots: the sources may be between two tables of
        # a snapshot (or two connectors' snapshots), so the clock waits longer to start
        settle = self.snapshot_idle_ms if max(furthest) <= SNAPSHOT_POINT else 0
        return max(furthest) + max(0, now_ms - since - settle)

    def holding(self, now_ms: int) -> list[str]:
        """The source partitions that hold stream time back (for /ready and logs)."""
        active = [
            (name, s) for name, s in sorted(self.sources.items()) if not self.is_idle(s, now_ms)
        ]
        if not active:
            return []
        unknown = [f"{t}[{p}]" for (t, p), s in active if s.ts is None]
        if unknown:
            return unknown
        low = min(s.ts for _, s in active if s.ts is not None)
        return [f"{t}[{p}]" for (t, p), s in active if s.ts == low]
