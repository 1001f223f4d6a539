"""The benchmark's own Kafka reading and writing: the raw ceiling, timestamps, a paced feed.

Nothing here is pssync's data path. `ceiling` is the baseline every figure is a
ratio of: a bare confluent-kafka consumer reading the CDC topics to their end
and decoding each record with fastavro (through the registry's writer schema),
nothing else. `timestamps` reads record timestamps (no decoding) to time the
stages from outside; `Feed` replays pre-encoded records at an offered rate.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from pssync.avro.codec import Codec
from pssync.connectors.jsonl import Forms, parse_line
from pssync.connectors.kafka import CORRELATION_HEADER, client_config
from pssync.settings import Settings


def _consumer(settings: Settings, **config: Any) -> Consumer:
    return Consumer(
        client_config(
            settings,
            **{
                "group.id": f"pssync-bench-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                # not what aborted transactions held (exactly_once)
                "isolation.level": "read_committed",
                "fetch.max.bytes": 64 * 1024 * 1024,
                "max.partition.fetch.bytes": 8 * 1024 * 1024,
                # no 1 s pause once 100k records are queued (see connectors.kafka)
                "fetch.queue.backoff.ms": 10,
                **config,
            },
        )
    )


def _ends(consumer: Consumer, physical: Iterable[str]) -> dict[tuple[str, int], int]:
    ends = {}
    for topic in physical:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        for p in meta.partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > 0:
                ends[(topic, p)] = high
    return ends


def read_all(settings: Settings, physical: list[str]) -> Iterator[Any]:
    """Every record of `physical` topics up to their end at the call (confluent Messages)."""
    consumer = _consumer(settings)
    try:
        ends = _ends(consumer, physical)
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends])
        left = dict(ends)
        while left:
            for msg in consumer.consume(10_000, timeout=1.0):
                slot = (msg.topic(), msg.partition())
                error = msg.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(str(error))
                    # at the end (a transaction's commit marker can be the last offset)
                    if slot in left and msg.offset() >= left[slot]:
                        del left[slot]
                    continue
                yield msg
                if slot in left and msg.offset() + 1 >= left[slot]:
                    del left[slot]
    finally:
        consumer.close()


def ceiling(settings: Settings, codec: Codec, topics: list[str]) -> tuple[int, float]:
    """(records, seconds): consume every CDC record and decode key and value, nothing else."""
    physical = [settings.topic(t) for t in topics]
    logical = {settings.topic(t): t for t in topics}
    n = 0
    started = time.perf_counter()
    for msg in read_all(settings, physical):
        topic = logical[msg.topic()]
        value = msg.value()
        if value is None:
            continue
        try:
            codec.decode_value(topic, value)
            key = msg.key()
            if key is not None:
                codec.decode_key(topic, key)
        except Exception:  # the simulator's undecodable records: read, like pssync reads them
            pass
        n += 1
    return n, time.perf_counter() - started


def warm_codec(settings: Settings, codec: Codec, topics: list[str]) -> None:
    """Fetch every writer schema the topics use (outside any timing)."""
    ids: set[int] = set()
    for msg in read_all(settings, [settings.topic(t) for t in topics]):
        ids |= codec.unknown_ids([msg.key(), msg.value()])
    for schema_id in ids:
        codec.fetch_writer(schema_id)


@dataclass
class Stamps:
    """Record timestamps (ms, the producer's create time) per physical topic."""

    by_topic: dict[str, list[int]] = field(default_factory=dict)
    first: dict[str, int] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)

    def add(self, topic: str, ts: int) -> None:
        self.by_topic.setdefault(topic, []).append(ts)
        self.first[topic] = min(ts, self.first.get(topic, ts))
        self.last[topic] = max(ts, self.last.get(topic, ts))


def timestamps(
    settings: Settings, physical: list[str], keep: Callable[[Any], bool] | None = None
) -> Stamps:
    stamps = Stamps()
    for msg in read_all(settings, physical):
        if keep is None or keep(msg):
            stamps.add(msg.topic(), msg.timestamp()[1])
    return stamps


@dataclass(frozen=True)
class Encoded:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    snapshot: bool = False  # a Debezium snapshot read (op "r")


def encode_file(settings: Settings, codec: Codec, path: Path) -> list[Encoded]:
    """The simulator's JSONL lines, encoded once, before any timing."""
    forms = Forms()
    out = []
    with path.open(encoding="utf-8") as lines:
        for line_no, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            topic, key, value, headers = parse_line(forms, line_no, text)
            if not any(k == CORRELATION_HEADER for k, _ in headers):
                headers.append((CORRELATION_HEADER, str(uuid.uuid4()).encode()))
            out.append(
                Encoded(
                    settings.topic(topic),
                    None if key is None else codec.encode_key(topic, key),
                    None if value is None else codec.encode_value(topic, value),
                    headers,
                    value is not None and value.get("op") == "r",
                )
            )
    return out


def feed(settings: Settings, records: list[Encoded], rate: float | None) -> tuple[int, float]:
    """Produce `records` in order at `rate` records/s (None: at once); (sent, seconds)."""
    producer = Producer(
        client_config(settings, **{"linger.ms": 1, "acks": "all", "enable.idempotence": True})
    )
    started = time.perf_counter()
    for i, r in enumerate(records):
        due = started + i / rate if rate else 0.0
        now = time.perf_counter()
        if due > now + 0.001:
            producer.poll(0)
            time.sleep(due - now)
        while True:
            try:
                producer.produce(r.topic, r.value, r.key, headers=r.headers)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)
    return len(records), max(time.perf_counter() - started, 1e-9)


def causes(value: dict[str, Any]) -> list[tuple[str, int, int]]:
    """An output's causation as (logical topic, partition, offset) triples."""
    return [(c["topic"], int(c["partition"]), int(c["offset"])) for c in value.get("causation", [])]


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)
