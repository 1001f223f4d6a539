"""Ingest of `cdc.erp.cost_center`: decode, validate, broadcast.

Co-partitioning: cost centers are small reference data read by every worker
partition, so each change is broadcast to *every* partition of `worker-keyed`
(a global-table pattern, made explicit); each keeps its own copy and
re-evaluates the workers and assignments it owns that depend on it.
"""

from __future__ import annotations

import faust

from pssync.streams.agents.base import WORKER_KEYED, IngestSpec, Route
from pssync.streams.runtime import Runtime

SPEC = IngestSpec("cdc.erp.cost_center", (Route(WORKER_KEYED, "cost_center"),))


def register(app: faust.App, rt: Runtime) -> None:
    SPEC.register(app, rt, __doc__ or "")
