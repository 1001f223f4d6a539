"""Ingest of `cdc.erp.cost_rate`: decode, validate, re-key by worker_id.

Co-partitioning: a worker's cost rates are read when its time entries and
assignments are costed, which happens in the worker's partition of
`worker-keyed`, so rates are re-keyed there by worker_id. A link table
(rate_id -> worker_id, co-partitioned with this topic) routes a delete
without a before-image to the worker that held the rate.
"""

from __future__ import annotations

import faust

from pssync.streams.agents.base import WORKER_KEYED, IngestSpec, Route
from pssync.streams.routing import field_key
from pssync.streams.runtime import Runtime

SPEC = IngestSpec(
    "cdc.erp.cost_rate", (Route(WORKER_KEYED, "change", field_key("worker_id"), linked=True),)
)


def register(app: faust.App, rt: Runtime) -> None:
    SPEC.register(app, rt, __doc__ or "")
