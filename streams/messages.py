"""Typed, versioned records on pssync's internal keyed topics.

Three kinds travel from the ingest agents (and the worker's own timer) to the
keyed flows:

- `Routed`: a validated source change on its way to the partition that owns
  its join key (`key`), or to every partition (`key` None: reference data);
- `Watermark`: how far one source partition has been read (its event time),
  and whether it is idle (caught up, nothing new for a while); `Watermarks`
  carries several, as one ingest batch or timer round reports them;
- `Tick`: the wall clock, so that stream time can move while every source is
  idle.

Each is a frozen dataclass with `to_bytes` / `from_bytes`. The wire form is
compact UTF-8 JSON (orjson) with a version (`v`) and a kind (`t`); a record of
an unknown version or shape raises `MessageError`, which the keyed agent dead-letters, never a
silent `KeyError` on a worker that was not upgraded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

from pssync.streams.changes import Change

VERSION = 1


class MessageError(ValueError):
    """Bytes on an internal topic that are not a message this version understands."""


@dataclass(frozen=True, slots=True)
class Routed:
    """A source change routed to a keyed topic: `kind` says what it is there (a
    `change` of an entity owned by `key`, or a kind of reference data). `leaving`
    marks a copy for a previous owner (the entity moved to another key, or was
    deleted): it tells that owner to let the entity go."""

    TAG: ClassVar[str] = "routed"
    kind: str
    key: str | None
    change: Change
    leaving: bool = False
    # the bytes this message was read from, when it was: buffered as they are
    raw: bytes | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"v": VERSION, "t": self.TAG, "kind": self.kind, "key": self.key,
                "leaving": self.leaving, "change": self.change.to_json()}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Routed:
        change = Change.from_json(data["change"])
        return cls(str(data["kind"]), data.get("key"), change, bool(data.get("leaving", False)))

    def to_bytes(self) -> bytes:
        return _dumps(self.to_json())


@dataclass(frozen=True, slots=True)
class Watermark:
    """Source partition `source`[`partition`] has been read up to event time `ts`
    (None: nothing read yet); `idle_since` is the wall time (ms) it went idle, or None
    while it has records to read; `sent_ms` is when this report was made."""

    TAG: ClassVar[str] = "wm"
    source: str
    partition: int
    ts: int | None
    idle_since: int | None
    sent_ms: int

    def to_json(self) -> dict[str, Any]:
        return {"v": VERSION, "t": self.TAG, "source": self.source, "partition": self.partition,
                "ts": self.ts, "idle_since": self.idle_since, "sent_ms": self.sent_ms}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Watermark:
        ts, idle = data.get("ts"), data.get("idle_since")
        return cls(
            str(data["source"]),
            int(data["partition"]),
            None if ts is None else int(ts),
            None if idle is None else int(idle),
            int(data["sent_ms"]),
        )

    def to_bytes(self) -> bytes:
        return _dumps(self.to_json())


@dataclass(frozen=True, slots=True)
class Watermarks:
    """Several source partitions' reports in one record: what an ingest batch or a timer
    round reports, sent once per keyed partition instead of once per source partition."""

    TAG: ClassVar[str] = "wms"
    items: tuple[Watermark, ...]

    def to_json(self) -> dict[str, Any]:
        return {"v": VERSION, "t": self.TAG, "items": [wm.to_json() for wm in self.items]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Watermarks:
        items = data["items"]
        if not isinstance(items, list):
            raise TypeError("items is not a list")
        return cls(tuple(Watermark.from_json(item) for item in items))

    def to_bytes(self) -> bytes:
        return _dumps(self.to_json())


@dataclass(frozen=True, slots=True)
class Tick:
    """The wall clock, for the partition's stream time while every source is idle."""

    TAG: ClassVar[str] = "tick"
    now_ms: int

    def to_json(self) -> dict[str, Any]:
        return {"v": VERSION, "t": self.TAG, "now_ms": self.now_ms}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tick:
        return cls(int(data["now_ms"]))

    def to_bytes(self) -> bytes:
        return _dumps(self.to_json())


Message = Routed | Watermark | Watermarks | Tick
_KINDS: dict[str, Any] = {
    Routed.TAG: Routed,
    Watermark.TAG: Watermark,
    Watermarks.TAG: Watermarks,
    Tick.TAG: Tick,
}


def _dumps(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data)


def from_bytes(raw: bytes | None) -> Message:
    """Parse an internal record; `MessageError` says what is wrong with it."""
    if raw is None:
        raise MessageError("empty internal record")
    try:
        data = orjson.loads(raw)
    except ValueError as exc:
        raise MessageError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MessageError("not a JSON object")
    if data.get("v") != VERSION:
        raise MessageError(f"unsupported internal message version {data.get('v')!r}")
    kind = _KINDS.get(data.get("t"))  # type: ignore[arg-type]
    if kind is None:
        raise MessageError(f"unknown internal message kind {data.get('t')!r}")
    try:
        message: Message = kind.from_json(data)
        if kind is Routed:
            object.__setattr__(message, "raw", raw)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        what = f"malformed {data.get('t')} message: {type(exc).__name__}: {exc}"
        raise MessageError(what) from None
    return message
