"""What the agents of one worker share, wired together.

A `Runtime` holds one of each concern, each in its own module:
`decoder` (bytes -> changes or dead letters, `streams.decode`), `emitter`
(outputs out and the batch commit, `streams.commit`), `restorer` (state
recovery, `tables.restore`), `sources` (how far each CDC partition has been
read, `streams.progress`), the state tables, and the metrics with the gauges
read from the partitions this worker owns. The broker probe (`probe`) runs
off the event loop, on the worker's timer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from pssync.avro.codec import Codec
from pssync.connectors.kafka import OutputProducer, admin, client_config, read_partition
from pssync.settings import Settings
from pssync.streams.commit import Emitter
from pssync.streams.decode import Decoder, Inbound, Stats
from pssync.streams.flow import OPEN_INDEX, PARKED_INDEX, FlowResult, KeyedFlow
from pssync.streams.metrics import Metrics, StateCollector
from pssync.streams.progress import SourceProgress
from pssync.tables.restore import Restorer
from pssync.tables.store import Table
from pssync.tables.view import StateView

log = logging.getLogger(__name__)


def inbound_from_event(settings: Settings, event: Any) -> Inbound:
    msg = event.message
    headers = msg.headers or ()
    if isinstance(headers, dict):
        headers = tuple(headers.items())
    return Inbound(
        settings.logical(msg.topic),
        int(msg.partition),
        int(msg.offset),
        msg.key,
        msg.value,
        tuple((str(k), v) for k, v in headers),
    )


def wall_ms() -> int:
    return int(time.time() * 1000)


class Runtime:
    def __init__(self, settings: Settings, codec: Codec, producer: OutputProducer) -> None:
        self.settings = settings
        self.codec = codec
        self.producer = producer
        self.stats = Stats()
        self.metrics = Metrics()
        self.metrics.add_collector(StateCollector(self.snapshot))
        self.decoder = Decoder(settings, codec, self.metrics, self.stats)
        self.emitter = Emitter(settings, codec, producer, self.metrics, self.stats)
        self.restorer = Restorer(
            lambda *args: read_partition(settings, *args),
            stall_timeout_s=settings.restore_stall_timeout_s,
        )
        self.sources = SourceProgress(
            idle_ms=int(settings.source_idle_s * 1000),
            heartbeat_ms=int(settings.tick_interval_s * 1000),
        )
        self.tables: dict[str, Table] = {}
        self.table_sources: dict[str, str] = {}
        # CDC topic (logical) -> the internal topics (physical) its routes feed
        self.ingest_targets: dict[str, tuple[str, ...]] = {}
        self.assigned: set[tuple[str, int]] = set()
        self.assignment_seen = False
        self.state_dir = settings.data_dir / f"{settings.topic_prefix}{settings.app_id}"
        # next offset to process per (physical topic, partition), for consumer lag
        self.positions: dict[tuple[str, int], int] = {}
        self.lag: dict[str, int] = {}
        # CDC topic (logical) -> partition count, for the sources a keyed flow waits on
        self.source_partitions: dict[str, int] = {}
        self.flows: dict[str, KeyedFlow] = {}
        # (internal topic, partition) -> (aligned time, stream time, the sources holding
        # the aligned time), for /ready and /stats
        self.stream_times: dict[tuple[str, int], tuple[int | None, int | None, list[str]]] = {}
        self._probe_consumer: Any = None
        self._probe_admin: Any = None

    def expected_sources(self, internal: str) -> list[tuple[str, int]]:
        """Every CDC partition whose changes reach the internal topic `internal`."""
        physical = self.settings.internal_topic(internal)
        return [
            (topic, p)
            for topic, targets in sorted(self.ingest_targets.items())
            if physical in targets
            for p in range(self.source_partitions.get(topic, self.settings.partitions))
        ]

    def record_flow(self, topic: str, partition: int, result: FlowResult) -> None:
        """Count what a keyed batch did."""
        self.stats.duplicates += result.duplicates
        self.stats.late += result.late
        self.stats.buffered += result.buffered
        self.stats.released += result.released
        self.stats.failed += sum(1 for f in result.failures if f.routed is not None)
        self.stats.timers += result.timers
        self.metrics.duplicates.inc(result.duplicates)
        self.metrics.late.inc(result.late)
        self.metrics.timers.inc(result.timers)
        self.stream_times[(topic, partition)] = (
            result.aligned_ms,
            result.stream_ms,
            result.holding,
        )

    # -- state ------------------------------------------------------------
    def table(self, name: str, source: str | None = None) -> Table:
        """A state table; `source` = the physical topic it is co-partitioned with."""
        if source is not None:
            self.table_sources[name] = source
        table = self.tables.get(name)
        if table is None:
            changelog = self.settings.internal_topic(f"{name}-changelog")
            table = Table(name, self.state_dir, changelog)
            self.tables[name] = table
        return table

    async def partition_view(self, table: Table, partition: int) -> StateView:
        """A view of one partition, after its store has caught up with the changelog."""
        await self.restorer.start(table, partition)
        return StateView(table.partition(partition))

    def is_recovered(self) -> bool:
        return self.assignment_seen and self.restorer.done()

    def forget_partitions(self, topic_partitions: Sequence[tuple[str, int]]) -> None:
        """On revoke: stop tracking those partitions (a later assignment catches up again)."""
        slots = []
        for topic, p in topic_partitions:
            for name, source in self.table_sources.items():
                if source == topic:
                    slots.append((name, p))
        self.restorer.forget(slots)

    # -- what the owned partitions hold (gauges) -------------------------
    def snapshot(self) -> dict[str, Any]:
        open_counts: dict[str, int] = {}
        parked: dict[str, int] = {}
        keys: dict[str, int] = {}
        for table in list(self.tables.values()):
            for p in table.open_partitions():
                store = table.partition(p)
                for name, n in (store.get(OPEN_INDEX) or {}).items():
                    open_counts[name] = open_counts.get(name, 0) + n
                for name, n in (store.get(PARKED_INDEX) or {}).items():
                    parked[name] = parked.get(name, 0) + n
                keys[table.name] = keys.get(table.name, 0) + store.estimate_keys()
        return {
            "open": open_counts,
            "parked": parked,
            "keys": keys,
            "lag": dict(self.lag),
            "assigned": len(self.assigned),
            "ready": self.is_recovered(),
        }

    # -- the broker probe (blocking: run in an executor) -------------------
    def probe_plan(self) -> tuple[list[tuple[str, int]], dict[tuple[str, int], int]]:
        """On the event loop: what the probe should ask about (owned partitions) and the
        positions this process has processed to (CDC partitions it has not processed
        since it got them are left out: for those the group's committed offset counts)."""
        positions = {}
        for (topic, partition), offset in self.positions.items():
            progress = self.sources.partitions.get((self.settings.logical(topic), partition))
            if progress is None or progress.processed_here:
                positions[(topic, partition)] = offset
        return sorted(self.assigned), positions

    def probe(
        self, plan: tuple[list[tuple[str, int]], dict[tuple[str, int], int]]
    ) -> tuple[dict[str, int], list[tuple[tuple[str, int], int, int | None]]]:
        """High watermarks of owned partitions: consumer lag, and each CDC partition's
        end with the offset the group stands at where this process has processed
        nothing yet. Blocking; apply the answer on the event loop (`apply_probe`)."""
        from confluent_kafka import Consumer, TopicPartition
        from confluent_kafka.admin import OffsetSpec

        if self._probe_consumer is None:
            self._probe_consumer = Consumer(
                client_config(
                    self.settings,
                    **{"group.id": self.settings.group_id, "enable.auto.commit": False},
                )
            )
            self._probe_admin = admin(self.settings)
        consumer = self._probe_consumer
        assigned, positions = plan
        # one ListOffsets request per broker for every partition (not one per partition:
        # at a short tick, 39 sequential round trips kept the probe thread busy)
        highs = self._list_offsets(assigned, OffsetSpec.latest())
        unknown = [TopicPartition(t, p) for t, p in highs if (t, p) not in positions]
        committed: dict[tuple[str, int], int | None] = {}
        if unknown:
            try:
                for tp in consumer.committed(unknown, timeout=5):
                    # a negative offset: the group has none (it starts at the beginning)
                    committed[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
            except Exception:  # unknown this time (a rebalance, say): asked again next tick
                pass
        no_offset = [tp for tp, offset in committed.items() if offset is None]
        lows = self._list_offsets(no_offset, OffsetSpec.earliest()) if no_offset else {}
        lag: dict[str, int] = {}
        sources: list[tuple[tuple[str, int], int, int | None]] = []
        for (topic, partition), high in highs.items():
            start: int | None = None
            if (topic, partition) in positions:
                position: int | None = positions[(topic, partition)]
            elif (topic, partition) in committed:
                start = committed[(topic, partition)]
                position = lows.get((topic, partition)) if start is None else start
                start = position
            else:
                position = None
            logical = self.settings.logical(topic)
            if position is not None:
                lag[logical] = lag.get(logical, 0) + max(0, high - position)
            if logical in self.ingest_targets:
                sources.append(((logical, partition), high, start))
        return lag, sources

    def _list_offsets(
        self, partitions: Sequence[tuple[str, int]], spec: Any
    ) -> dict[tuple[str, int], int]:
        """Offsets (`spec`: latest or earliest) of `partitions`; a partition whose answer
        fails is left out (a probe failure leaves the last values, never the worker)."""
        from confluent_kafka import TopicPartition

        if not partitions:
            return {}
        try:
            futures = self._probe_admin.list_offsets(
                {TopicPartition(t, p): spec for t, p in partitions}, request_timeout=2
            )
        except Exception:
            return {}
        out = {}
        for tp, future in futures.items():
            try:
                out[(tp.topic, tp.partition)] = int(future.result().offset)
            except Exception:
                continue
        return out

    def apply_probe(
        self, answer: tuple[dict[str, int], list[tuple[tuple[str, int], int, int | None]]]
    ) -> None:
        lag, sources = answer
        self.lag |= lag
        now = wall_ms()
        for partition, end, start in sources:
            self.sources.probed(partition, end, start, now)
