"""Ingest of `cdc.erp.project`: decode, validate, route twice.

Co-partitioning: an ERP project joins its PSA project on project_id, so it is
re-keyed onto `project-keyed` by project_id (`erp:<id>` without one), with a
link table (erp_project_id -> project key, co-partitioned with this topic) for
relinks and deletes. Time entries need to know whether their project has an
ACTIVE ERP project, in their worker's partition: project facts are small
reference data, broadcast to every partition of `worker-keyed`.
"""

from __future__ import annotations

import faust

from pssync.streams.agents.base import PROJECT_KEYED, WORKER_KEYED, IngestSpec, Route
from pssync.streams.routing import erp_project_key
from pssync.streams.runtime import Runtime

SPEC = IngestSpec(
    "cdc.erp.project",
    (
        Route(PROJECT_KEYED, "change", erp_project_key, linked=True),
        Route(WORKER_KEYED, "project"),
    ),
)


def register(app: faust.App, rt: Runtime) -> None:
    SPEC.register(app, rt, __doc__ or "")
