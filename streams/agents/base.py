"""Helpers the thin agents share: raw topics, batching, routing and the keyed agent loop.

Ingest agents (`IngestSpec.register`) decode a batch, send each change along
its routes to the internal keyed topics, then report how far each partition
has been read (`streams.progress`); keyed agents (`register_keyed`) parse the
typed internal messages and hand them to their flow, which buffers, aligns and
applies them (`streams.flow`). Both end a batch with the commit of
`streams.commit`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import faust

from pssync.avro.contract import TABLES_BY_TOPIC
from pssync.connectors.kafka import CORRELATION_HEADER, stable_partition
from pssync.settings import Settings
from pssync.streams.alignment import time_key
from pssync.streams.changes import Change
from pssync.streams.decode import Inbound
from pssync.streams.flow import Failure, FlowConfig, KeyedFlow
from pssync.streams.messages import (
    Message,
    MessageError,
    Routed,
    Tick,
    Watermark,
    Watermarks,
    from_bytes,
)
from pssync.streams.outputs import Emit
from pssync.streams.routing import Expiry, JoinKey, Plan, plan_route
from pssync.streams.runtime import Runtime, inbound_from_event, wall_ms
from pssync.tables.store import Table
from pssync.tables.view import StateView

WORKER_KEYED = "worker-keyed"
PROJECT_KEYED = "project-keyed"
INTERNAL_TOPICS = (WORKER_KEYED, PROJECT_KEYED)


def raw_topic(app: faust.App, physical: str) -> Any:
    """A topic consumed as raw bytes: decoding is ours (batched, with DLQ)."""
    return app.topic(
        physical, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


async def batches(rt: Runtime, stream: Any) -> AsyncIterator[list[Inbound]]:
    """Batches of consumed records; each batch is acknowledged after the loop body."""
    settings = rt.settings
    async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
        records = [inbound_from_event(settings, e) for e in events]
        yield records
        for e in events:  # processed: the next offset to read
            msg = e.message
            rt.positions[(msg.topic, msg.partition)] = msg.offset + 1
            rt.sources.processed((settings.logical(msg.topic), msg.partition), msg.offset + 1)


def by_partition(records: Sequence[Inbound]) -> dict[int, list[Inbound]]:
    out: dict[int, list[Inbound]] = {}
    for r in records:
        out.setdefault(r.partition, []).append(r)
    return out


@dataclass(frozen=True)
class Route:
    """One place a change goes: an internal keyed topic, by join key or to every partition.

    `join_key` None means broadcast (reference data). `linked` keeps a table of
    each entity's last join key, co-partitioned with the input topic, so that a
    change that moves the entity (or a delete without a before-image) also
    reaches the previous owner; `expires` lets a link go in event time.
    """

    target: str
    kind: str
    join_key: JoinKey | None = None
    linked: bool = False
    expires: Expiry | None = None


def send_watermarks(rt: Runtime, reports: Sequence[Watermark]) -> None:
    """Source partitions' reports, to every partition of every topic their changes feed:
    one `Watermarks` record per keyed partition, however many sources report."""
    by_topic: dict[str, list[Watermark]] = {}
    for wm in reports:
        for topic in rt.ingest_targets.get(wm.source, ()):
            by_topic.setdefault(topic, []).append(wm)
    for topic, items in sorted(by_topic.items()):
        raw = Watermarks(tuple(items)).to_bytes()
        key = f"wm:{items[0].source}"
        for partition in range(rt.settings.partitions):
            rt.emitter.send_internal(topic, raw, key, partition=partition)


@dataclass(frozen=True)
class IngestSpec:
    """An ingest agent: decode and validate a CDC topic, then route each change."""

    topic: str
    routes: tuple[Route, ...]

    @property
    def name(self) -> str:
        return self.topic.replace(".", "-").replace("_", "-")

    def link_tables(self) -> list[str]:
        return [f"{self.name}-{r.kind}-links" for r in self.routes if r.linked]

    def targets(self) -> tuple[str, ...]:
        return tuple(sorted({r.target for r in self.routes}))

    def register(self, app: faust.App, rt: Runtime, doc: str) -> None:
        settings = rt.settings
        physical = settings.topic(self.topic)
        rt.ingest_targets[self.topic] = tuple(settings.internal_topic(t) for t in self.targets())
        tables = {
            r: rt.table(f"{self.name}-{r.kind}-links", physical) for r in self.routes if r.linked
        }

        async def ingest(stream: Any) -> None:
            async for records in batches(rt, stream):
                started = time.perf_counter()
                async with rt.emitter.batch(records):
                    await self.ingest_batch(rt, tables, records)
                rt.metrics.batch_seconds.labels(self.name).observe(time.perf_counter() - started)

        ingest.__doc__ = doc
        ingest.__name__ = ingest.__qualname__ = self.name.replace("-", "_")
        app.agent(raw_topic(app, physical), name=self.name)(ingest)

    async def ingest_batch(
        self, rt: Runtime, tables: dict[Route, Table], records: list[Inbound]
    ) -> None:
        """Decode, route and report one batch, then commit it."""
        views = []
        parts = sorted(by_partition(records).items())
        now = wall_ms()  # an idle source woken: say so before anything
        woken = [rt.sources.woken((self.topic, p), now) for p, _ in parts]
        send_watermarks(rt, [wm for wm in woken if wm is not None])
        reports = []
        for partition, part in parts:
            links = {r: await rt.partition_view(t, partition) for r, t in tables.items()}
            decoded = await rt.decoder.decode(part)
            rt.emitter.send(decoded.dead)
            for change in decoded.changes:
                for route in self.routes:
                    self.send(rt, route, change, links.get(route))
            # no await since the sends: the report covers exactly what was sent
            times = [c.event_ts for c in decoded.changes]
            report = rt.sources.forwarded((self.topic, partition), times, wall_ms())
            if report is not None:
                reports.append(report)
            for route, view in links.items():
                expire_links(view, rt.sources.partitions[(self.topic, partition)].ts)
                views.append((tables[route], partition, view))
        send_watermarks(rt, reports)  # after every change they cover
        await rt.emitter.commit(views)

    def send(self, rt: Runtime, route: Route, change: Change, links: StateView | None) -> None:
        """Route one change: to its join key's partition (and a previous owner's), or
        to every partition."""
        settings = rt.settings
        topic = settings.internal_topic(route.target)
        n = settings.partitions
        correlation = change.correlation_id
        if route.join_key is None:
            raw = Routed(route.kind, None, change).to_bytes()
            for partition in range(n):
                rt.emitter.send_internal(
                    topic, raw, f"{route.kind}:{change.entity_id}", partition, correlation
                )
            return
        plan = self.plan(route, change, links, int(settings.retention_s * 1000))
        new_key = route.join_key(change.after) if change.after else None
        reached = set()
        for key in plan.targets:
            partition = stable_partition(key, n)
            reached.add(partition)
            message = Routed(route.kind, key, change, leaving=key != new_key)
            rt.emitter.send_internal(topic, message, key, partition, correlation)
        if plan.elsewhere:  # a previous owner pssync does not know: tell every other partition
            raw = Routed(route.kind, None, change, leaving=True).to_bytes()
            key = f"{route.kind}:{change.entity_id}"
            for partition in range(n):
                if partition not in reached:
                    rt.emitter.send_internal(topic, raw, key, partition, correlation)

    @staticmethod
    def plan(route: Route, change: Change, links: StateView | None, retention_ms: int) -> Plan:
        """Where `change` goes on `route`; keeps the link table (`links`) in step."""
        assert route.join_key is not None
        if links is None:
            image = change.after or change.before
            if image is None:
                image = {TABLES_BY_TOPIC[change.topic].key[0]: change.entity_id}
            key = route.join_key(image)
            return Plan((key,) if key else (), False, None)
        slot = f"l/{change.entity_id}"
        link = links.get(slot)
        plan = plan_route(link, change, route.join_key)
        kept = plan.link
        if kept is not None and route.expires is not None and change.after is not None:
            kept["until"] = route.expires(change.after, retention_ms)
        old_until = (link or {}).get("until")
        new_until = (kept or {}).get("until")
        if old_until is not None and old_until != new_until:
            links.delete(f"lx/{time_key(old_until)}/{change.entity_id}")
        if new_until is not None and new_until != old_until:
            links.put(f"lx/{time_key(new_until)}/{change.entity_id}", 1)
        if kept != link:
            links.put(slot, kept)
        return plan


def expire_links(links: StateView, stream_ms: int | None) -> int:
    """Forget links whose expiry has passed the partition's event time."""
    if stream_ms is None:
        return 0
    expired = links.keys_between("lx/", f"lx/{time_key(stream_ms)}")
    for key in expired:
        links.delete(key)
        links.delete(f"l/{key.split('/', 2)[2]}")
    return len(expired)


def flow_config(settings: Settings, sources: Iterable[tuple[str, int]]) -> FlowConfig:
    return FlowConfig(
        orphan_grace_ms=int(settings.orphan_grace_s * 1000),
        dependency_timeout_ms=int(settings.dependency_timeout_s * 1000),
        project_setup_sla_ms=int(settings.project_setup_sla_s * 1000),
        retention_ms=int(settings.retention_s * 1000),
        idle_ttl_ms=settings.idle_ttl_ms,
        snapshot_idle_ms=int(settings.snapshot_idle_s * 1000),
        sources=tuple(sorted(sources)),
    )


def failure_letter(rt: Runtime, topic: str, partition: int, failure: Failure) -> Emit:
    """A dead letter for a routed change or a timer whose processing raised."""
    if failure.routed is not None:
        change = failure.routed.change
        source = change.source
        record = Inbound(
            topic=change.topic,
            partition=source.partition,
            offset=source.offset,
            key=change.entity_id.encode(),
            value=failure.routed.to_bytes(),
            headers=((CORRELATION_HEADER, change.correlation_id.encode()),),
        )
    else:
        detail = {"timer": failure.timer_key, "due_ms": failure.due_ms}
        record = Inbound(
            topic=rt.settings.logical(topic),
            partition=partition,
            offset=-1,
            key=(failure.timer_key or "").encode(),
            value=json.dumps(detail).encode(),
            headers=((CORRELATION_HEADER, f"timer:{failure.timer_key}:{failure.due_ms}".encode()),),
        )
    return rt.decoder.dead_letter(record, failure.error, "process", "processing_failed")


def register_keyed(
    app: faust.App,
    rt: Runtime,
    internal: str,
    table_name: str,
    flow: KeyedFlow,
    doc: str,
) -> None:
    """The stateful agent of an internal keyed topic: a flow per partition batch, and a
    timer that ticks the partitions this process owns (stream time moves while idle)."""
    topic = rt.settings.internal_topic(internal)
    table = rt.table(table_name, topic)
    rt.flows[topic] = flow

    async def keyed(stream: Any) -> None:
        async for records in batches(rt, stream):
            started = time.perf_counter()
            async with rt.emitter.batch(records):
                await keyed_batch(records)
            rt.metrics.batch_seconds.labels(internal).observe(time.perf_counter() - started)

    async def keyed_batch(records: list[Inbound]) -> None:
        now = wall_ms()
        views = []
        for partition, part in sorted(by_partition(records).items()):
            view = await rt.partition_view(table, partition)
            messages: list[Message] = []
            for record in part:
                try:
                    messages.append(from_bytes(record.value))
                except MessageError as exc:
                    letter = rt.decoder.dead_letter(record, exc, "decode", "undecodable")
                    rt.emitter.send([letter])
            result = flow.process(view, partition, messages, now)
            rt.emitter.send(result.emits)
            rt.emitter.send([failure_letter(rt, topic, partition, f) for f in result.failures])
            rt.record_flow(topic, partition, result)
            views.append((table, partition, view))
        await rt.emitter.commit(views)

    def send_ticks() -> None:
        tick = Tick(wall_ms())
        for name, partition in sorted(rt.assigned):
            if name == topic:
                rt.emitter.send_internal(topic, tick, "tick", partition=partition)

    async def ticks() -> None:
        await rt.emitter.send_alone(send_ticks)

    keyed.__doc__ = doc
    keyed.__name__ = keyed.__qualname__ = internal.replace("-", "_")
    app.agent(raw_topic(app, topic), name=internal)(keyed)
    app.timer(interval=rt.settings.tick_interval_s, name=f"{internal}-ticks")(ticks)


async def report_sources(rt: Runtime, reports: Iterable[Watermark]) -> None:
    """Watermarks sent outside a batch (idle or revoked sources)."""
    items = list(reports)
    await rt.emitter.send_alone(lambda: send_watermarks(rt, items))
