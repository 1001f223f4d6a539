"""Ingest of `cdc.hr.worker`: decode, validate, re-key by worker_id.

Co-partitioning: the join needs every record of a worker in one partition, so
each change is re-sent to the internal `worker-keyed` topic under its
worker_id (the Kafka key bytes of the source topic are partitioned by Kafka
Connect's partitioner, not ours). Stateless: any process may own any input
partition.
"""

from __future__ import annotations

import faust

from pssync.streams.agents.base import WORKER_KEYED, IngestSpec, Route
from pssync.streams.routing import field_key
from pssync.streams.runtime import Runtime

SPEC = IngestSpec("cdc.hr.worker", (Route(WORKER_KEYED, "change", field_key("worker_id")),))


def register(app: faust.App, rt: Runtime) -> None:
    SPEC.register(app, rt, __doc__ or "")
