"""Output records (commands, drift alerts, exceptions, golden records) and their IDs.

IDs are deterministic (UUIDv5 over what caused them), so replaying the same
input, or restarting after a crash, yields the same IDs:
- `command_id` = f(type, entity, the source versions the payload is built from);
  a redelivered change has the same versions, so the same ID; a genuine new
  change has a new version, so a new ID.
- `alert_id` / `exception_id` = f(rule, entity, the change that opened it); the
  same ID is re-emitted as RESOLVED when the condition ends.
Records here are in the contract's JSON form; the emitter encodes them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pssync.streams.changes import SourceRef

Record = dict[str, Any]

_NS = uuid.UUID("6f1c1d1e-8a55-4b8e-9a39-0c7f6f3a5e21")


def stable_id(*parts: str) -> str:
    return str(uuid.uuid5(_NS, "|".join(parts)))


@dataclass(frozen=True, slots=True)
class Emit:
    """One record to send: logical topic, key (JSON form), value (JSON form or None)."""

    topic: str
    key: Any
    value: Record | None
    correlation_id: str
    # kind of output, for metrics and summaries: command/alert/exception/golden/dlq
    kind: str
    source_ts_ms: int | None = None
    # when the business clock of an SLA started (ISO instant): SOW signed, time approved
    sla_start: str | None = None


def causation(refs: list[SourceRef]) -> list[Record]:
    seen: set[str] = set()
    out = []
    for ref in refs:
        if ref.identity not in seen:
            seen.add(ref.identity)
            out.append(ref.to_json())
    return out
