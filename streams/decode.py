"""Decoding: raw CDC records in, validated changes or dead letters out.

`Decoder.decode` takes a batch as consumed (`Inbound`: logical topic,
position, bytes) and returns a `Decoded` value: the changes that passed the
codec and the contract's checks, and a dead-letter record (`sync.dlq`) for
every one that did not, naming the stage, the error class and the message.
Nothing is dropped: each input ends as a change, a tombstone (counted), or a
dead letter. Writer schemas unknown to the codec are fetched once per batch,
off the event loop; while the registry is unreachable the batch waits and
retries (an outage is not a reason to dead-letter).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pssync.avro.codec import Codec, DecodeError, UnknownSchemaId, load_schema_text
from pssync.avro.contract import ACTIONS_TOPIC, DLQ_TOPIC
from pssync.avro.jsonform import JsonForm, JsonFormError
from pssync.avro.registry import RegistryError
from pssync.connectors.kafka import CORRELATION_HEADER
from pssync.settings import Settings
from pssync.streams.actions import to_action_change
from pssync.streams.changes import Change, ValidationError, to_change
from pssync.streams.metrics import Metrics
from pssync.streams.outputs import Emit

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Inbound:
    """A record as consumed: logical topic, position, raw bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name and v is not None:
                return v.decode(errors="replace")
        return None


@dataclass(slots=True)
class Decoded:
    changes: list[Change] = field(default_factory=list)
    dead: list[Emit] = field(default_factory=list)
    tombstones: int = 0


@dataclass(slots=True)
class Stats:
    """Counts since start; exported as metrics and used by tests and benchmarks."""

    records_in: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, int] = field(default_factory=dict)
    dlq: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    tombstones: int = 0
    batches: int = 0
    late: int = 0
    buffered: int = 0  # routed changes received into a keyed partition's buffer
    released: int = 0
    failed: int = 0  # released changes and timers whose processing raised (dead-lettered)
    timers: int = 0

    def add(self, bucket: dict[str, int], key: str, n: int = 1) -> None:
        bucket[key] = bucket.get(key, 0) + n


class Decoder:
    def __init__(self, settings: Settings, codec: Codec, metrics: Metrics, stats: Stats) -> None:
        self.settings = settings
        self.codec = codec
        self.metrics = metrics
        self.stats = stats
        self._forms: dict[str, JsonForm] = {}

    def _form(self, topic: str, part: str) -> JsonForm:
        form = self._forms.get(f"{topic}-{part}")
        if form is None:
            form = JsonForm(json.loads(load_schema_text(topic, part)))
            self._forms[f"{topic}-{part}"] = form
        return form

    async def decode(self, records: Sequence[Inbound]) -> Decoded:
        """Decode and validate a batch; what fails becomes a DLQ record."""
        live = [r for r in records if r.value is not None]
        unknown = self.codec.unknown_ids(r.value for r in live)
        unknown |= self.codec.unknown_ids(r.key for r in live)
        if unknown:
            await self._prefetch(unknown)
        out = Decoded()
        for record in records:
            self.stats.add(self.stats.records_in, record.topic)
            if record.value is None:
                out.tombstones += 1
                continue
            stage = "decode"
            try:
                key = None
                if record.key is not None:
                    key = self._form(record.topic, "key").to_json(
                        self.codec.decode_key(record.topic, record.key)
                    )
                value = self._form(record.topic, "value").to_json(
                    self.codec.decode_value(record.topic, record.value)
                )
                stage = "validate"
                if record.topic == ACTIONS_TOPIC:
                    change = to_action_change(
                        key,
                        value,
                        record.partition,
                        record.offset,
                        record.header(CORRELATION_HEADER),
                    )
                else:
                    change = to_change(
                        record.topic,
                        key,
                        value,
                        record.partition,
                        record.offset,
                        record.header(CORRELATION_HEADER),
                    )
                out.changes.append(change)
            except UnknownSchemaId as exc:
                out.dead.append(self.dead_letter(record, exc, "decode", exc.reason))
            except DecodeError as exc:
                out.dead.append(self.dead_letter(record, exc, stage, exc.reason))
            except (ValidationError, JsonFormError, KeyError, TypeError, ValueError) as exc:
                out.dead.append(self.dead_letter(record, exc, "validate", "invalid"))
        self.stats.tombstones += out.tombstones
        self._count(records, out)
        return out

    def _count(self, records: Sequence[Inbound], out: Decoded) -> None:
        counted: dict[tuple[str, str], int] = {}
        for change in out.changes:
            counted[(change.topic, change.op)] = counted.get((change.topic, change.op), 0) + 1
        for record in records:
            if record.value is None:
                slot = (record.topic, "tombstone")
                counted[slot] = counted.get(slot, 0) + 1
        if out.dead:
            counted[(records[0].topic, "none")] = len(out.dead)
        for (topic, op), n in counted.items():
            self.metrics.input_records.labels(topic, op).inc(n)

    async def _prefetch(self, schema_ids: set[int]) -> None:
        """Fetch writer schemas; while the registry is unreachable, wait and retry
        (records are not dead-lettered for an outage: they decode once it is back)."""
        delay = 0.5
        while True:
            try:
                await self.codec.prefetch(schema_ids)
                return
            except RegistryError as exc:
                log.warning("schema registry unavailable, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def dead_letter(self, record: Inbound, exc: BaseException, stage: str, reason: str) -> Emit:
        self.stats.add(self.stats.dlq, reason)
        self.metrics.dlq.labels(reason).inc()
        log.warning(
            "dead-lettered %s[%d]@%d at %s: %s: %s",
            record.topic,
            record.partition,
            record.offset,
            stage,
            type(exc).__name__,
            exc,
        )
        value: dict[str, Any] = {
            "original_topic": self.settings.topic(record.topic),
            "partition": record.partition,
            "offset": record.offset,
            "key": record.key,
            "value": record.value,
            "headers": [{"key": k, "value": v} for k, v in record.headers],
            "error_class": type(exc).__name__,
            "error_message": str(exc)[:2000],
            "stage": stage,
            "failed_at": dt.datetime.now(tz=dt.UTC),
        }
        correlation = record.header(CORRELATION_HEADER) or (
            f"dlq:{record.topic}:{record.partition}:{record.offset}"
        )
        return Emit(DLQ_TOPIC, record.key, value, correlation, "dlq")
