"""Ingest of `cdc.hr.worker`: decode, validate, re-key by worker_id.

Co-partitioning: HR rows are keyed by worker_id already, but by Avro key
bytes under Kafka Connect's partitioner; the join needs every record of a
worker in one partition with its ERP employees, so each change is re-sent to
the internal `worker-keyed` topic, partitioned by `stable_partition(worker_id)`.
Stateless: nothing is kept here, so any worker may own any input partition.
"""

from __future__ import annotations

from typing import Any

import faust

from pssync.streams.agents.base import WORKER_KEYED, batches, raw_topic
from pssync.streams.runtime import Runtime

TOPIC = "cdc.hr.worker"


def register(app: faust.App, rt: Runtime) -> None:
    keyed = rt.settings.internal_topic(WORKER_KEYED)
    n = rt.settings.partitions

    @app.agent(raw_topic(app, rt.settings.topic(TOPIC)), name="cdc-hr-worker")
    async def hr_worker(stream: Any) -> None:
        """Re-keys HR worker changes by worker_id onto the worker-keyed topic."""
        async for records in batches(rt, stream):
            decoded = await rt.decode(records)
            rt.send(decoded.dead)
            for change in decoded.changes:
                rt.send_internal(
                    keyed,
                    change.entity_id,
                    {"kind": "change", "key": change.entity_id, "change": change.to_json()},
                    partitions=n,
                    correlation_id=change.correlation_id,
                )
            await rt.commit([])
