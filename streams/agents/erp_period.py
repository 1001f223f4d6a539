"""Ingest of `cdc.erp.period`: decode, validate, broadcast.

Co-partitioning: financial periods are small reference data needed wherever a
time entry is posted, so each change is broadcast to every partition of
`worker-keyed`, which keeps a copy and re-evaluates the time entries parked on
(or held by) that period.
"""

from __future__ import annotations

import faust

from pssync.streams.agents.base import WORKER_KEYED, IngestSpec, Route
from pssync.streams.runtime import Runtime

SPEC = IngestSpec("cdc.erp.period", (Route(WORKER_KEYED, "period"),))


def register(app: faust.App, rt: Runtime) -> None:
    SPEC.register(app, rt, __doc__ or "")
