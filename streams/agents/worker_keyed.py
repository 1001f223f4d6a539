"""Reconciliation of workers: consumes the internal `worker-keyed` topic.

Co-partitioning: everything on `worker-keyed` is partitioned by join key
(worker_id) by the ingest agents, and the `workers` table has one RocksDB
store per partition of that topic, changelogged to a topic with the same
partition count. A worker process therefore reads and writes only keys of
partitions it owns. Cost centers arrive broadcast to every partition.
A timer sends `tick` messages to the partitions this process owns, so
time-driven rules run inside the partition's ordered stream, never beside it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import faust

from pssync.streams.agents.base import WORKER_KEYED, batches, by_partition, raw_topic
from pssync.streams.runtime import Runtime
from pssync.streams.worker_flow import FlowConfig, WorkerFlow, tick_message

TABLE = "workers"


def register(app: faust.App, rt: Runtime) -> None:
    settings = rt.settings
    keyed = settings.internal_topic(WORKER_KEYED)
    workers = rt.table(TABLE)
    flow = WorkerFlow(
        FlowConfig(
            orphan_grace_ms=int(settings.orphan_grace_s * 1000),
            dependency_timeout_ms=int(settings.dependency_timeout_s * 1000),
            reorder_window_ms=int(settings.reorder_window_s * 1000),
        )
    )

    @app.agent(raw_topic(app, keyed), name="worker-keyed")
    async def worker_keyed(stream: Any) -> None:
        """Joins HR, ERP employee and cost center state per worker and applies the rules."""
        async for records in batches(rt, stream):
            now_ms = int(time.time() * 1000)
            views = []
            for partition, part in sorted(by_partition(records).items()):
                view = await rt.partition_view(workers, partition)
                messages = []
                for record in part:
                    try:
                        messages.append(json.loads(record.value or b""))
                    except ValueError as exc:
                        rt.send([rt.dead_letter(record, exc, "decode", "undecodable")])
                before = flow.duplicates
                rt.send(flow.process(view, messages, now_ms))
                rt.stats.duplicates += flow.duplicates - before
                for message, error in flow.failures:
                    rt.send([rt.failed(keyed, partition, message, error)])
                flow.failures.clear()
                views.append((workers, partition, view))
            await rt.commit(views)

    @app.timer(interval=settings.tick_interval_s, name="worker-ticks")  # type: ignore[untyped-decorator]
    async def ticks() -> None:
        """Asks each owned worker-keyed partition to run its time-driven rules."""
        now_ms = int(time.time() * 1000)
        for topic, partition in sorted(rt.assigned):
            if topic == keyed:
                rt.send_internal(keyed, "tick", tick_message(now_ms), partition=partition)
        rt.producer.poll()
