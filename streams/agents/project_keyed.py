"""Reconciliation per project (and per SOW): consumes the internal `project-keyed` topic.

Co-partitioning: PSA and ERP projects are partitioned by project_id, SOWs and
the PSA projects' references to them by `s:<sow_id>`, by the ingest agents;
the `projects` table has one RocksDB store per partition of that topic,
changelogged with the same partition count. ERP customers and SOW copies for
the governance gate arrive broadcast to every partition. Ticks drive the
project-setup SLA and dependency timeouts.
"""

from __future__ import annotations

import faust

from pssync.streams.agents.base import PROJECT_KEYED, flow_config, register_keyed
from pssync.streams.project_flow import ProjectFlow
from pssync.streams.runtime import Runtime

TABLE = "projects"


def register(app: faust.App, rt: Runtime) -> None:
    flow = ProjectFlow(flow_config(rt.settings, rt.expected_sources(PROJECT_KEYED)))
    register_keyed(app, rt, PROJECT_KEYED, TABLE, flow, __doc__ or "")
