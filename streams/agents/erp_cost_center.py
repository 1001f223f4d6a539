"""Ingest of `cdc.erp.cost_center`: decode, validate, broadcast.

Co-partitioning: cost centers are small reference data read by every worker
partition, so each change is broadcast to *every* partition of the internal
`worker-keyed` topic (a global-table pattern, made explicit): each partition
keeps its own copy and re-evaluates the workers it owns that depend on it.
Stateless here.
"""

from __future__ import annotations

from typing import Any

import faust

from pssync.streams.agents.base import WORKER_KEYED, batches, raw_topic
from pssync.streams.runtime import Runtime

TOPIC = "cdc.erp.cost_center"


def register(app: faust.App, rt: Runtime) -> None:
    keyed = rt.settings.internal_topic(WORKER_KEYED)
    n = rt.settings.partitions

    @app.agent(raw_topic(app, rt.settings.topic(TOPIC)), name="cdc-erp-cost-center")
    async def erp_cost_center(stream: Any) -> None:
        """Broadcasts cost center changes to every worker-keyed partition."""
        async for records in batches(rt, stream):
            decoded = await rt.decode(records)
            rt.send(decoded.dead)
            for change in decoded.changes:
                message = {"kind": "cost_center", "change": change.to_json()}
                for partition in range(n):
                    rt.send_internal(
                        keyed,
                        f"cc:{change.entity_id}",
                        message,
                        partition=partition,
                        correlation_id=change.correlation_id,
                    )
            await rt.commit([])
