"""Reconciliation per worker: consumes the internal `worker-keyed` topic.

Co-partitioning: everything on `worker-keyed` is partitioned by the worker's
join key by the ingest agents (HR workers, ERP employees, cost rates,
assignments, time entries), and the `workers` table has one RocksDB store per
partition of that topic, changelogged to a topic with the same partition
count; cost centers, periods and project facts arrive broadcast to every
partition. A process therefore reads and writes only keys of partitions it
owns. A timer sends `tick` messages to the partitions this process owns, so
time-driven rules run inside the partition's ordered stream, never beside it.
"""

from __future__ import annotations

import faust

from pssync.streams.agents.base import WORKER_KEYED, flow_config, register_keyed
from pssync.streams.runtime import Runtime
from pssync.streams.worker_flow import WorkerFlow

TABLE = "workers"


def register(app: faust.App, rt: Runtime) -> None:
    flow = WorkerFlow(flow_config(rt.settings, rt.expected_sources(WORKER_KEYED)))
    register_keyed(app, rt, WORKER_KEYED, TABLE, flow, __doc__ or "")
