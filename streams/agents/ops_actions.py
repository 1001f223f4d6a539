"""Ingest of `ops.actions`: people's actions on exceptions, to the flow that owns the entity.

Co-partitioning: an action is keyed like the data it acts on (the exception's
`owner`: `worker:<key>` or `project:<key>`), and routed to that key's partition of
`worker-keyed` or `project-keyed`, where the entity's state is. It is a source like
the CDC topics: buffered under its event time and released in order with the data,
and its partitions report watermarks the keyed flows wait for (`streams.actions`).
"""

from __future__ import annotations

import faust

from pssync.avro.contract import ACTIONS_TOPIC
from pssync.streams.actions import owner_key
from pssync.streams.agents.base import PROJECT_KEYED, WORKER_KEYED, IngestSpec, Route
from pssync.streams.runtime import Runtime

SPEC = IngestSpec(
    ACTIONS_TOPIC,
    (
        Route(WORKER_KEYED, "action", owner_key("worker")),
        Route(PROJECT_KEYED, "action", owner_key("project")),
    ),
)


def register(app: faust.App, rt: Runtime) -> None:
    SPEC.register(app, rt, __doc__ or "")
