"""Ingest of `cdc.crm.sow`: decode, validate, route twice.

Co-partitioning: SOW_SIGNED_WITHOUT_PROJECT is decided in the partition of
`project-keyed` that owns `s:<sow_id>` (where PSA project references arrive
too); and the project gate compares projects with their SOW, so SOWs are also
broadcast to every partition as reference data.
"""

from __future__ import annotations

import faust

from pssync.streams.agents.base import PROJECT_KEYED, IngestSpec, Route
from pssync.streams.routing import field_key
from pssync.streams.runtime import Runtime

SPEC = IngestSpec(
    "cdc.crm.sow",
    (
        Route(PROJECT_KEYED, "sow", field_key("sow_id", "s:")),
        Route(PROJECT_KEYED, "sow_fact"),
    ),
)


def register(app: faust.App, rt: Runtime) -> None:
    SPEC.register(app, rt, __doc__ or "")
