"""What agents share: decoding batches, state recovery, sending, and the batch commit.

Agents stay thin by calling three things here: `decode` (bytes -> validated
changes, or DLQ records), `partition_view` (a recovered partition's state),
and `commit` (send outputs and changelogs, flush, then write RocksDB; the
order and what it guarantees is documented in `tables.store`). The input
offsets are acknowledged by the agent's `take_events` loop only after
`commit` returns.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pssync.avro.codec import Codec, DecodeError, UnknownSchemaId, load_schema_text
from pssync.avro.contract import DLQ_TOPIC
from pssync.avro.jsonform import JsonForm, JsonFormError
from pssync.avro.registry import RegistryError
from pssync.connectors.kafka import (
    CORRELATION_HEADER,
    OutputProducer,
    read_partition,
    stable_partition,
)
from pssync.settings import Settings
from pssync.streams.changes import Change, ValidationError, to_change
from pssync.streams.flow import OPEN_INDEX, PARKED_INDEX
from pssync.streams.metrics import Metrics, StateCollector
from pssync.streams.outputs import Emit
from pssync.tables.store import PartitionStore, Table
from pssync.tables.view import StateView

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

    def add(self, bucket: dict[str, int], key: str, n: int = 1) -> None:
        bucket[key] = bucket.get(key, 0) + n


def inbound_from_event(settings: Settings, event: Any) -> Inbound:
    msg = event.message
    headers = msg.headers or ()
    if isinstance(headers, dict):
        headers = tuple(headers.items())
    return Inbound(
        settings.logical(msg.topic),
        int(msg.partition),
        int(msg.offset),
        msg.key,
        msg.value,
        tuple((str(k), v) for k, v in headers),
    )


class Runtime:
    def __init__(self, settings: Settings, codec: Codec, producer: OutputProducer) -> None:
        self.settings = settings
        self.codec = codec
        self.producer = producer
        self.stats = Stats()
        self.tables: dict[str, Table] = {}
        self.sources: dict[str, str] = {}
        self._forms: dict[str, JsonForm] = {}
        self._recovering: dict[tuple[str, int], asyncio.Future[None]] = {}
        self.assigned: set[tuple[str, int]] = set()
        self.assignment_seen = False
        self.state_dir = settings.data_dir / f"{settings.topic_prefix}{settings.app_id}"
        self.metrics = Metrics()
        self.metrics.add_collector(StateCollector(self.snapshot))
        # next offset to process per (physical topic, partition), for consumer lag
        self.positions: dict[tuple[str, int], int] = {}
        self.lag: dict[str, int] = {}
        self._lag_probe: Any = None

    # -- state ------------------------------------------------------------
    def table(self, name: str, source: str | None = None) -> Table:
        """A state table; `source` = the physical topic it is co-partitioned with."""
        if source is not None:
            self.sources[name] = source
        table = self.tables.get(name)
        if table is None:
            changelog = self.settings.internal_topic(f"{name}-changelog")
            table = Table(name, self.state_dir, changelog)
            self.tables[name] = table
        return table

    async def partition_view(self, table: Table, partition: int) -> StateView:
        """A view of one partition, after its store has caught up with the changelog."""
        await self.start_recovery(table, partition)
        return StateView(table.partition(partition))

    def start_recovery(self, table: Table, partition: int) -> asyncio.Future[None]:
        """Start (once) catching a partition's store up with its changelog."""
        slot = (table.name, partition)
        future = self._recovering.get(slot)
        if future is None:
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(None, self._recover, table, partition)
            self._recovering[slot] = future
        return future

    def recovering(self) -> list[str]:
        return sorted(f"{t}[{p}]" for (t, p), f in self._recovering.items() if not f.done())

    def _recover(self, table: Table, partition: int) -> None:
        store: PartitionStore = table.partition(partition)
        start = store.changelog_offset + 1
        started = time.monotonic()
        pending: dict[str, bytes | None] = {}
        last = None
        n = 0
        for key, value, offset in read_partition(
            self.settings, table.changelog_topic, partition, start
        ):
            pending[key.decode()] = value
            last = offset
            n += 1
            if len(pending) >= 5000:
                store.write(pending, last)
                pending = {}
        if pending or last is not None:
            store.write(pending, last)
        if n:
            log.info(
                "restored %s[%d]: %d changelog records in %.2fs",
                table.name,
                partition,
                n,
                time.monotonic() - started,
            )

    # -- what the owned partitions hold (gauges) -------------------------
    def snapshot(self) -> dict[str, Any]:
        open_counts: dict[str, int] = {}
        parked: dict[str, int] = {}
        keys: dict[str, int] = {}
        for table in list(self.tables.values()):
            for p in table.open_partitions():
                store = table.partition(p)
                for name, n in (store.get(OPEN_INDEX) or {}).items():
                    open_counts[name] = open_counts.get(name, 0) + n
                for name, n in (store.get(PARKED_INDEX) or {}).items():
                    parked[name] = parked.get(name, 0) + n
                keys[table.name] = keys.get(table.name, 0) + store.estimate_keys()
        return {
            "open": open_counts,
            "parked": parked,
            "keys": keys,
            "lag": dict(self.lag),
            "assigned": len(self.assigned),
            "ready": self.is_recovered(),
        }

    def refresh_lag(self) -> None:
        """Blocking: high watermarks of owned partitions minus our next offset."""
        from confluent_kafka import Consumer, TopicPartition

        if self._lag_probe is None:
            self._lag_probe = Consumer(
                {
                    "bootstrap.servers": self.settings.kafka_bootstrap,
                    "group.id": f"{self.settings.group_id}-lag-probe",
                }
            )
        lag: dict[str, int] = {}
        for topic, partition in sorted(self.assigned):
            try:
                _, high = self._lag_probe.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=2
                )
            except Exception:  # a probe failure leaves the last value, never the worker
                continue
            position = self.positions.get((topic, partition), 0)
            logical = self.settings.logical(topic)
            lag[logical] = lag.get(logical, 0) + max(0, high - position)
        self.lag = lag

    def is_recovered(self) -> bool:
        if not self.assignment_seen:
            return False
        return all(f.done() and not f.exception() for f in self._recovering.values())

    def forget_partitions(self, topic_partitions: Sequence[tuple[str, int]]) -> None:
        """On revoke: drop recovery marks (a later assignment catches up again)."""
        for _, p in topic_partitions:
            for table in self.tables.values():
                slot = (table.name, p)
                future = self._recovering.get(slot)
                if future is not None and future.done():
                    del self._recovering[slot]

    # -- decode -----------------------------------------------------------
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
                out.changes.append(
                    to_change(
                        record.topic,
                        key,
                        value,
                        record.partition,
                        record.offset,
                        record.header(CORRELATION_HEADER),
                    )
                )
            except UnknownSchemaId as exc:
                out.dead.append(self.dead_letter(record, exc, "decode", exc.reason))
            except DecodeError as exc:
                out.dead.append(self.dead_letter(record, exc, stage, exc.reason))
            except (ValidationError, JsonFormError, KeyError, TypeError) as exc:
                out.dead.append(self.dead_letter(record, exc, "validate", "invalid"))
        self.stats.tombstones += out.tombstones
        counted: dict[tuple[str, str], int] = {}
        for change in out.changes:
            counted[(change.topic, change.op)] = counted.get((change.topic, change.op), 0) + 1
        for record in records:
            if record.value is None:
                counted[(record.topic, "tombstone")] = (
                    counted.get((record.topic, "tombstone"), 0) + 1
                )
        if out.dead:
            counted[(records[0].topic, "none")] = len(out.dead)
        for (topic, op), n in counted.items():
            self.metrics.input_records.labels(topic, op).inc(n)
        return out

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
        value = {
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

    def failed(self, topic: str, partition: int, message: dict[str, Any], exc: Exception) -> Emit:
        """A dead letter for an internal message whose processing raised."""
        log.exception("processing failed on %s[%d]", topic, partition, exc_info=exc)
        change = message.get("change") or {}
        source = change.get("source") or {}
        record = Inbound(
            topic=self.settings.logical(topic),
            partition=partition,
            offset=int(source.get("offset", -1)),
            key=str(message.get("key", "")).encode(),
            value=json.dumps(message, separators=(",", ":")).encode(),
            headers=((CORRELATION_HEADER, str(change.get("correlation_id", "")).encode()),),
        )
        return self.dead_letter(record, exc, "process", "processing_failed")

    def log_decisions(self, emits: Sequence[Emit]) -> None:
        """One log line per business decision, with its correlation id (no personal data)."""
        for emit in emits:
            value = emit.value or {}
            if emit.kind == "command":
                what = "command {type} {entity_id} {command_id}".format_map(value)
            elif emit.kind in ("alert", "exception"):
                what = (
                    f"{emit.kind} {value.get('rule')} {value.get('state')} {value.get('entity_id')}"
                )
            else:
                continue
            log.info(what, extra={"correlation_id": emit.correlation_id})

    # -- send and commit --------------------------------------------------
    def send(self, emits: Sequence[Emit]) -> None:
        if log.isEnabledFor(logging.INFO):
            self.log_decisions(emits)
        self.metrics.observe(emits)
        for emit in emits:
            if emit.kind == "dlq":
                self._send_dlq(emit)
            else:
                self.producer.send(emit)
            self.stats.add(self.stats.outputs, emit.topic)

    def _send_dlq(self, emit: Emit) -> None:
        value = self.codec.encode_value(DLQ_TOPIC, emit.value)
        self.producer.send_raw(
            self.settings.topic(DLQ_TOPIC),
            None if emit.key is None else self.codec.encode_key(DLQ_TOPIC, emit.key),
            value,
            headers=[(CORRELATION_HEADER, emit.correlation_id.encode())],
        )

    def send_internal(
        self,
        topic: str,
        key: str,
        message: dict[str, Any],
        partition: int | None = None,
        partitions: int = 1,
        correlation_id: str | None = None,
    ) -> None:
        """Send a message to an internal topic, to `partition` or by key."""
        target = stable_partition(key, partitions) if partition is None else partition
        headers = [(CORRELATION_HEADER, correlation_id.encode())] if correlation_id else None
        self.producer.send_raw(
            topic,
            key.encode(),
            json.dumps(message, separators=(",", ":")).encode(),
            partition=target,
            headers=headers,
        )

    async def commit(self, views: Sequence[tuple[Table, int, StateView]]) -> None:
        """Send changelogs, flush every pending record, then write the stores."""
        writes = []
        for table, partition, view in views:
            changes = view.changes()
            for key, raw in changes.items():
                self.producer.send_raw(
                    table.changelog_topic, key.encode(), raw, partition=partition
                )
            writes.append((table, partition, changes))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.producer.flush)
        for table, partition, changes in writes:
            if changes:
                offset = self.producer.last_offsets.get((table.changelog_topic, partition))
                table.partition(partition).write(changes, offset)
        self.stats.batches += 1
