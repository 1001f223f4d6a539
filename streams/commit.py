"""Emit and commit: outputs, dead letters and internal messages out; a batch made durable.

`Emitter.send` hands outputs to the producer (logging each business decision
with its correlation id, counting it in the metrics); `send_internal` sends a
typed message to an internal keyed topic. `Emitter.commit` is the batch's
commit, in the order `tables.store` documents and relies on:

1. every changed key of every view touched becomes a changelog record;
2. the producer is flushed: outputs, internal messages and changelogs are all
   acknowledged by Kafka;
3. each view's changes are written to its RocksDB store in one WriteBatch, with
   the changelog offset they correspond to;
and only then does the agent let Faust acknowledge the input offsets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from pssync.avro.codec import Codec
from pssync.avro.contract import DLQ_TOPIC
from pssync.connectors.kafka import CORRELATION_HEADER, OutputProducer, stable_partition
from pssync.settings import Settings
from pssync.streams.decode import Stats
from pssync.streams.messages import Message
from pssync.streams.metrics import Metrics
from pssync.streams.outputs import Emit
from pssync.tables.store import Table
from pssync.tables.view import StateView

log = logging.getLogger(__name__)
# one line per business decision, under a name operators can filter on
decisions = logging.getLogger("pssync.decisions")


class Emitter:
    def __init__(
        self,
        settings: Settings,
        codec: Codec,
        producer: OutputProducer,
        metrics: Metrics,
        stats: Stats,
    ) -> None:
        self.settings = settings
        self.codec = codec
        self.producer = producer
        self.metrics = metrics
        self.stats = stats

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
            decisions.info(what, extra={"correlation_id": emit.correlation_id})

    def send(self, emits: Sequence[Emit]) -> None:
        if decisions.isEnabledFor(logging.INFO):
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
        message: Message | bytes,
        key: str,
        partition: int | None = None,
        correlation_id: str | None = None,
    ) -> None:
        """Send a message to an internal topic: to `partition`, or to its key's partition.
        A message sent to many partitions can be given encoded (`to_bytes`), once."""
        target = stable_partition(key, self.settings.partitions) if partition is None else partition
        headers = [(CORRELATION_HEADER, correlation_id.encode())] if correlation_id else None
        raw = message if isinstance(message, bytes) else message.to_bytes()
        self.producer.send_raw(topic, key.encode(), raw, partition=target, headers=headers)

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
