"""The CLI's JSON-lines path in and out of Kafka: `pssync produce` and `pssync consume`.

Produce: each line `{"topic", "key", "value"[, "headers"]}` in the contract's
JSON form, encoded with the topic's registered schema. A bad line is reported
with its line number and field, and is not sent; the others are.
Consume: one JSON line per record, `{"topic", "partition", "offset", "key",
"value", "headers"}`, decoded with the writer's schema.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition

from pssync.avro.codec import Codec, DecodeError, load_schema_text
from pssync.avro.contract import ALL_TOPICS, TABLES_BY_TOPIC
from pssync.avro.jsonform import JsonForm, JsonFormError, brief
from pssync.connectors.kafka import CORRELATION_HEADER, OutputProducer, admin, client_config
from pssync.settings import Settings


class LineError(ValueError):
    def __init__(self, line_no: int, message: str) -> None:
        super().__init__(f"line {line_no}: {message}")
        self.line_no = line_no


@dataclass(slots=True)
class ProduceReport:
    sent: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class Forms:
    """JSON-form converters per topic and part, built once."""

    def __init__(self) -> None:
        self._forms: dict[tuple[str, str], JsonForm] = {}

    def get(self, topic: str, part: str) -> JsonForm:
        form = self._forms.get((topic, part))
        if form is None:
            form = JsonForm(json.loads(load_schema_text(topic, part)))
            self._forms[(topic, part)] = form
        return form


def parse_line(forms: Forms, line_no: int, text: str) -> tuple[str, Any, Any, list[Any]]:
    """One JSONL line -> (topic, avro key, avro value or None, headers); LineError if bad."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LineError(line_no, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise LineError(line_no, f"not valid JSON ({exc})") from None
    except RecursionError:
        raise LineError(line_no, "not valid JSON (nested too deeply)") from None
    if not isinstance(obj, dict):
        raise LineError(line_no, "expected an object with topic, key and value")
    unknown = sorted(set(obj) - {"topic", "key", "value", "headers"})
    if unknown:
        raise LineError(line_no, f"{unknown[0]}: unknown field")
    topic = obj.get("topic")
    if topic not in ALL_TOPICS:
        raise LineError(line_no, f"topic: {brief(topic)} is not a contract topic")
    if "value" not in obj:
        raise LineError(line_no, "value: missing (use null for a tombstone)")
    key = obj.get("key")
    table = TABLES_BY_TOPIC.get(topic)
    if table is not None and not isinstance(key, dict) and key is not None:
        key = {table.key[0]: key}  # a bare id is taken as the single key field
    try:
        avro_key = None if key is None else forms.get(topic, "key").from_json(key, "key")
        value = obj["value"]
        avro_value = None if value is None else forms.get(topic, "value").from_json(value, "value")
    except JsonFormError as exc:
        raise LineError(line_no, str(exc)) from None
    headers = obj.get("headers") or {}
    if not isinstance(headers, dict):
        raise LineError(line_no, "headers: expected an object of name -> string")
    encoded = []
    for name, text_value in headers.items():
        try:
            encoded.append((str(name.encode().decode()), str(text_value).encode()))
        except UnicodeEncodeError:
            raise LineError(
                line_no, f"headers.{brief(name)}: is not valid UTF-8 text (a lone surrogate)"
            ) from None
    return topic, avro_key, avro_value, encoded


def produce_lines(
    settings: Settings,
    codec: Codec,
    lines: Iterable[str],
    on_error: Callable[[str], None] | None = None,
) -> ProduceReport:
    """Encode and send every good line; collect errors for the bad ones."""
    forms = Forms()
    report = ProduceReport()
    producer = OutputProducer(settings, codec, **{"linger.ms": 20})
    existing = set(admin(settings).list_topics(timeout=10).topics)
    for line_no, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            topic, key, value, headers = parse_line(forms, line_no, text)
            if settings.topic(topic) not in existing:
                raise LineError(
                    line_no,
                    f"topic: {settings.topic(topic)} does not exist "
                    "(create the contract's topics with `pssync topics create`)",
                )
            key_bytes = None if key is None else codec.encode_key(topic, key)
            value_bytes = None if value is None else codec.encode_value(topic, value)
        except LineError as exc:
            report.errors.append(str(exc))
            if on_error:
                on_error(str(exc))
            continue
        if not any(k == CORRELATION_HEADER for k, _ in headers):
            headers.append((CORRELATION_HEADER, str(uuid.uuid4()).encode()))
        producer.send_raw(settings.topic(topic), key_bytes, value_bytes, headers=headers)
        producer.poll()
        report.sent += 1
        report.by_topic[topic] = report.by_topic.get(topic, 0) + 1
    producer.flush()
    return report


def consume_records(
    settings: Settings,
    codec: Codec,
    topics: list[str],
    from_beginning: bool,
    idle_timeout_s: float | None,
    max_records: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Decoded records of `topics` (logical names) as JSON-form dicts."""
    forms = Forms()
    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": f"pssync-consume-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest" if from_beginning else "latest",
                # what downstream consumers see: not what an aborted transaction held
                # (exactly_once; the same records otherwise)
                "isolation.level": "read_committed",
            },
        )
    )
    try:
        assignment = []
        for topic in topics:
            physical = settings.topic(topic)
            meta = consumer.list_topics(physical, timeout=10).topics.get(physical)
            if meta is None or meta.error is not None:
                raise ValueError(f"topic {physical} does not exist")
            start = OFFSET_BEGINNING if from_beginning else OFFSET_END
            assignment += [TopicPartition(physical, p, start) for p in sorted(meta.partitions)]
        consumer.assign(assignment)
        last_seen = time.monotonic()
        count = 0
        while True:
            msgs = consumer.consume(500, timeout=0.5)
            if msgs:
                last_seen = time.monotonic()
            for msg in msgs:
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RuntimeError(str(error))
                yield decode_message(settings, codec, forms, msg)
                count += 1
                if max_records is not None and count >= max_records:
                    return
            if idle_timeout_s is not None and time.monotonic() - last_seen >= idle_timeout_s:
                return
    finally:
        consumer.close()


def decode_message(settings: Settings, codec: Codec, forms: Forms, msg: Any) -> dict[str, Any]:
    topic = settings.logical(msg.topic())
    out: dict[str, Any] = {
        "topic": topic,
        "partition": msg.partition(),
        "offset": msg.offset(),
        "key": None,
        "value": None,
        "headers": {
            k: (v.decode(errors="replace") if v is not None else None)
            for k, v in (msg.headers() or [])
        },
    }
    errors = []
    for part, raw in (("key", msg.key()), ("value", msg.value())):
        if raw is None:
            continue
        if topic not in ALL_TOPICS:
            out[part] = raw.decode(errors="replace")
            continue
        try:
            if codec.unknown_ids([raw]):
                codec.fetch_writer(codec.schema_id_of(raw))
            out[part] = forms.get(topic, part).to_json(codec.decode(topic, part, raw))
        except DecodeError as exc:
            errors.append(f"{part}: {exc}")
    if errors:
        out["error"] = "; ".join(errors)
    return out


def write_jsonl(records: Iterable[dict[str, Any]], out: TextIO = sys.stdout) -> int:
    n = 0
    for record in records:
        out.write(json.dumps(record, separators=(",", ":")) + "\n")
        out.flush()
        n += 1
    return n
