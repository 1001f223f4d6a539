"""The Faust app factory: settings in, an app with every agent registered out.

Kept small on purpose. Agents come from the explicit module list
`streams.agents.MODULES` (also handed to Faust's `autodiscover`, never
`True`); each module's `register(app, runtime)` declares its agent.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client import generate_latest

from pssync.avro.codec import Codec
from pssync.avro.contract import ALL_TOPICS
from pssync.avro.registry import RegistryClient
from pssync.connectors.kafka import (
    OutputProducer,
    TopicSpec,
    check_kafka,
    contract_topic_specs,
    ensure_topics,
    partition_count,
)
from pssync.settings import Settings
from pssync.streams.agents import INGEST_MODULES, MODULES
from pssync.streams.agents.base import (
    INTERNAL_TOPICS,
    PROJECT_KEYED,
    WORKER_KEYED,
    report_sources,
)
from pssync.streams.agents.project_keyed import TABLE as PROJECTS_TABLE
from pssync.streams.agents.worker_keyed import TABLE as WORKERS_TABLE
from pssync.streams.runtime import Runtime, wall_ms

log = logging.getLogger(__name__)


def state_tables(settings: Settings) -> dict[str, str]:
    """Each state table and the physical topic it is co-partitioned with."""
    tables = {
        WORKERS_TABLE: settings.internal_topic(WORKER_KEYED),
        PROJECTS_TABLE: settings.internal_topic(PROJECT_KEYED),
    }
    for name in INGEST_MODULES:
        spec = importlib.import_module(name).SPEC
        for table in spec.link_tables():
            tables[table] = settings.topic(spec.topic)
    return tables


def prepare(settings: Settings, partitions: int | None = None) -> Codec:
    """Blocking start-up: Kafka reachable, topics present, schemas registered."""
    check_kafka(settings)
    n = partitions or settings.partitions
    specs = contract_topic_specs(settings, n)
    specs += [TopicSpec(settings.internal_topic(t), settings.partitions) for t in INTERNAL_TOPICS]
    ensure_topics(settings, specs)
    changelogs = []
    for table, source in state_tables(settings).items():
        count = partition_count(settings, source) or settings.partitions
        changelogs.append(TopicSpec(settings.internal_topic(f"{table}-changelog"), count, True))
    ensure_topics(settings, changelogs)
    codec = Codec(RegistryClient(settings.schema_registry_url), settings.topic_prefix)
    codec.register_all(ALL_TOPICS)
    return codec


def stream_times(rt: Runtime) -> dict[str, dict[str, Any]]:
    """Per owned keyed partition: the aligned time, the stream time (ISO, UTC), and the
    source partitions holding the aligned time back."""
    from pssync.streams.findings import iso

    def shown(ms: int | None) -> str | None:
        return None if ms is None else iso(ms)

    return {
        f"{rt.settings.logical(topic)}[{p}]": {
            "aligned": shown(a),
            "stream": shown(s),
            "held_by": held[:5],
        }
        for (topic, p), (a, s, held) in sorted(rt.stream_times.items())
        if (topic, p) in rt.assigned
    }


def source_progress(rt: Runtime) -> dict[str, dict[str, Any]]:
    """Per owned CDC partition: how far it is read (event time), its position and end,
    and since when it is idle (the ingest side of the alignment)."""
    from pssync.streams.findings import iso

    now = wall_ms()
    out = {}
    for (topic, p), progress in sorted(rt.sources.partitions.items()):
        idle = rt.sources.idle_since(progress, now)
        out[f"{topic}[{p}]"] = {
            "read_to": None if progress.ts is None else iso(progress.ts),
            "position": progress.position,
            "end": progress.end,
            "idle_since": None if idle is None else iso(idle),
        }
    return out


def create_app(settings: Settings, codec: Codec) -> tuple[faust.App, Runtime]:
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.group_id,
        broker=settings.kafka_url,
        autodiscover=list(MODULES),
        origin="pssync",
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        datadir=str(settings.data_dir / "faust"),
        store="memory://",
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        producer_acks=-1,
    )
    rt = Runtime(settings, codec, OutputProducer(settings, codec))
    for name in INGEST_MODULES:
        topic = importlib.import_module(name).SPEC.topic
        rt.source_partitions[topic] = partition_count(settings, settings.topic(topic)) or 1
    for name in MODULES:
        importlib.import_module(name).register(app, rt)
    tables = rt.table_sources

    async def on_assigned(_sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        assigned = args[0]
        rt.assigned = {(tp.topic, tp.partition) for tp in assigned}
        rt.assignment_seen = True
        ingest = [(settings.logical(t), p) for t, p in rt.assigned]
        rt.sources.assign([s for s in ingest if s[0] in rt.ingest_targets], wall_ms())
        for name, topic in tables.items():
            for t, p in rt.assigned:
                if t == topic:
                    # start catching up now, so /ready turns 200 before the first batch
                    rt.restorer.start(rt.table(name), p)

    async def on_revoked(_sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        revoked = args[0]
        gone = [(tp.topic, tp.partition) for tp in revoked]
        rt.forget_partitions(gone)
        ingest = [(settings.logical(t), p) for t, p in gone]
        report_sources(rt, rt.sources.revoke(ingest, wall_ms()))
        for topic, p in gone:
            flow = rt.flows.get(topic)
            if flow is not None:
                flow.forget(p)
        for name, topic in tables.items():
            for t, p in gone:
                if t == topic:
                    rt.table(name).release(p)

    app.on_partitions_assigned.connect(on_assigned)
    app.on_partitions_revoked.connect(on_revoked)

    @app.page("/health")
    async def health(self: View, request: Request) -> Response:
        return self.json({"status": "alive"})

    @app.page("/ready")
    async def ready(self: View, request: Request) -> Response:
        ok = rt.is_recovered()
        body = {
            "ready": ok,
            "assigned_partitions": len(rt.assigned),
            "recovering": rt.restorer.restoring(),
            "restore_progress": rt.restorer.progress(),
            "stream_time": stream_times(rt),
        }
        return self.json(body, status=200 if ok else 503)

    @app.page("/metrics")
    async def metrics(self: View, request: Request) -> Response:
        # Prometheus text format 0.0.4 (aiohttp takes the charset separately; UTF-8 default)
        return self.bytes(
            generate_latest(rt.metrics.registry), content_type="text/plain; version=0.0.4"
        )

    @app.timer(interval=settings.tick_interval_s, name="sources")  # type: ignore[untyped-decorator]
    async def sources() -> None:
        """Probe the broker (lag, the CDC partitions' ends); report idle sources."""
        plan = rt.probe_plan()
        answer = await asyncio.get_running_loop().run_in_executor(None, rt.probe, plan)
        rt.apply_probe(answer)
        report_sources(rt, rt.sources.due(wall_ms()))

    @app.page("/stats")
    async def stats(self: View, request: Request) -> Response:
        s = rt.stats
        return self.json(
            {
                "records_in": s.records_in,
                "outputs": s.outputs,
                "dlq": s.dlq,
                "duplicates": s.duplicates,
                "tombstones": s.tombstones,
                "batches": s.batches,
                "released": s.released,
                "late": s.late,
                "timers": s.timers,
                "stream_time": stream_times(rt),
                "sources": source_progress(rt),
            }
        )

    return app, rt
