"""The queue view's input: every partition of the output topics, read on every worker.

A background thread (confluent-kafka) assigns itself every partition of
`sync.exceptions`, `sync.drift` and `ops.action_outcomes` from the beginning, with
no consumer group (it commits nothing and joins nothing), decodes each record into
the contract's JSON form (`connectors.jsonl.decode_message`, the same decoding as
`pssync consume`) and hands batches to the event loop, where `QueueView.apply` runs:
the view is only ever touched on the loop, so it needs no lock.

Why a view of the output topics, and not a query to the workers owning the data:
the queue is a question about the whole firm (all partitions: oldest first, with
filters and paging) that no single worker's state answers, while every exception,
alert and outcome is already on these topics, in order per key. Reading them on
every worker makes any worker answer the queue alone (no scatter-gather, no merge of
partial pages, nothing to forward), at the cost of memory proportional to the
number of exceptions and alerts (small next to the data they are about) and a
start-up read of the topics. What the view shows lags the flows by the time a
record takes from the producer to this consumer; an action is still validated
against the state the owning flow holds when it applies (NOT_APPLICABLE otherwise).

The same thread reads the workers' ownership claims (`api.forward`, the internal
topic `<prefix><app_id>-api-peers`, which it creates when missing) for the
directory forwarding relies on; `peers_topic_ready` is set once that topic exists.

`ready` is set once the view holds everything that was on the topics when the feed
started. Partitions added to a topic later are not picked up until a restart.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from pssync.api.forward import PEERS_TOPIC, Claim
from pssync.avro.codec import Codec
from pssync.avro.contract import DRIFT_TOPIC, EXCEPTIONS_TOPIC, OUTCOMES_TOPIC
from pssync.connectors.jsonl import Forms, decode_message
from pssync.connectors.kafka import TopicSpec, client_config, ensure_topics
from pssync.settings import Settings

log = logging.getLogger(__name__)

FEED_TOPICS = (EXCEPTIONS_TOPIC, DRIFT_TOPIC, OUTCOMES_TOPIC)
BATCH = 1000
POLL_S = 0.25


@dataclass(frozen=True, slots=True)
class FeedRecord:
    """One decoded output record, as `QueueView.apply` takes it, or (`claim` set) a
    worker's ownership claim from the peers topic."""

    topic: str
    partition: int
    offset: int
    key: Any
    value: dict[str, Any] | None
    timestamp_ms: int
    claim: Claim | None = None


Deliver = Callable[[list[FeedRecord], bool], None]


class Feed:
    """Reads the output topics in a thread; `deliver(batch, caught_up)` is called from
    that thread (the caller hops to its event loop)."""

    def __init__(self, settings: Settings, codec: Codec, deliver: Deliver) -> None:
        self.settings = settings
        self.codec = codec
        self.deliver = deliver
        self.ready = threading.Event()
        self.peers_topic = settings.internal_topic(PEERS_TOPIC)
        self.peers_topic_ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._forms = Forms()
        self.failures = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ops-feed", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _consumer(self) -> Any:
        return Consumer(
            client_config(
                self.settings,
                **{
                    # never joined nor committed: a name only because librdkafka wants one
                    "group.id": f"{self.settings.group_id}-opsview-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    # exactly_once: only what committed transactions wrote; their commit
                    # markers take offsets, so the end is seen as an end-of-partition event
                    "isolation.level": "read_committed",
                    "enable.partition.eof": True,
                },
            )
        )

    def _assign(self, consumer: Any) -> dict[tuple[str, int], int]:
        """Assign every partition from the beginning; returns each one's end now (what
        the view must hold to be `ready`). Retries until every topic is there."""
        while not self._stop.is_set():
            try:
                if not self.peers_topic_ready.is_set():
                    ensure_topics(self.settings, [TopicSpec(self.peers_topic, 1, True)])
                    self.peers_topic_ready.set()
                ends: dict[tuple[str, int], int] = {}
                assignment = []
                physical_topics = [self.settings.topic(t) for t in FEED_TOPICS]
                for physical in [*physical_topics, self.peers_topic]:
                    meta = consumer.list_topics(physical, timeout=10).topics.get(physical)
                    if meta is None or meta.error is not None or not meta.partitions:
                        raise LookupError(f"topic {physical} is not there yet")
                    for p in sorted(meta.partitions):
                        tp = TopicPartition(physical, p, OFFSET_BEGINNING)
                        low, high = consumer.get_watermark_offsets(tp, timeout=10)
                        if high > low:
                            ends[(physical, p)] = high
                        assignment.append(tp)
                consumer.assign(assignment)
                return ends
            except Exception as exc:  # Kafka not there yet: the API answers from an empty view
                log.warning("ops feed: cannot assign the output topics yet (%s); retrying", exc)
                self._stop.wait(2.0)
        return {}

    def _run(self) -> None:
        consumer = self._consumer()
        try:
            pending = self._assign(consumer)
            if not pending:
                self.deliver([], True)
                self.ready.set()
            while not self._stop.is_set():
                msgs = consumer.consume(BATCH, timeout=POLL_S)
                batch = []
                for msg in msgs:
                    error = msg.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            self._failed(f"consume: {error}")
                        else:
                            place = (msg.topic(), msg.partition())
                            if place in pending and msg.offset() >= pending[place]:
                                del pending[place]
                        continue
                    record = self._decode(msg)
                    if record is not None:
                        batch.append(record)
                    place = (msg.topic(), msg.partition())
                    if place in pending and msg.offset() + 1 >= pending[place]:
                        del pending[place]
                caught_up = not pending and not self.ready.is_set()
                if batch or caught_up:
                    self.deliver(batch, caught_up)
                if caught_up:
                    self.ready.set()
        except Exception:
            log.exception("ops feed stopped: the queue view no longer follows the topics")
        finally:
            consumer.close()

    def _decode(self, msg: Any) -> FeedRecord | None:
        if msg.topic() == self.peers_topic:
            if msg.value() is None:
                return None
            try:
                claim = Claim.from_bytes(msg.value())
            except ValueError:
                self._failed(f"{self.peers_topic}@{msg.offset()}: not a claim, skipped")
                return None
            return FeedRecord(PEERS_TOPIC, 0, msg.offset(), None, None, 0, claim)
        out = decode_message(self.settings, self.codec, self._forms, msg)
        if "error" in out:
            # not the contract's: nothing the view can show (the record is not logged)
            self._failed(f"{out['topic']}[{out['partition']}]@{out['offset']} undecodable, skipped")
            return None
        _, timestamp = msg.timestamp()
        return FeedRecord(
            out["topic"],
            out["partition"],
            out["offset"],
            out["key"],
            out["value"],
            int(timestamp) if timestamp and timestamp > 0 else int(time.time() * 1000),
        )

    def _failed(self, what: str) -> None:
        self.failures += 1
        if self.failures <= 10 or self.failures % 1000 == 0:
            log.warning("ops feed: %s (%d so far)", what, self.failures)
