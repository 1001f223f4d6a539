"""The Confluent wire-format codec against the real schema registry."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import io
import json
import struct
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from pssync.avro.codec import Codec, DecodeError, UnknownSchemaId, load_schema_text
from pssync.avro.registry import RegistryClient
from pssync.settings import Settings

pytestmark = pytest.mark.kafka

SettingsFactory = Callable[..., Settings]

UTC = dt.UTC
ABSENT_ID = 999999


def source(db: str, table: str, lsn: int) -> dict[str, Any]:
    return {
        "version": "2.7",
        "connector": "postgresql",
        "name": "cdc",
        "ts_ms": 1767225600000,
        "snapshot": "false",
        "db": db,
        "schema": db,
        "table": table,
        "txId": 2,
        "lsn": lsn,
    }


WORKER_AFTER: dict[str, Any] = {
    "worker_id": "W-1",
    "full_name": "Ada L",
    "email": "ada@x.com",
    "employment_status": "ACTIVE",
    "hire_date": dt.date(2025, 1, 6),
    "termination_date": None,
    "cost_center": "CC-100",
    "legal_entity": "LE-US",
    "manager_id": "W-0",
    "job_profile": "Consultant",
    "updated_at": dt.datetime(2026, 1, 1, tzinfo=UTC),
}
WORKER_VALUE: dict[str, Any] = {
    "before": None,
    "after": WORKER_AFTER,
    "source": source("hr", "worker", 200),
    "op": "c",
    "ts_ms": 1767225600000,
}
TIME_ENTRY_VALUE: dict[str, Any] = {
    "before": None,
    "after": {
        "time_entry_id": "TE-7",
        "worker_id": "W-1",
        "project_id": "P-1",
        "assignment_id": None,
        "work_date": dt.date(2026, 3, 31),
        "hours": Decimal("7.50"),
        "billable": True,
        "status": "APPROVED",
        "approved_at": dt.datetime(2026, 3, 31, 9, 15, tzinfo=UTC),
    },
    "source": source("psa", "time_entry", 310),
    "op": "c",
    "ts_ms": None,
}
COST_RATE_VALUE: dict[str, Any] = {
    "before": None,
    "after": {
        "rate_id": "R-1",
        "worker_id": "W-1",
        "effective_from": dt.date(2026, 1, 1),
        "effective_to": None,
        "rate": Decimal("142.50"),
        "currency": "USD",
    },
    "source": source("erp", "cost_rate", 900),
    "op": "r",
    "ts_ms": 1767225600000,
}
DLQ_VALUE: dict[str, Any] = {
    "original_topic": "cdc.hr.worker",
    "partition": 2,
    "offset": 41,
    "key": b"\x00\x00\x00\x00\x01k",
    "value": b"\x07garbage",
    "headers": [{"key": "correlation_id", "value": b"c-1"}],
    "error_class": "DecodeError",
    "error_message": "magic byte 7 is not the Confluent wire format's 0",
    "stage": "decode",
    "failed_at": dt.datetime(2026, 3, 31, 9, 15, 0, 123000, tzinfo=UTC),
}
# topic -> (key, value) in fastavro's native form
SAMPLES: dict[str, tuple[Any, Any]] = {
    "cdc.hr.worker": ({"worker_id": "W-1"}, WORKER_VALUE),
    "cdc.psa.time_entry": ({"time_entry_id": "TE-7"}, TIME_ENTRY_VALUE),
    "cdc.erp.cost_rate": ({"rate_id": "R-1"}, COST_RATE_VALUE),
    "sync.dlq": (b"\x00\x00\x00\x00\x01k", DLQ_VALUE),
}


def schema_json(topic: str, part: str) -> Any:
    return json.loads(load_schema_text(topic, part))


def new_codec(settings: Settings) -> tuple[Codec, RegistryClient]:
    """A codec with its own registry client, so nothing is shared through caches."""
    registry = RegistryClient(settings.schema_registry_url)
    return Codec(registry, settings.topic_prefix), registry


def registry_latest_id(settings: Settings, subject: str) -> int:
    quoted = urllib.parse.quote(subject, safe="")
    url = f"{settings.schema_registry_url}/subjects/{quoted}/versions/latest"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return int(json.loads(resp.read())["id"])


def fastavro_bytes(schema: Any, value: Any) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(schema), value)
    return buf.getvalue()


@pytest.mark.parametrize("topic", sorted(SAMPLES))
def test_wire_format_is_magic_registry_id_and_avro_body(
    settings_factory: SettingsFactory, topic: str
) -> None:
    settings = settings_factory()
    codec, _ = new_codec(settings)
    codec.register_all([topic])
    key, value = SAMPLES[topic]

    for part, native in (("key", key), ("value", value)):
        data = codec.encode(topic, part, native)
        subject = f"{settings.topic_prefix}{topic}-{part}"

        assert data[0] == 0
        assert struct.unpack(">I", data[1:5])[0] == registry_latest_id(settings, subject)
        assert data[5:] == fastavro_bytes(schema_json(topic, part), native)
        assert Codec.schema_id_of(data) == registry_latest_id(settings, subject)


def test_fresh_codec_decodes_keys_and_values(settings_factory: SettingsFactory) -> None:
    settings = settings_factory()
    writer, _ = new_codec(settings)
    writer.register_all(SAMPLES)
    reader, _ = new_codec(settings)
    reader.register_all(SAMPLES)

    for topic, (key, value) in SAMPLES.items():
        key_bytes = writer.encode_key(topic, key)
        value_bytes = writer.encode_value(topic, value)

        assert reader.unknown_ids([key_bytes, value_bytes]) == set()
        assert reader.decode_key(topic, key_bytes) == key
        assert reader.decode_value(topic, value_bytes) == value


def test_string_keys_of_output_topics(settings_factory: SettingsFactory) -> None:
    settings = settings_factory()
    codec, _ = new_codec(settings)
    codec.register_all(["erp.cmd.time_entry", "reconciled.worker"])

    data = codec.encode_key("erp.cmd.time_entry", "TE-7")

    assert data[5:] == b"\x08TE-7"
    assert codec.decode_key("erp.cmd.time_entry", data) == "TE-7"
    assert codec.decode_key("reconciled.worker", codec.encode_key("reconciled.worker", "")) == ""


def evolved(drop: frozenset[str] = frozenset(), add: list[dict[str, Any]] | None = None) -> str:
    """The cdc.hr.worker value schema with after-image fields dropped or added."""
    schema = schema_json("cdc.hr.worker", "value")
    value_record = schema["fields"][0]["type"][1]
    assert value_record["name"] == "cdc.hr.worker.Value"
    value_record["fields"] = [f for f in value_record["fields"] if f["name"] not in drop]
    value_record["fields"] += add or []
    return json.dumps(schema)


def test_newer_writer_decodes_into_contract_schema(settings_factory: SettingsFactory) -> None:
    settings = settings_factory()
    reader, _ = new_codec(settings)
    reader.register_all(["cdc.hr.worker"])
    writer, _ = new_codec(settings)
    newer = evolved(
        add=[
            {"name": "pronouns", "type": ["null", "string"], "default": None},
            {"name": "fte", "type": "int", "default": 100},
        ]
    )
    newer_id = writer.register("cdc.hr.worker", "value", newer)
    record = copy.deepcopy(WORKER_VALUE)
    record["after"] = {**WORKER_AFTER, "pronouns": "she/her", "fte": 80}
    data = writer.encode_value("cdc.hr.worker", record)

    assert newer_id == registry_latest_id(settings, f"{settings.topic_prefix}cdc.hr.worker-value")
    assert newer_id != reader.schema_id_of(reader.encode_value("cdc.hr.worker", WORKER_VALUE))
    assert Codec.schema_id_of(data) == newer_id
    with pytest.raises(UnknownSchemaId) as before_fetch:
        reader.decode_value("cdc.hr.worker", data)
    assert before_fetch.value.schema_id == newer_id
    assert before_fetch.value.known_missing is False
    assert reader.unknown_ids([data]) == {newer_id}

    asyncio.run(reader.prefetch([newer_id]))
    decoded = reader.decode_value("cdc.hr.worker", data)

    assert decoded == WORKER_VALUE
    assert "pronouns" not in decoded["after"]


def test_older_writer_fills_reader_defaults(settings_factory: SettingsFactory) -> None:
    settings = settings_factory()
    reader, _ = new_codec(settings)
    reader.register_all(["cdc.hr.worker"])
    writer, _ = new_codec(settings)
    older_id = writer.register("cdc.hr.worker", "value", evolved(drop=frozenset({"manager_id"})))
    record = copy.deepcopy(WORKER_VALUE)
    del record["after"]["manager_id"]
    data = writer.encode_value("cdc.hr.worker", record)

    assert Codec.schema_id_of(data) == older_id
    asyncio.run(reader.prefetch(reader.unknown_ids([data])))
    decoded = reader.decode_value("cdc.hr.worker", data)

    assert decoded["after"] == {**WORKER_AFTER, "manager_id": None}
    assert decoded["source"] == WORKER_VALUE["source"]


def test_schema_id_absent_from_registry(settings_factory: SettingsFactory) -> None:
    settings = settings_factory()
    codec, _ = new_codec(settings)
    codec.register_all(["cdc.hr.worker"])
    good = codec.encode_value("cdc.hr.worker", WORKER_VALUE)
    data = struct.pack(">bI", 0, ABSENT_ID) + good[5:]

    assert codec.unknown_ids([data, good, None]) == {ABSENT_ID}
    with pytest.raises(UnknownSchemaId) as not_fetched:
        codec.decode_value("cdc.hr.worker", data)
    assert not_fetched.value.known_missing is False

    asyncio.run(codec.prefetch([ABSENT_ID]))

    assert codec.unknown_ids([data]) == set()
    with pytest.raises(UnknownSchemaId) as after_fetch:
        codec.decode_value("cdc.hr.worker", data)
    assert after_fetch.value.schema_id == ABSENT_ID
    assert after_fetch.value.known_missing is True
    assert after_fetch.value.reason == "unknown_schema_id"
    assert str(ABSENT_ID) in str(after_fetch.value)


@pytest.mark.parametrize(
    ("data", "message_part"),
    [
        (b"", "too short"),
        (b"\x00\x00\x00", "too short"),
        (b"\x01\x00\x00\x00\x01\x02", "magic byte 1"),
        (b'{"worker_id": "W-1"}', "magic byte"),
    ],
)
def test_not_wire_format(settings_factory: SettingsFactory, data: bytes, message_part: str) -> None:
    settings = settings_factory()
    codec, _ = new_codec(settings)
    codec.register_all(["cdc.hr.worker"])

    with pytest.raises(DecodeError) as info:
        codec.decode_key("cdc.hr.worker", data)

    assert type(info.value) is DecodeError
    assert message_part in str(info.value)
    assert info.value.reason == "undecodable"
    assert codec.unknown_ids([data]) == set()


def corrupt_bodies(good: bytes) -> dict[str, bytes]:
    header, body = good[:5], good[5:]
    return {
        "bad union index": header + b"\x04" + body[1:],
        "truncated": good[:-4],
        "header only": header,
        "negative length": header + b"\x00\x02\x7f",
        "invalid utf-8": header + b"\x00\x02\x04\xff\xfe" + body[6:],
    }


@pytest.mark.parametrize(
    "case", ["bad union index", "truncated", "header only", "negative length", "invalid utf-8"]
)
def test_corrupt_avro_body(settings_factory: SettingsFactory, case: str) -> None:
    settings = settings_factory()
    codec, _ = new_codec(settings)
    codec.register_all(["cdc.hr.worker"])
    data = corrupt_bodies(codec.encode_value("cdc.hr.worker", WORKER_VALUE))[case]

    with pytest.raises(DecodeError, match="avro decode failed") as info:
        codec.decode_value("cdc.hr.worker", data)

    assert info.value.reason == "undecodable"
    assert info.value.__cause__ is not None


@pytest.mark.parametrize("extra", [b"\x00", b"\x02c\x00trailing"])
def test_trailing_bytes(settings_factory: SettingsFactory, extra: bytes) -> None:
    settings = settings_factory()
    codec, _ = new_codec(settings)
    codec.register_all(["cdc.hr.worker"])
    good = codec.encode_value("cdc.hr.worker", WORKER_VALUE)

    with pytest.raises(DecodeError, match=f"{len(extra)} trailing bytes"):
        codec.decode_value("cdc.hr.worker", good + extra)
    assert codec.decode_value("cdc.hr.worker", good) == WORKER_VALUE


def test_prefetch_fetches_each_unseen_id_once(
    settings_factory: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_factory()
    topics = ["cdc.hr.worker", "cdc.erp.cost_rate"]
    writer, _ = new_codec(settings)
    writer.register_all(topics)
    worker_id = writer.register(
        "cdc.hr.worker", "value", evolved(add=[{"name": "badge", "type": "string", "default": ""}])
    )
    rate = schema_json("cdc.erp.cost_rate", "value")
    rate["fields"].append({"name": "batch", "type": ["null", "long"], "default": None})
    rate_id = writer.register("cdc.erp.cost_rate", "value", json.dumps(rate))
    encoded: list[tuple[str, bytes]] = []
    for n in range(3):
        worker = copy.deepcopy(WORKER_VALUE)
        worker["after"] = {**WORKER_AFTER, "worker_id": f"W-{n}", "badge": f"B{n}"}
        encoded.append(("cdc.hr.worker", writer.encode_value("cdc.hr.worker", worker)))
        rate_value = {**COST_RATE_VALUE, "batch": n}
        encoded.append(("cdc.erp.cost_rate", writer.encode_value("cdc.erp.cost_rate", rate_value)))
    blobs: list[bytes | None] = [*(data for _, data in encoded), None, b"\x07junk"]

    reader, registry = new_codec(settings)
    reader.register_all(topics)
    by_id: Counter[int] = Counter()
    http: Counter[str] = Counter()
    schema_by_id, request = registry.schema_by_id, registry._request

    def counting_schema_by_id(schema_id: int) -> str:
        by_id[schema_id] += 1
        return schema_by_id(schema_id)

    def counting_request(method: str, path: str, body: Any = None) -> Any:
        http[f"{method} {path}"] += 1
        return request(method, path, body)

    monkeypatch.setattr(registry, "schema_by_id", counting_schema_by_id)
    monkeypatch.setattr(registry, "_request", counting_request)

    unseen = reader.unknown_ids(blobs)
    asyncio.run(reader.prefetch(unseen))
    asyncio.run(reader.prefetch(unseen))
    decoded = [reader.decode_value(topic, data) for topic, data in encoded]
    asyncio.run(reader.prefetch(reader.unknown_ids(blobs)))

    assert unseen == {worker_id, rate_id}
    assert by_id == {worker_id: 1, rate_id: 1}
    assert http == {f"GET /schemas/ids/{worker_id}": 1, f"GET /schemas/ids/{rate_id}": 1}
    assert [d["after"]["worker_id"] for d in decoded[0::2]] == ["W-0", "W-1", "W-2"]
    assert all(d == COST_RATE_VALUE for d in decoded[1::2])
    assert reader.unknown_ids(blobs) == set()
