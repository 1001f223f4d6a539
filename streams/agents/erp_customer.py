"""Ingest of `cdc.erp.customer`: decode, validate, broadcast.

Co-partitioning: the project governance gate looks customers up by
crm_account_id, a key unrelated to the project's; customers are reference data
broadcast to every partition of `project-keyed`, which keeps copies by account
and re-evaluates the projects waiting on them.
"""

from __future__ import annotations

import faust

from pssync.streams.agents.base import PROJECT_KEYED, IngestSpec, Route
from pssync.streams.runtime import Runtime

SPEC = IngestSpec("cdc.erp.customer", (Route(PROJECT_KEYED, "customer"),))


def register(app: faust.App, rt: Runtime) -> None:
    SPEC.register(app, rt, __doc__ or "")
