"""Ingest of `cdc.erp.employee`: decode, validate, re-key by the HR worker_id.

Co-partitioning: ERP employees are keyed by erp_employee_id but join HR on
worker_id, so each change is re-sent to `worker-keyed` under its join key
(`worker_id`, or `erp:<id>` when it has none). When an employee is relinked to
another worker, or deleted without a before-image (Debezium's default replica
identity), the old join key comes from a link table (erp_employee_id -> join
key) co-partitioned with this input topic: same key, same partition, and a
changelog with the same partition count, so the lookup is always local.
"""

from __future__ import annotations

import faust

from pssync.streams.agents.base import WORKER_KEYED, IngestSpec, Route
from pssync.streams.rules.workers import join_key_of_erp
from pssync.streams.runtime import Runtime

SPEC = IngestSpec(
    "cdc.erp.employee", (Route(WORKER_KEYED, "change", join_key_of_erp, linked=True),)
)


def register(app: faust.App, rt: Runtime) -> None:
    SPEC.register(app, rt, __doc__ or "")
