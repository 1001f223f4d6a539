"""In and out of Kafka: topic administration, the output producer, changelog replay.

The producer is confluent-kafka (librdkafka), idempotent with `acks=all`:
`flush()` returns only once every record sent so far is acknowledged, which is
the first step of the batch commit order documented in `tables.store`.

Every confluent-kafka client pssync opens starts from `client_config`, which carries
the security settings (SASL, TLS: `pssync.security`). `connect` is the first contact
at start-up: a refused password or a failed TLS handshake becomes one line saying
which settings to check, instead of librdkafka retrying in the log.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined,unused-ignore]

from pssync.avro.codec import Codec, load_schema_text
from pssync.avro.contract import ALL_TOPICS, COMPACTED_TOPICS
from pssync.avro.jsonform import JsonForm
from pssync.security import librdkafka_config
from pssync.settings import Settings
from pssync.streams.outputs import Emit

log = logging.getLogger(__name__)

CORRELATION_HEADER = "correlation_id"


class KafkaUnavailable(RuntimeError):
    """Kafka did not answer at the configured bootstrap servers."""


class KafkaRefused(KafkaUnavailable):
    """Kafka answered but refused this client's credentials or TLS handshake."""


def stable_partition(key: str, partitions: int) -> int:
    """The partition of an internal-topic key: CRC32 of its UTF-8 bytes, mod count."""
    return zlib.crc32(key.encode()) % partitions


# librdkafka's own log lines go through Python logging (one per line, with the rest of
# the process's log), never straight to stderr in the middle of a CLI's output
_librdkafka = logging.getLogger("pssync.kafka.client")


def client_config(settings: Settings, **config: Any) -> dict[str, Any]:
    """The configuration every Kafka client pssync opens starts from: the bootstrap
    servers and the security settings (SASL, TLS), then the caller's own."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "logger": _librdkafka,
        **librdkafka_config(settings),
        **config,
    }


def admin(settings: Settings) -> AdminClient:
    return AdminClient(client_config(settings))


class _HeldLog(logging.Logger):
    """librdkafka's log during the first contact: held while it is not known to succeed
    (its retries of a refused login would bury the one line that says why), passed on
    to the usual logger after."""

    def __init__(self) -> None:
        super().__init__(_librdkafka.name)
        self.held: deque[logging.LogRecord] = deque(maxlen=50)
        self.passing = False

    def handle(self, record: logging.LogRecord) -> None:
        if self.passing:
            _librdkafka.handle(record)
        else:
            self.held.append(record)


def refusal(settings: Settings, errors: Iterable[KafkaError]) -> KafkaRefused | None:
    """The clear error for what librdkafka reported while connecting, if it was a refusal
    (SASL) or a failed TLS handshake; None for anything else (e.g. nobody listening)."""
    at = f"Kafka at {settings.kafka_bootstrap}"
    for error in errors:
        reason = _reason(error.str())
        if error.code() == KafkaError._AUTHENTICATION:
            mechanism = settings.kafka_sasl_mechanism
            if "unsupported sasl mechanism" in reason.lower():
                return KafkaRefused(
                    f"{at} does not accept SASL mechanism {mechanism} ({reason}): "
                    "check PSSYNC_KAFKA_SASL_MECHANISM"
                )
            if settings.kafka_security_protocol.startswith("SASL_"):
                return KafkaRefused(
                    f"{at} refused the SASL credentials of user "
                    f"{settings.kafka_sasl_username!r} ({mechanism}): check "
                    "PSSYNC_KAFKA_SASL_USERNAME / PSSYNC_KAFKA_SASL_PASSWORD_FILE"
                )
            return KafkaRefused(
                f"{at} refused the connection ({reason}): check "
                "PSSYNC_KAFKA_SECURITY_PROTOCOL and the SASL settings"
            )
        if "bad certificate" in reason or "certificate required" in reason:
            return KafkaRefused(
                f"{at} refused this client's TLS certificate ({reason}): check "
                "PSSYNC_KAFKA_SSL_CERT_FILE / PSSYNC_KAFKA_SSL_KEY_FILE (the broker requires "
                "a client certificate signed by a CA it trusts)"
            )
        if error.code() == KafkaError._SSL:
            return KafkaRefused(
                f"{at}: TLS handshake failed ({reason}): check PSSYNC_KAFKA_SSL_CA_FILE "
                "and PSSYNC_KAFKA_SECURITY_PROTOCOL"
            )
    return None


def _reason(text: str) -> str:
    """librdkafka's error without the broker prefix and its timing suffix."""
    text = text.split("/bootstrap: ", 1)[-1]
    return text.split(" (after ", 1)[0]


def connect(settings: Settings, timeout_s: float = 5.0) -> tuple[AdminClient, Any]:
    """First contact: an admin client and the cluster's metadata (`list_topics`).

    Raises `KafkaRefused` with one line naming the settings to check as soon as the
    broker refuses the credentials or a TLS handshake fails, and `KafkaUnavailable`
    when it does not answer within `timeout_s`. The admin client is the caller's to
    use afterwards."""
    errors: deque[KafkaError] = deque(maxlen=50)
    log_ = _HeldLog()
    client = AdminClient(client_config(settings, logger=log_, error_cb=errors.append))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            metadata = client.list_topics(timeout=min(1.0, max(0.1, timeout_s)))
            break
        except KafkaException as exc:
            client.poll(0)  # error_cb and the log are served by poll
            refused = refusal(settings, errors)
            if refused is not None:
                raise refused from None
            if time.monotonic() >= deadline:
                seen = [_reason(r.getMessage()) for r in log_.held if r.levelno >= logging.WARNING]
                last = seen[-1].split("]: ", 1)[-1] if seen else str(exc)
                raise KafkaUnavailable(
                    f"Kafka at {settings.kafka_bootstrap} did not answer within "
                    f"{timeout_s:.0f}s ({last}; PSSYNC_KAFKA_SECURITY_PROTOCOL="
                    f"{settings.kafka_security_protocol}); start it with `pssync dev up` or "
                    "set PSSYNC_KAFKA_BOOTSTRAP"
                ) from None
    log_.passing = True
    return client, metadata


def check_kafka(settings: Settings, timeout_s: float = 5.0) -> None:
    connect(settings, timeout_s)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False


def contract_topic_specs(
    settings: Settings, partitions: int, overrides: dict[str, int] | None = None
) -> list[TopicSpec]:
    overrides = overrides or {}
    return [
        TopicSpec(settings.topic(t), overrides.get(t, partitions), t in COMPACTED_TOPICS)
        for t in ALL_TOPICS
    ]


def ensure_topics(settings: Settings, specs: Iterable[TopicSpec]) -> dict[str, str]:
    """Create the topics that do not exist yet; returns topic -> 'created'|'exists'."""
    client = admin(settings)
    try:
        existing = client.list_topics(timeout=10).topics
    except KafkaException as exc:
        raise KafkaUnavailable(f"Kafka at {settings.kafka_bootstrap}: {exc}") from None
    wanted = {s.name: s for s in specs}
    result = {name: "exists" for name in wanted if name in existing}
    new = [
        NewTopic(
            s.name,
            num_partitions=s.partitions,
            replication_factor=-1,
            config={"cleanup.policy": "compact"} if s.compacted else {},
        )
        for name, s in wanted.items()
        if name not in existing
    ]
    if new:
        for name, future in client.create_topics(new, operation_timeout=30).items():
            try:
                future.result()
                result[name] = "created"
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" in str(exc):
                    result[name] = "exists"
                else:
                    raise
    return result


def partition_count(settings: Settings, topic: str) -> int | None:
    meta = admin(settings).list_topics(topic=topic, timeout=10).topics.get(topic)
    if meta is None or meta.error is not None:
        return None
    return len(meta.partitions)


def group_metadata(settings: Settings) -> Any:
    """The consumer group's metadata that `send_offsets_to_transaction` asks for: the group
    id only, from a consumer that never joins (the broker then checks no generation)."""
    consumer = Consumer(client_config(settings, **{"group.id": settings.group_id}))
    try:
        return consumer.consumer_group_metadata()
    finally:
        consumer.close()


class OutputProducer:
    """Encodes `Emit`s through the codec and sends them; tracks delivery."""

    def __init__(self, settings: Settings, codec: Codec, **config: Any) -> None:
        self.settings = settings
        self.codec = codec
        self._forms: dict[str, JsonForm] = {}
        self._producer = Producer(
            client_config(
                settings,
                **{
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    "compression.type": "lz4",
                    "queue.buffering.max.messages": 500_000,
                    **config,
                },
            )
        )
        self.errors: list[str] = []
        self.sent = 0
        self.last_offsets: dict[tuple[str, int], int] = {}

    def _form(self, topic: str) -> JsonForm:
        form = self._forms.get(topic)
        if form is None:
            form = JsonForm(json.loads(load_schema_text(topic, "value")))
            self._forms[topic] = form
        return form

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(f"{msg.topic()}: {err}")
        else:
            self.last_offsets[(msg.topic(), msg.partition())] = msg.offset()

    def _produce(self, **kwargs: Any) -> None:
        while True:
            try:
                self._producer.produce(on_delivery=self._on_delivery, **kwargs)
                self.sent += 1
                return
            except BufferError:
                self._producer.poll(0.1)

    def send(self, emit: Emit, native: bool = False) -> None:
        """Send one output; `native` means the value is already in Avro form."""
        topic = emit.topic
        value: bytes | None = None
        if emit.value is not None:
            avro_value = emit.value if native else self._form(topic).from_json(emit.value)
            value = self.codec.encode_value(topic, avro_value)
        key = None if emit.key is None else self.codec.encode_key(topic, emit.key)
        self._produce(
            topic=self.settings.topic(topic),
            key=key,
            value=value,
            headers=[(CORRELATION_HEADER, emit.correlation_id.encode())],
        )

    def send_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"topic": topic, "key": key, "value": value}
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = headers
        self._produce(**kwargs)

    def poll(self) -> None:
        self._producer.poll(0)

    # -- transactions (exactly_once; `streams.commit.Emitter.batch` drives them) -----------
    def init_transactions(self, timeout_s: float = 60.0) -> None:
        """Register the transactional.id: fences an older producer with the same id and
        aborts the transaction it left open (a crashed worker's last batch)."""
        self._producer.init_transactions(timeout_s)

    def begin_transaction(self) -> None:
        self._producer.begin_transaction()

    def commit_transaction(
        self,
        offsets: Mapping[tuple[str, int], int],
        group_metadata: Any,
        timeout_s: float = 60.0,
    ) -> None:
        """Flush (a delivery error raises before anything commits), add the input offsets
        to the transaction, and commit it: outputs, changelogs and offsets, or none."""
        self.flush(timeout_s)
        if offsets:
            positions = [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]
            self._producer.send_offsets_to_transaction(positions, group_metadata, timeout_s)
        self._producer.commit_transaction(timeout_s)

    def abort_transaction(self, timeout_s: float = 60.0) -> None:
        """Drop what the open transaction sent (read_committed consumers never see it)."""
        self.errors.clear()
        self._producer.abort_transaction(timeout_s)

    def flush(self, timeout_s: float = 60.0) -> None:
        """Block until every record is acknowledged; raise on any delivery error."""
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise KafkaException(f"{remaining} records not delivered within {timeout_s}s")
        if self.errors:
            errors, self.errors = self.errors, []
            raise KafkaException("delivery failed: " + "; ".join(errors[:5]))


# The restore consumer's fetching. librdkafka keeps up to `queued.min.messages` (100,000)
# records per partition fetched ahead, and once there, waits `fetch.queue.backoff.ms`
# (default 1 s) before fetching again: a restore drains 100,000 small records in well
# under that, then waited. Asked again after 10 ms, it reads twice as fast (bench/rebuild.py);
# the prefetch stays bounded by `queued.max.messages.kbytes` (64 MB).
RESTORE_CONSUMER_CONFIG: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.partition.eof": True,
    "fetch.queue.backoff.ms": 10,
}
RESTORE_BATCH = 5000  # records per `consume` call (at most)
RESTORE_WAIT_S = 0.2  # longest wait of one `consume` call for a batch that is not full


def read_partition(
    settings: Settings,
    topic: str,
    partition: int,
    start: int,
    stall_timeout_s: float = 60.0,
    on_total: Callable[[int], None] | None = None,
) -> Iterator[tuple[bytes, bytes | None, int]]:
    """Every record of one partition from offset `start` to its end when the read began.

    There is no deadline on the whole read, however long: it fails only when no
    record arrives for `stall_timeout_s` (a broker that stopped answering).
    `on_total` is told how many records the read will cover, before the first.
    """
    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": f"{settings.app_id}-restore",
                **RESTORE_CONSUMER_CONFIG,
                # exactly_once: what an aborted batch wrote to a changelog is not state
                "isolation.level": "read_committed"
                if settings.exactly_once
                else "read_uncommitted",
            },
        )
    )
    try:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=stall_timeout_s
        )
        start = max(start, low)
        if on_total is not None:
            on_total(max(0, high - start))
        if start >= high:
            return
        consumer.assign([TopicPartition(topic, partition, start)])
        last_progress = time.monotonic()
        end = high - 1
        position = start
        while True:
            # A `consume` call returns once it has as many records as asked for, or at
            # its timeout: asking for no more than are left (+1: the end-of-partition
            # event) saves waiting at the end (once, where compaction left gaps).
            msgs = consumer.consume(min(RESTORE_BATCH, high - position + 1), timeout=RESTORE_WAIT_S)
            for msg in msgs:
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return
                    raise KafkaException(error)
                offset = msg.offset()
                yield msg.key() or b"", msg.value(), offset
                if offset >= end:
                    return
            if msgs:
                position = msgs[-1].offset() + 1
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > stall_timeout_s:
                raise KafkaException(
                    f"reading {topic}[{partition}]: no record for {stall_timeout_s:.0f}s"
                )
    finally:
        consumer.close()


def records_between(settings: Settings, tp: TopicPartition, start: int, end: int) -> int:
    """Records a read_committed consumer reads in [start, end) of one partition: the real
    lag behind a committed offset `start` when the topic is written in transactions, where
    commit markers (and aborted records) take offsets that no consumer is given."""
    if start >= end:
        return 0
    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": f"{settings.app_id}-lag",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
            },
        )
    )
    try:
        consumer.assign([TopicPartition(tp.topic, tp.partition, start)])
        n = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=1.0):
                if msg.error() is not None:
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        return n
                    raise KafkaException(msg.error())
                if msg.offset() >= end:
                    return n
                n += 1
        return n
    finally:
        consumer.close()


def _lagging(
    consumer: Consumer,
    client: AdminClient,
    topics: list[str],
    floor: dict[tuple[str, int], int] | None,
) -> tuple[list[str], dict[tuple[str, int], int]]:
    """Partitions whose committed offset is below `floor` (default: the high watermark)."""
    tps = []
    for topic in topics:
        meta = client.list_topics(topic, timeout=10).topics[topic]
        tps += [TopicPartition(topic, p) for p in meta.partitions]
    highs = {}
    lagging = []
    for tp in consumer.committed(tps, timeout=10):
        _, high = consumer.get_watermark_offsets(tp, timeout=10)
        highs[(tp.topic, tp.partition)] = high
        target = high if floor is None else floor.get((tp.topic, tp.partition), 0)
        if target > 0 and tp.offset < target:
            lagging.append(f"{tp.topic}[{tp.partition}] {tp.offset}/{target}")
    return lagging, highs


def wait_drained(settings: Settings, physical_topics: list[str], timeout_s: float = 90) -> None:
    """Wait until the app (group `settings.group_id`) has processed everything sent so far.

    Inputs first (their offsets are committed only after the batch's outputs
    were flushed); then the internal topics up to where they stood, twice,
    an idle time and two ticks apart, so that buffered changes were released.
    Ticks keep arriving on internal topics, so those are never fully "caught up".
    """
    client = admin(settings)
    consumer = Consumer(
        client_config(settings, **{"group.id": settings.group_id, "enable.auto.commit": False})
    )
    internal = [t for t in physical_topics if t.startswith(settings.internal_topic(""))]
    inputs = [t for t in physical_topics if t not in internal]
    settle_s = settings.source_idle_s + 2 * settings.tick_interval_s
    try:
        deadline = time.monotonic() + timeout_s
        stages: list[tuple[list[str], bool]] = [(inputs, False), (internal, True), (internal, True)]
        for i, (topics, snapshot) in enumerate(stages):
            if i == 2:
                time.sleep(settle_s)
            floor = _lagging(consumer, client, topics, None)[1] if snapshot else None
            while True:
                lagging, _ = _lagging(consumer, client, topics, floor)
                if not lagging:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"not drained within {timeout_s}s: {lagging}")
                time.sleep(0.3)
    finally:
        consumer.close()
