"""Validated change events: what a decoded CDC record means to the rules.

`to_change` turns a decoded Debezium envelope (already in the contract's JSON
form) into a `Change`, or raises `ValidationError` naming what is wrong; the
caller turns that into a DLQ record. Nothing here does I/O.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from pssync.avro.contract import CDC_OPS, ENUMS, TABLES_BY_TOPIC

Record = dict[str, Any]

# Event time of every snapshot read (op "r"): the state before any streamed change.
SNAPSHOT_POINT = 0

# The range of an instant (as the contract's timestamp-millis fields and Python's datetime
# hold it): 0001-01-01T00:00:00.000Z to 9999-12-31T23:59:59.999Z, in ms since the epoch.
# A source commit time (`source.ts_ms`, a plain long) outside it is no time at all: taken
# as event time, it would move stream time (and every timer) out to that absurd instant.
MIN_INSTANT_MS = -62_135_596_800_000
MAX_INSTANT_MS = 253_402_300_799_999


class ValidationError(ValueError):
    """A decodable record that breaks the contract (bad enum, op, or shape)."""


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where a change came from, and its identity at the source."""

    topic: str
    partition: int
    offset: int
    key: str
    lsn: int | None
    ts_ms: int | None

    @property
    def identity(self) -> str:
        """Stable across redelivery: the same source change has the same identity."""
        position = self.lsn if self.lsn is not None else f"ts{self.ts_ms}"
        return f"{self.topic}|{self.key}|{position}"

    def to_json(self) -> Record:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": self.key,
            "lsn": self.lsn,
            "ts_ms": self.ts_ms,
        }

    @classmethod
    def from_json(cls, data: Record) -> SourceRef:
        return cls(
            data["topic"],
            int(data["partition"]),
            int(data["offset"]),
            data["key"],
            data.get("lsn"),
            data.get("ts_ms"),
        )


@dataclass(frozen=True, slots=True)
class Change:
    """One source change: an upsert (`after` set) or a delete (`after` None)."""

    topic: str
    entity_id: str
    op: str
    before: Record | None
    after: Record | None
    source: SourceRef
    correlation_id: str
    snapshot: bool = False
    extra: Record = field(default_factory=dict)

    @property
    def is_delete(self) -> bool:
        return self.after is None

    @property
    def event_ts(self) -> int:
        """The change's place in event time: its source commit time, or, for a Debezium
        snapshot read, the snapshot point (see `streams.alignment`)."""
        if self.snapshot or self.source.ts_ms is None:
            return SNAPSHOT_POINT
        return self.source.ts_ms

    def to_json(self) -> Record:
        return {
            "topic": self.topic,
            "entity_id": self.entity_id,
            "op": self.op,
            "before": self.before,
            "after": self.after,
            "source": self.source.to_json(),
            "correlation_id": self.correlation_id,
            "snapshot": self.snapshot,
        }

    @classmethod
    def from_json(cls, data: Record) -> Change:
        return cls(
            data["topic"],
            data["entity_id"],
            data["op"],
            data.get("before"),
            data.get("after"),
            SourceRef.from_json(data["source"]),
            data["correlation_id"],
            bool(data.get("snapshot", False)),
        )


def entity_key(topic: str, key: Record) -> str:
    """The entity id a CDC key names (composite keys joined with '/')."""
    table = TABLES_BY_TOPIC[topic]
    return "/".join(str(key[k]) for k in table.key)


def correlation_for(source: SourceRef, header: str | None) -> str:
    """The correlation id from the header, or one derived from the source identity."""
    if header:
        return header
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "pssync:" + source.identity))


def _check_image(topic: str, image: Record, where: str) -> None:
    for (enum_topic, name), allowed in ENUMS.items():
        if enum_topic == topic and name in image and image[name] not in allowed:
            raise ValidationError(
                f"{where}.{name}: {image[name]!r} is not one of {sorted(allowed)}"
            )


def to_change(
    topic: str,
    key: Record | None,
    value: Record,
    partition: int,
    offset: int,
    correlation_header: str | None,
) -> Change:
    """Validate a decoded envelope (JSON form) and make it a Change."""
    table = TABLES_BY_TOPIC[topic]
    op = value.get("op")
    if op not in CDC_OPS:
        raise ValidationError(f"op: {op!r} is not one of c, u, d, r")
    before, after = value.get("before"), value.get("after")
    if op in ("c", "u", "r") and after is None:
        raise ValidationError(f"after: must be set when op is {op!r}")
    if op == "d" and after is not None:
        raise ValidationError("after: must be null when op is 'd'")
    if op == "c" and before is not None:
        raise ValidationError("before: must be null when op is 'c'")
    image = after if after is not None else before
    if key is None:
        if image is None:
            raise ValidationError("key: missing, and no before/after image to take it from")
        key = {k: image[k] for k in table.key}
    for k in table.key:
        if key.get(k) in (None, ""):
            raise ValidationError(f"key.{k}: must be set")
        if after is not None and after.get(k) != key[k]:
            raise ValidationError(f"after.{k}: {after.get(k)!r} does not match key {key[k]!r}")
    if after is not None:
        _check_image(topic, after, "after")
    if before is not None:
        _check_image(topic, before, "before")
    source = value.get("source") or {}
    snapshot = str(source.get("snapshot") or "false")
    ts_ms = source.get("ts_ms")
    if ts_ms is not None and not MIN_INSTANT_MS <= ts_ms <= MAX_INSTANT_MS:
        raise ValidationError(
            f"source.ts_ms: {ts_ms} ms is out of the range of an instant "
            "(0001-01-01 to 9999-12-31 UTC)"
        )
    ref = SourceRef(
        topic=topic,
        partition=partition,
        offset=offset,
        key=entity_key(topic, key),
        lsn=source.get("lsn"),
        ts_ms=ts_ms,
    )
    return Change(
        topic=topic,
        entity_id=ref.key,
        op=op,
        before=before,
        after=after,
        source=ref,
        correlation_id=correlation_for(ref, correlation_header),
        snapshot=op == "r" or snapshot not in ("false", ""),
    )
