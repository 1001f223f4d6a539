"""Ingest of `cdc.psa.assignment`: decode, validate, re-key by worker_id.

Co-partitioning: assignment rules read the worker's HR record, cost center and
cost rates, all in the worker's partition of `worker-keyed`, so assignments
are re-keyed there by worker_id; a link table (assignment_id -> worker_id,
co-partitioned with this topic) tells the previous worker when an assignment
is re-staffed or deleted without a before-image.
"""

from __future__ import annotations

import faust

from pssync.streams.agents.base import WORKER_KEYED, IngestSpec, Route
from pssync.streams.routing import field_key
from pssync.streams.runtime import Runtime

SPEC = IngestSpec(
    "cdc.psa.assignment", (Route(WORKER_KEYED, "change", field_key("worker_id"), linked=True),)
)


def register(app: faust.App, rt: Runtime) -> None:
    SPEC.register(app, rt, __doc__ or "")
