"""Ingest of `cdc.psa.time_entry`: decode, validate, re-key by worker_id.

Co-partitioning: posting reads the worker's employment, ERP employee and cost
rates, which live in the worker's partition of `worker-keyed`, so time entries
are re-keyed there by worker_id (projects and periods are broadcast there as
reference data); a link table (time_entry_id -> worker_id, co-partitioned with
this topic) routes a delete without a before-image to the right worker, so the
posted entry is reversed. A link goes once the entry's month is over by the
retention (`routing.time_entry_link_expiry`); a later change of such an entry
is sent to every partition as well, so its owner still hears of it.
"""

from __future__ import annotations

import faust

from pssync.streams.agents.base import WORKER_KEYED, IngestSpec, Route
from pssync.streams.routing import field_key, time_entry_link_expiry
from pssync.streams.runtime import Runtime

SPEC = IngestSpec(
    "cdc.psa.time_entry",
    (
        Route(
            WORKER_KEYED,
            "change",
            field_key("worker_id"),
            linked=True,
            expires=time_entry_link_expiry,
        ),
    ),
)


def register(app: faust.App, rt: Runtime) -> None:
    SPEC.register(app, rt, __doc__ or "")
