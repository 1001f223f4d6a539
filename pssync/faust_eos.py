"""Faust's consumer under pssync's exactly_once (`Settings.processing_guarantee`).

pssync's batches commit their input offsets inside their own Kafka transaction
(`streams.commit.Emitter.batch`), through the confluent-kafka producer that sends
their outputs. Faust's consumer then has two things to do differently:

- read with `isolation.level=read_committed`: the keyed agents read the internal
  topics the ingest agents write transactionally, and must not see what an aborted
  batch sent (nor wait past it: the consumer stops at the last stable offset);
- not commit offsets itself. Faust commits what the agents acknowledged, on a timer
  and on rebalance; a commit of an older position landing after a newer
  transactional one would move the group's offset back, and a crash would replay
  batches whose outputs were already committed.

Faust's own `processing_guarantee="exactly_once"` is not used: it runs a
transactional aiokafka producer per input partition and commits through Faust's
producer, which pssync's outputs do not go through.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP


class ReadCommittedThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads the setting when it starts its fetcher (after this)
        consumer._isolation_level = "read_committed"
        return consumer


class TransactionalConsumer(AIOKafkaConsumer):
    """Faust's aiokafka consumer, reading committed records, leaving commits to pssync."""

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return ReadCommittedThread(self, loop=self.loop, beacon=self.beacon)

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        # the batch's transaction committed these offsets already (streams.commit)
        return True


def install(app: faust.App) -> None:
    """Make `app`'s worker consumer a `TransactionalConsumer` (before it starts)."""
    app.transport.Consumer = TransactionalConsumer  # type: ignore[misc]
