"""Ingest of `cdc.psa.project`: decode, validate, route three ways.

Co-partitioning: to `project-keyed` by its own project_id (the project join);
to `project-keyed` by `s:<sow_id>` as a reference to its SOW, so the partition
owning the SOW knows which projects reference it (a link table, co-partitioned
with this topic, tells the old SOW when a project moves); and broadcast to
`worker-keyed` as a project fact for the assignments that wait on it.
"""

from __future__ import annotations

import faust

from pssync.streams.agents.base import PROJECT_KEYED, WORKER_KEYED, IngestSpec, Route
from pssync.streams.routing import field_key
from pssync.streams.runtime import Runtime

SPEC = IngestSpec(
    "cdc.psa.project",
    (
        Route(PROJECT_KEYED, "change", field_key("project_id")),
        Route(PROJECT_KEYED, "sow_ref", field_key("sow_id", "s:"), linked=True),
        Route(WORKER_KEYED, "project"),
    ),
)


def register(app: faust.App, rt: Runtime) -> None:
    SPEC.register(app, rt, __doc__ or "")
