"""Helpers the thin agents share: raw topics, batching, and re-keying to internal topics."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import faust

from pssync.streams.changes import Change
from pssync.streams.flow import FlowConfig, KeyedFlow, tick_message
from pssync.streams.routing import JoinKey, link_targets, new_link
from pssync.streams.runtime import Inbound, Runtime, inbound_from_event
from pssync.tables.view import StateView

WORKER_KEYED = "worker-keyed"


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
        for e in events:  # processed: the next offset to read, for consumer lag
            rt.positions[(e.message.topic, e.message.partition)] = e.message.offset + 1


def by_partition(records: Sequence[Inbound]) -> dict[int, list[Inbound]]:
    out: dict[int, list[Inbound]] = {}
    for r in records:
        out.setdefault(r.partition, []).append(r)
    return out


PROJECT_KEYED = "project-keyed"
INTERNAL_TOPICS = (WORKER_KEYED, PROJECT_KEYED)


@dataclass(frozen=True)
class Route:
    """One place a change goes: an internal keyed topic, by join key or to every partition.

    `join_key` None means broadcast (reference data). `linked` keeps a table of
    each entity's last join key, co-partitioned with the input topic, so that a
    change that moves the entity (or a delete without a before-image) also
    reaches the previous owner.
    """

    target: str
    kind: str
    join_key: JoinKey | None = None
    linked: bool = False


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

    def register(self, app: faust.App, rt: Runtime, doc: str) -> None:
        settings = rt.settings
        physical = settings.topic(self.topic)
        tables = {
            r: rt.table(f"{self.name}-{r.kind}-links", physical) for r in self.routes if r.linked
        }

        async def ingest(stream: Any) -> None:
            async for records in batches(rt, stream):
                started = time.perf_counter()
                views = []
                for partition, part in sorted(by_partition(records).items()):
                    links = {r: await rt.partition_view(t, partition) for r, t in tables.items()}
                    decoded = await rt.decode(part)
                    rt.send(decoded.dead)
                    for change in decoded.changes:
                        for route in self.routes:
                            self._send(rt, route, change, links.get(route))
                    views += [(tables[r], partition, v) for r, v in links.items()]
                await rt.commit(views)
                rt.metrics.batch_seconds.labels(self.name).observe(time.perf_counter() - started)

        ingest.__doc__ = doc
        ingest.__name__ = ingest.__qualname__ = self.name.replace("-", "_")
        app.agent(raw_topic(app, physical), name=self.name)(ingest)

    @staticmethod
    def _send(rt: Runtime, route: Route, change: Change, links: StateView | None) -> None:
        topic = rt.settings.internal_topic(route.target)
        message: dict[str, Any] = {"kind": route.kind, "change": change.to_json()}
        if route.join_key is None:
            for partition in range(rt.settings.partitions):
                rt.send_internal(
                    topic,
                    f"{route.kind}:{change.entity_id}",
                    message,
                    partition=partition,
                    correlation_id=change.correlation_id,
                )
            return
        if links is not None:
            link = links.get_for_update(change.entity_id, new_link())
            targets = link_targets(link, change, route.join_key)
        else:
            image = change.after or change.before or {}
            targets = [k for k in [route.join_key(image)] if k]
        for key in targets:
            rt.send_internal(
                topic,
                key,
                message | {"key": key},
                partitions=rt.settings.partitions,
                correlation_id=change.correlation_id,
            )


def register_keyed(
    app: faust.App, rt: Runtime, internal: str, table_name: str, flow: KeyedFlow, doc: str
) -> None:
    """The stateful agent of an internal keyed topic: apply a flow per partition batch,
    and a timer that ticks the partitions this process owns."""
    topic = rt.settings.internal_topic(internal)
    table = rt.table(table_name, topic)

    async def keyed(stream: Any) -> None:
        async for records in batches(rt, stream):
            started = time.perf_counter()
            now_ms = int(time.time() * 1000)
            views = []
            for partition, part in sorted(by_partition(records).items()):
                view = await rt.partition_view(table, partition)
                messages = []
                for record in part:
                    try:
                        messages.append(json.loads(record.value or b""))
                    except ValueError as exc:
                        rt.send([rt.dead_letter(record, exc, "decode", "undecodable")])
                before = flow.duplicates
                rt.send(flow.process(view, messages, now_ms))
                rt.stats.duplicates += flow.duplicates - before
                rt.metrics.duplicates.inc(flow.duplicates - before)
                for message, error in flow.failures:
                    rt.send([rt.failed(topic, partition, message, error)])
                flow.failures.clear()
                views.append((table, partition, view))
            await rt.commit(views)
            rt.metrics.batch_seconds.labels(internal).observe(time.perf_counter() - started)

    async def ticks() -> None:
        now_ms = int(time.time() * 1000)
        for name, partition in sorted(rt.assigned):
            if name == topic:
                rt.send_internal(topic, "tick", tick_message(now_ms), partition=partition)
        rt.producer.poll()

    keyed.__doc__ = doc
    keyed.__name__ = keyed.__qualname__ = internal.replace("-", "_")
    app.agent(raw_topic(app, topic), name=internal)(keyed)
    app.timer(interval=rt.settings.tick_interval_s, name=f"{internal}-ticks")(ticks)


def flow_config(settings: Any) -> FlowConfig:
    return FlowConfig(
        orphan_grace_ms=int(settings.orphan_grace_s * 1000),
        dependency_timeout_ms=int(settings.dependency_timeout_s * 1000),
        reorder_window_ms=int(settings.reorder_window_s * 1000),
        project_setup_sla_ms=int(settings.project_setup_sla_s * 1000),
    )
