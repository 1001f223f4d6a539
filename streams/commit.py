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

The processing guarantee (`Settings.processing_guarantee`) is kept here:

- at_least_once (default): step 2 is a flush. A crash between it and the offset
  commit replays the batch; its outputs are sent again with the same deterministic
  ids (command ids, finding states), and the stores skip changelog records they
  already hold. Consumers see each replayed record twice, harmlessly.
- exactly_once: a batch is one Kafka transaction (`Emitter.batch`). Step 2 adds the
  batch's input offsets to it (`send_offsets_to_transaction`) and commits: outputs,
  internal messages, changelogs and offsets are all visible, or none is. Faust's own
  offset commits are off (`pssync.faust_eos`): the transaction is the only writer of
  the group's offsets. Step 3 follows the commit, so a crash before it leaves a store
  behind its changelog, which the restore catches up on (read_committed). One producer
  serves every agent of the worker, so batches take turns (`Emitter._turn`): a
  transaction never holds half of another agent's batch. Sends outside a batch (the
  ticks, idle sources' watermarks) are small transactions of their own (`send_alone`).
  The transactional.id is the worker's (`Settings.transactional_id`): a restart
  fences the crashed incarnation and aborts its open transaction. The offsets carry
  the group id only (no member or generation: KIP-447's zombie check is not used),
  so a worker cut off from the group but still alive can commit one batch after its
  partitions moved; a crashed or restarted one cannot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from pssync.avro.codec import Codec
from pssync.avro.contract import DLQ_TOPIC
from pssync.connectors.kafka import CORRELATION_HEADER, OutputProducer, stable_partition
from pssync.settings import Settings
from pssync.streams.decode import Inbound, Stats
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
        # exactly_once: one batch (transaction) at a time; the group's offsets' owner
        self._turn = asyncio.Lock() if settings.exactly_once else None
        self._offsets: Mapping[tuple[str, int], int] | None = None
        self._group_metadata: Any = None

    def start_transactions(self, group_metadata: Any) -> None:
        """exactly_once: fence the previous incarnation; `group_metadata` is the consumer
        group's (`confluent_kafka.Consumer.consumer_group_metadata`)."""
        self._group_metadata = group_metadata
        self.producer.init_transactions()

    def next_offsets(self, records: Sequence[Inbound]) -> dict[tuple[str, int], int]:
        """(physical topic, partition) -> the offset after the batch's last record of it."""
        out: dict[tuple[str, int], int] = {}
        for r in records:
            tp = (self.settings.topic(r.topic), r.partition)
            out[tp] = max(out.get(tp, 0), r.offset + 1)
        return out

    @asynccontextmanager
    async def batch(self, records: Sequence[Inbound]) -> AsyncIterator[None]:
        """The sends of the batch of `records` (none for timers' sends), which `commit`
        ends.

        at_least_once: nothing to do. exactly_once: waits for its turn, then the sends
        until `commit` are one transaction, with the records' next offsets; aborted if
        the block raises (the worker stops; its successor replays the batch)."""
        if self._turn is None:
            yield
            return
        async with self._turn:
            self.producer.begin_transaction()
            self._offsets = self.next_offsets(records)
            try:
                yield
                if self._offsets is not None:  # a batch that sent nothing to commit
                    await self.commit([])
            except BaseException:
                log.warning("batch failed: its transaction is aborted")
                await asyncio.get_running_loop().run_in_executor(
                    None, self.producer.abort_transaction
                )
                raise
            finally:
                self._offsets = None

    async def send_alone(self, send: Callable[[], None]) -> None:
        """Sends outside any batch (timers): exactly_once, in a transaction of their own."""
        if self._turn is None:
            send()
            self.producer.poll()
            return
        async with self.batch(()):
            send()
            await self.commit([])

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
        """Send changelogs, flush every pending record (exactly_once: commit the batch's
        transaction), then write the stores."""
        writes = []
        for table, partition, view in views:
            changes = view.changes()
            for key, raw in changes.items():
                self.producer.send_raw(
                    table.changelog_topic, key.encode(), raw, partition=partition
                )
            writes.append((table, partition, changes))
        loop = asyncio.get_running_loop()
        if self._turn is None:
            await loop.run_in_executor(None, self.producer.flush)
        else:
            if self._offsets is None:
                raise RuntimeError("exactly_once: commit outside Emitter.batch")
            offsets, metadata = self._offsets, self._group_metadata
            await loop.run_in_executor(None, self.producer.commit_transaction, offsets, metadata)
            self._offsets = None
        for table, partition, changes in writes:
            if changes:
                offset = self.producer.last_offsets.get((table.changelog_topic, partition))
                table.partition(partition).write(changes, offset)
        self.stats.batches += 1
