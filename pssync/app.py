"""The Faust app factory: settings in, an app with every agent registered out.

Kept small on purpose. Agents come from the explicit module list
`streams.agents.MODULES`; each module's `register(app, runtime)` declares its
agent. Faust's `autodiscover` is off: it found nothing `register` had not declared,
and with `origin` set it imported and scanned the whole `pssync` package (the
demo, the simulator, the CLI) at every start.

Start-up is on the restart's critical path (`bench.restart`): see `prepare_worker`
and the Faust settings in `create_app` (static membership, no leader topic, no
table-manager sleep).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
from faust.tables.manager import TableManager
from faust.web import Request, Response, View
from prometheus_client import generate_latest

import pssync.api
from pssync import faust_eos, faust_fastpath
from pssync.api.forward import PEERS_TOPIC
from pssync.avro.codec import Codec, load_schema_text
from pssync.avro.contract import ALL_TOPICS
from pssync.avro.registry import RegistryClient
from pssync.connectors.kafka import (
    OutputProducer,
    TopicSpec,
    admin,
    connect,
    contract_topic_specs,
    ensure_topics,
    group_metadata,
)
from pssync.security import faust_credentials
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
    return prepare_worker(settings, partitions)[0]


def prepare_worker(
    settings: Settings, partitions: int | None = None
) -> tuple[Codec, dict[str, int]]:
    """`prepare`, and the partition count of every topic pssync reads (for `create_app`).

    A restart finds everything in place, so this is on the restart's critical path: the
    schemas are registered in parallel while one admin client reads the cluster's
    metadata once; topics are created only when some are missing."""
    codec = Codec(RegistryClient.from_settings(settings), settings.topic_prefix)
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="register") as pool:
        registered = [
            pool.submit(codec.register, topic, part, load_schema_text(topic, part))
            for topic in ALL_TOPICS
            for part in ("key", "value")
        ]
        counts = _ensure_worker_topics(settings, partitions or settings.partitions)
        for future in registered:
            future.result()
    return codec, counts


def _ensure_worker_topics(settings: Settings, n: int) -> dict[str, int]:
    """Create what is missing of the contract's, the internal and the changelog topics;
    returns physical topic -> partition count."""
    # the first contact: a refused password or TLS handshake stops here, in one line
    client, cluster = connect(settings, timeout_s=5.0)
    metadata = cluster.topics
    counts = {name: len(meta.partitions) for name, meta in metadata.items() if meta.error is None}

    def ensure(specs: list[TopicSpec]) -> None:
        missing = [s for s in specs if s.name not in counts]
        if missing:
            ensure_topics(settings, missing)
            for spec in missing:  # created now, or by a worker starting alongside
                counts[spec.name] = spec.partitions
            for name, meta in client.list_topics(timeout=10).topics.items():
                if name in counts and meta.error is None and meta.partitions:
                    counts[name] = len(meta.partitions)

    specs = contract_topic_specs(settings, n)
    specs += [TopicSpec(settings.internal_topic(t), settings.partitions) for t in INTERNAL_TOPICS]
    # the operations API's directory of who holds which partition (`api.forward`)
    specs.append(TopicSpec(settings.internal_topic(PEERS_TOPIC), 1, True))
    ensure(specs)
    ensure(
        [
            TopicSpec(
                settings.internal_topic(f"{table}-changelog"),
                counts.get(source) or settings.partitions,
                True,
            )
            for table, source in state_tables(settings).items()
        ]
    )
    return counts


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


class Tables(TableManager):
    """Faust's table manager without its start-up sleep.

    Faust's `TableManager.on_start` sleeps a second before it finalizes the tables (for
    tables declared late), and the consumer subscribes only after that. pssync declares
    no Faust table (state is its own RocksDB stores, `tables.store`), so the second is
    pure start-up delay."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


def create_app(
    settings: Settings, codec: Codec, partitions: Mapping[str, int] | None = None
) -> tuple[faust.App, Runtime]:
    """`partitions`: physical topic -> partition count (`prepare_worker`); read from the
    broker when not given."""
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    faust_fastpath.install()  # a record handed to its stream without four futures
    session_s = settings.session_timeout_s
    app = faust.App(
        settings.group_id,
        broker=settings.kafka_url,
        # SASL and/or TLS for aiokafka's consumer, producer and admin (pssync.security)
        broker_credentials=faust_credentials(settings),
        autodiscover=False,  # agents are registered explicitly (module doc)
        origin="pssync",
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        # how the other workers reach this one (the operations API forwards to owners)
        canonical_url=settings.canonical_url,
        datadir=str(settings.data_dir / "faust"),
        store="memory://",
        topic_partitions=settings.partitions,
        # `prepare` creates every topic pssync reads or writes: Faust creates none
        topic_allow_declare=False,
        # no @app.timer(on_leader=True): no `<app>-__assignor-__leader` topic to create
        # and subscribe to
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        producer_acks=-1,
        TableManager=Tables,
        # static membership (KIP-345): a worker restarting with the same id (after a
        # SIGTERM or a SIGKILL) gets its partitions back at once, without a rebalance
        # and without waiting out its previous incarnation's session
        consumer_group_instance_id=settings.group_instance_id,
        broker_session_timeout=session_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_heartbeat_interval=min(3.0, session_s / 3),
        broker_request_timeout=max(90.0, session_s + 30),  # Faust: at least the session
    )
    if settings.exactly_once:  # batches are transactions (streams.commit)
        faust_eos.install(app)
        producer = OutputProducer(
            settings, codec, **{"transactional.id": settings.transactional_id}
        )
    else:
        producer = OutputProducer(settings, codec)
    rt = Runtime(settings, codec, producer)
    if settings.exactly_once:
        rt.emitter.start_transactions(group_metadata(settings))
    if partitions is None:
        partitions = {
            name: len(meta.partitions)
            for name, meta in admin(settings).list_topics(timeout=10).topics.items()
            if meta.error is None
        }
    for name in INGEST_MODULES:
        topic = importlib.import_module(name).SPEC.topic
        rt.source_partitions[topic] = partitions.get(settings.topic(topic)) or 1
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
        await report_sources(rt, rt.sources.revoke(ingest, wall_ms()))
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
        await report_sources(rt, rt.sources.due(wall_ms()))

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
                "buffered": s.buffered,
                "released": s.released,
                # received by this process's keyed partitions and not yet applied
                "pending": s.buffered - s.released - s.failed,
                "late": s.late,
                "timers": s.timers,
                "stream_time": stream_times(rt),
                "sources": source_progress(rt),
            }
        )

    pssync.api.install(app, rt)  # the operations API, behind its tokens (also /stats)
    return app, rt
