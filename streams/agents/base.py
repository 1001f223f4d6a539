"""Helpers the thin agents share: raw topics, batching, and re-keying to internal topics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import faust

from pssync.streams.runtime import Inbound, Runtime, inbound_from_event

WORKER_KEYED = "worker-keyed"


def raw_topic(app: faust.App, physical: str) -> Any:
    """A topic consumed as raw bytes: decoding is ours (batched, with DLQ)."""
    return app.topic(
        physical, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


async def batches(rt: Runtime, stream: Any) -> AsyncIterator[list[Inbound]]:
    """Batches of consumed records; each batch is acknowledged after the loop body."""
    settings = rt.settings
    async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
        yield [inbound_from_event(settings, e) for e in events]


def by_partition(records: Sequence[Inbound]) -> dict[int, list[Inbound]]:
    out: dict[int, list[Inbound]] = {}
    for r in records:
        out.setdefault(r.partition, []).append(r)
    return out
