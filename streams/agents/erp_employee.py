"""Ingest of `cdc.erp.employee`: decode, validate, re-key by the HR worker_id.

Co-partitioning: ERP employees are keyed by erp_employee_id, but join HR on
worker_id, so each change is re-sent to the internal `worker-keyed` topic
under its join key (`worker_id`, or `erp:<id>` when it has none). When an
employee is relinked to another worker, or deleted without a before-image
(Debezium's default replica identity), the old join key comes from the
`erp-employee-links` table: erp_employee_id -> join key, co-partitioned with
this input topic (same key, same partition, and a changelog topic with the
same partition count), so the lookup is always local.
"""

from __future__ import annotations

from typing import Any

import faust

from pssync.streams.agents.base import WORKER_KEYED, batches, by_partition, raw_topic
from pssync.streams.routing import erp_employee_targets, new_link
from pssync.streams.runtime import Runtime

TOPIC = "cdc.erp.employee"
LINKS = "erp-employee-links"


def register(app: faust.App, rt: Runtime) -> None:
    keyed = rt.settings.internal_topic(WORKER_KEYED)
    n = rt.settings.partitions
    links = rt.table(LINKS)

    @app.agent(raw_topic(app, rt.settings.topic(TOPIC)), name="cdc-erp-employee")
    async def erp_employee(stream: Any) -> None:
        """Re-keys ERP employee changes by worker_id, remembering each one's link."""
        async for records in batches(rt, stream):
            views = []
            for partition, part in sorted(by_partition(records).items()):
                view = await rt.partition_view(links, partition)
                decoded = await rt.decode(part)
                rt.send(decoded.dead)
                for change in decoded.changes:
                    link = view.get_for_update(change.entity_id, new_link())
                    message = {"kind": "change", "change": change.to_json()}
                    for target in erp_employee_targets(link, change):
                        rt.send_internal(
                            keyed,
                            target,
                            message | {"key": target},
                            partitions=n,
                            correlation_id=change.correlation_id,
                        )
                views.append((links, partition, view))
            await rt.commit(views)
