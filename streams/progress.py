"""How far each source partition has been read: the ingest side of event-time alignment.

For every CDC partition this worker consumes, `SourceProgress` keeps the
highest event time forwarded to the keyed topics, the next offset to process,
and the partition's end (its high watermark, probed from the broker). From
these it makes the `Watermark` reports the keyed flows align on
(`streams.alignment`):

- when a batch arrives for a partition reported idle: "not idle", at once;
- after each ingest batch, for the partitions in it (not idle, new event time);
- on the worker's timer: when a partition turns idle — caught up with its end
  and without a new record for `idle_ms` — or stops being idle; and, while
  idle, again every `heartbeat_ms`, because an idle report expires (a worker
  that dies must not leave its partitions idle in the keyed flows' eyes);
- on revoke: "not idle", so the partition holds stream time until its new owner
  reports.

A report covers only what was forwarded before it: the ingest agent records
the event time right after producing a batch's changes, with no await between,
on the same producer, so a keyed partition reads the changes before the
report. Pure: the wall clock is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pssync.streams.messages import Watermark

Partition = tuple[str, int]  # (logical topic, partition)


@dataclass(slots=True)
class PartitionProgress:
    ts: int | None = None  # highest event time forwarded
    position: int | None = None  # next offset to process
    processed_here: bool = False  # False: `position` is the group's committed offset
    end: int | None = None  # the partition's high watermark, as last probed
    active_ms: int = 0  # wall time it last had something to read
    reported: tuple[int | None, int | None] | None = None  # (ts, idle_since) last sent
    sent_ms: int = 0


class SourceProgress:
    def __init__(self, idle_ms: int, heartbeat_ms: int) -> None:
        self.idle_ms = idle_ms
        self.heartbeat_ms = heartbeat_ms
        self.partitions: dict[Partition, PartitionProgress] = {}

    def assign(self, partitions: Iterable[Partition], wall_ms: int) -> None:
        for partition in partitions:
            self.partitions.setdefault(partition, PartitionProgress(active_ms=wall_ms))

    def revoke(self, partitions: Iterable[Partition], wall_ms: int) -> list[Watermark]:
        """Forget revoked partitions; the reports that say they are no longer idle here."""
        out = []
        for partition in partitions:
            progress = self.partitions.pop(partition, None)
            if progress is not None and progress.reported and progress.reported[1] is not None:
                out.append(Watermark(partition[0], partition[1], progress.ts, None, wall_ms))
        return out

    def woken(self, partition: Partition, wall_ms: int) -> Watermark | None:
        """Records of `partition` came in: if it was reported idle, the report that it is
        not, to send at once (before the records are decoded), so the keyed flows stop
        treating it as idle as early as possible."""
        progress = self.partitions.setdefault(partition, PartitionProgress())
        progress.active_ms = wall_ms
        if progress.reported is not None and progress.reported[1] is not None:
            return self._report(partition, progress, None, wall_ms)
        return None

    def forwarded(
        self, partition: Partition, event_ts: Iterable[int], wall_ms: int
    ) -> Watermark | None:
        """A batch of changes of `partition` was produced: the report to send after it."""
        progress = self.partitions.setdefault(partition, PartitionProgress())
        progress.active_ms = wall_ms
        top = max(event_ts, default=None)
        if top is not None and (progress.ts is None or top > progress.ts):
            progress.ts = top
        return self._report(partition, progress, None, wall_ms)

    def processed(self, partition: Partition, next_offset: int) -> None:
        progress = self.partitions.setdefault(partition, PartitionProgress())
        progress.position = next_offset
        progress.processed_here = True

    def probed(self, partition: Partition, end: int, committed: int | None, wall_ms: int) -> None:
        """The broker's answer: the partition's end, and (until this process processes a
        record of it) where the group stands on it (None: not known this time)."""
        progress = self.partitions.get(partition)
        if progress is None:
            return
        progress.end = end
        if not progress.processed_here and committed is not None:
            progress.position = committed
        if progress.position is None or progress.position < end:
            progress.active_ms = wall_ms

    def idle_since(self, progress: PartitionProgress, wall_ms: int) -> int | None:
        caught_up = (
            progress.position is not None
            and progress.end is not None
            and progress.position >= progress.end
        )
        if caught_up and wall_ms - progress.active_ms >= self.idle_ms:
            return progress.active_ms + self.idle_ms
        return None

    def due(self, wall_ms: int) -> list[Watermark]:
        """Reports the timer should send now: changes of idleness, and heartbeats."""
        out = []
        for partition, progress in sorted(self.partitions.items()):
            idle = self.idle_since(progress, wall_ms)
            heartbeat = idle is not None and wall_ms - progress.sent_ms >= self.heartbeat_ms
            changed = progress.reported is None or (progress.reported[1] is None) != (idle is None)
            if changed or heartbeat:
                out.append(self._report(partition, progress, idle, wall_ms))
        return out

    @staticmethod
    def _report(
        partition: Partition, progress: PartitionProgress, idle: int | None, wall_ms: int
    ) -> Watermark:
        progress.reported = (progress.ts, idle)
        progress.sent_ms = wall_ms
        return Watermark(partition[0], partition[1], progress.ts, idle, wall_ms)
