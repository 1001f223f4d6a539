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
from pssync.streams.rules.workers import is_newer, join_key_of_erp, remember
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
                    link = view.get_for_update(change.entity_id, {"key": None, "seen": {}})
                    new_key = join_key_of_erp(change.after) if change.after else None
                    targets = {k for k in (new_key, link["key"]) if k}
                    if not targets and change.before:
                        targets.add(join_key_of_erp(change.before))
                    if is_newer(link["seen"], change.source):
                        remember(link["seen"], change.source)
                        link["key"] = new_key
                    message = {"kind": "change", "change": change.to_json()}
                    for target in sorted(targets):
                        rt.send_internal(keyed, target, message | {"key": target},
                                         partitions=n, correlation_id=change.correlation_id)
                views.append((links, partition, view))
            await rt.commit(views)
