"""An in-process pipeline: the agents' routing, event-time alignment and keyed flows
over changes held in memory, with real RocksDB stores and no Kafka.

The same code paths a worker runs per batch (`IngestSpec.plan`, the keyed
flows' `process`, the commit's change detection), arranged as the worker
arranges them: every CDC topic has `source_partitions` partitions whose
changes are read in order, routed to `partitions` partitions of each keyed
topic, and followed by a watermark report. What differs from a worker is only
the transport, so tests and benchmarks can replay a seeded firm in any
interleaving of its source partitions (a trickle, a backlog read topic by
topic) and compare what comes out, byte for byte, in seconds.
"""

from __future__ import annotations

import importlib
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pssync.streams.agents import INGEST_MODULES
from pssync.streams.agents.base import PROJECT_KEYED, WORKER_KEYED, IngestSpec, expire_links
from pssync.streams.changes import Change, to_change
from pssync.streams.flow import FlowConfig, FlowResult, KeyedFlow
from pssync.streams.messages import Message, Routed, Tick, Watermark, from_bytes
from pssync.streams.outputs import Emit
from pssync.streams.project_flow import ProjectFlow
from pssync.streams.worker_flow import WorkerFlow
from pssync.tables.store import PartitionStore
from pssync.tables.view import StateView

Source = tuple[str, int]  # (CDC topic, partition)


def specs() -> dict[str, IngestSpec]:
    return {
        importlib.import_module(name).SPEC.topic: importlib.import_module(name).SPEC
        for name in INGEST_MODULES
    }


def source_partition(change: Change, partitions: int) -> int:
    """Where a producer keyed by the CDC key would put the change (stable)."""
    return zlib.crc32(change.entity_id.encode()) % partitions


def change_from_line(obj: dict[str, Any], offset: int) -> Change:
    """A `pssync produce` line (contract JSON form) as the ingest agent would see it."""
    headers = obj.get("headers") or {}
    return to_change(
        obj["topic"], obj.get("key"), obj["value"], 0, offset, headers.get("correlation_id")
    )


@dataclass(slots=True)
class Counters:
    changelog_records: int = 0
    changelog_bytes: int = 0
    reads: int = 0
    results: list[FlowResult] = field(default_factory=list)


class OfflinePipeline:
    def __init__(
        self,
        root: Path,
        config: FlowConfig,
        partitions: int = 1,
        source_partitions: int = 1,
        retention_ms: int | None = None,
    ) -> None:
        self.root = root
        self.partitions = partitions
        self.source_partitions = source_partitions
        self.specs = specs()
        self.retention_s = (config.retention_ms if retention_ms is None else retention_ms) / 1000
        targets: dict[str, list[Source]] = defaultdict(list)
        for topic, spec in sorted(self.specs.items()):
            for target in spec.targets():
                targets[target] += [(topic, p) for p in range(source_partitions)]
        self.flows: dict[str, KeyedFlow] = {
            WORKER_KEYED: WorkerFlow(_with_sources(config, targets[WORKER_KEYED])),
            PROJECT_KEYED: ProjectFlow(_with_sources(config, targets[PROJECT_KEYED])),
        }
        self.stores: dict[tuple[str, int], PartitionStore] = {
            (t, p): PartitionStore(root / t / str(p)) for t in self.flows for p in range(partitions)
        }
        self.links: dict[tuple[str, str, int], PartitionStore] = {}
        for topic, spec in self.specs.items():
            for route in spec.routes:
                if route.linked:
                    for p in range(source_partitions):
                        path = root / f"{spec.name}-{route.kind}-links" / str(p)
                        self.links[(topic, route.kind, p)] = PartitionStore(path)
        self.read_ts: dict[Source, int] = {}
        self.idle_since: dict[Source, int] = {}
        self.inbox: dict[tuple[str, int], list[Message]] = defaultdict(list)
        self.emits: list[Emit] = []
        self.counters = Counters()
        self.wall_ms = 0

    # -- ingest -----------------------------------------------------------
    def ingest(self, source: Source, changes: Sequence[Change]) -> None:
        """One ingest batch of one source partition: route, then report."""
        topic, partition = source
        spec = self.specs[topic]
        views = {
            route.kind: StateView(self.links[(topic, route.kind, partition)])
            for route in spec.routes
            if route.linked
        }
        for change in changes:
            for route in spec.routes:
                self._route(spec, route, change, views.get(route.kind))
            self.read_ts[source] = max(self.read_ts.get(source, 0), change.event_ts)
        for kind, view in views.items():
            expire_links(view, self.read_ts.get(source))
            self._commit(self.links[(topic, kind, partition)], view)
        self.report(source, idle=False)

    def _route(self, spec: IngestSpec, route: Any, change: Change, links: StateView | None) -> None:
        if route.join_key is None:
            for p in range(self.partitions):
                self.inbox[(route.target, p)].append(Routed(route.kind, None, change))
            return
        plan = spec.plan(route, change, links, int(self.retention_s * 1000))
        new_key = route.join_key(change.after) if change.after else None
        reached = set()
        for key in plan.targets:
            p = zlib.crc32(key.encode()) % self.partitions
            reached.add(p)
            self.inbox[(route.target, p)].append(Routed(route.kind, key, change, key != new_key))
        if plan.elsewhere:
            for p in set(range(self.partitions)) - reached:
                self.inbox[(route.target, p)].append(Routed(route.kind, None, change, True))

    def report(self, source: Source, idle: bool) -> None:
        topic, partition = source
        since = self.idle_since.setdefault(source, self.wall_ms) if idle else None
        if not idle:
            self.idle_since.pop(source, None)
        wm = Watermark(topic, partition, self.read_ts.get(source), since, self.wall_ms)
        for target in self.specs[topic].targets():
            for p in range(self.partitions):
                self.inbox[(target, p)].append(wm)

    # -- keyed flows --------------------------------------------------------
    def deliver(self) -> None:
        """Every keyed partition processes what reached it, as one batch."""
        for (target, p), messages in sorted(self.inbox.items()):
            if messages:
                self._process(target, p, list(messages))
        self.inbox.clear()

    def _process(self, target: str, partition: int, messages: list[Message]) -> None:
        store = self.stores[(target, partition)]
        view = StateView(store)
        # through the wire form, as a keyed agent reads them
        messages = [from_bytes(m.to_bytes()) for m in messages]
        result = self.flows[target].process(view, partition, messages, self.wall_ms)
        self.counters.results.append(result)
        self.counters.reads += view.reads
        self.emits += result.emits
        self._commit(store, view)

    def _commit(self, store: PartitionStore, view: StateView) -> None:
        changes = view.changes()
        self.counters.changelog_records += len(changes)
        self.counters.changelog_bytes += sum(len(k) + len(v or b"") for k, v in changes.items())
        store.write(changes, None)

    def run(
        self,
        batches: Iterable[tuple[Source, Sequence[Change]]],
        deliver_every: int = 1,
        produced: str = "upfront",
        idle_after: int = 100,
    ) -> None:
        """Ingest batches in the given order, delivering to the keyed flows every few.

        `produced` says when the source records exist, which decides when a source
        is idle (caught up, and no longer holding stream time back): "upfront" (a
        backlog: once all its batches are read) or "just-in-time" (a trickle, read as
        it is produced: after `idle_after` batches of other sources, the stand-in for
        `PSSYNC_SOURCE_IDLE_S` at the trickle's rate).
        """
        schedule = list(batches)
        left: dict[Source, int] = defaultdict(int)
        last_read: dict[Source, int] = {}
        for source, _ in schedule:
            left[source] += 1
        self.idle_except(left if produced == "upfront" else ())
        for i, (source, changes) in enumerate(schedule, 1):
            self.ingest(source, changes)
            last_read[source] = i
            left[source] -= 1
            if left[source] == 0:
                del left[source]
            if produced == "upfront":
                self.idle_except(left)
            else:
                self.idle_except(s for s, at in last_read.items() if i - at < idle_after)
            if i % deliver_every == 0:
                self.deliver()
        self.deliver()

    def idle_except(self, busy: Iterable[Source]) -> None:
        """Report every source but `busy` idle (caught up), once."""
        busy = set(busy)
        for topic in self.specs:
            for p in range(self.source_partitions):
                if (topic, p) not in busy and (topic, p) not in self.idle_since:
                    self.report((topic, p), idle=True)

    def tick(self) -> int:
        """A tick to every keyed partition (as the worker's timer sends): what it applied."""
        before = len(self.counters.results)
        for target in self.flows:
            for p in range(self.partitions):
                self.inbox[(target, p)].append(Tick(self.wall_ms))
        self.deliver()
        return sum(r.released + r.timers for r in self.counters.results[before:])

    def finish(self, idle_for_ms: int) -> None:
        """Every source goes idle, and the wall clock then runs `idle_for_ms` on; ticks
        until nothing more comes out."""
        for topic in self.specs:
            for p in range(self.source_partitions):
                self.report((topic, p), idle=True)
        self.deliver()
        self.wall_ms += idle_for_ms
        for topic in self.specs:
            for p in range(self.source_partitions):
                self.report((topic, p), idle=True)
        self.deliver()
        while self.tick():
            pass

    # -- what is in state ------------------------------------------------------
    def key_counts(self) -> dict[str, int]:
        """Keys in state by table and key kind (the first path segment)."""
        out: dict[str, int] = defaultdict(int)
        for (target, _), store in self.stores.items():
            for key, _ in store.raw_items(""):
                out[f"{target}:{key.split('/', 1)[0]}"] += 1
        for (topic, kind, _), store in self.links.items():
            for key, _ in store.raw_items(""):
                out[f"{topic}-{kind}-links:{key.split('/', 1)[0]}"] += 1
        return dict(sorted(out.items()))

    def close(self) -> None:
        for store in [*self.stores.values(), *self.links.values()]:
            store.close()


def _with_sources(config: FlowConfig, sources: list[Source]) -> FlowConfig:
    from dataclasses import replace

    return replace(config, sources=tuple(sorted(sources)))
