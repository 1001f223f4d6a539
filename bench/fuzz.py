"""Hostile input over the ingest path (decode, validate, route) and `pssync produce`.

A seeded, dependency-free fuzzer: every case is one hostile record followed, in the
same batch, by a good one, decoded by the worker's `Decoder` against an in-memory
schema registry, and the changes that come out are routed (`IngestSpec.plan` over
real link stores) and processed by the keyed flows of an `OfflinePipeline`. A
`pssync produce` case is one JSONL line, parsed by `connectors.jsonl.parse_line`,
encoded with the codec and decoded back.

What is checked, per case:
- nothing raises out of decode, routing, the keyed flows or `parse_line` (a crash);
- no case takes longer than `--case-timeout` (a hang; a timer interrupts it);
- each input record ends as exactly one change, tombstone or dead letter, and each
  dead letter names its stage, error class and message;
- a case whose outcome is known (a truncated record is dead, a good one a change
  equal to what was written) has that outcome, and the good record after it too;
- a produce line is either sent (encodes and decodes back to the same JSON form) or
  rejected with `line N: <field>: <what>`.

    python -m bench.fuzz --cases 100000            # the full run (results in bench/results)
    python -m bench.fuzz --cases 2000 --no-results  # a quick look

The test suite runs the same cases at CI size (`tests/test_fuzz_ingest.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import datetime as dt
import io
import json
import logging
import random
import shutil
import signal
import struct
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import Any

from fastavro import parse_schema, schemaless_writer

from pssync.avro.codec import Codec, load_schema_text
from pssync.avro.contract import ACTIONS, ACTIONS_TOPIC, ENUMS, TABLES_BY_TOPIC
from pssync.avro.registry import RegistryClient, SchemaNotFound
from pssync.connectors.jsonl import Forms, LineError, parse_line
from pssync.settings import Settings
from pssync.streams.decode import Decoded, Decoder, Inbound, Stats
from pssync.streams.flow import FlowConfig
from pssync.streams.metrics import Metrics
from pssync.streams.offline import OfflinePipeline

INGEST_TOPICS = (*sorted(TABLES_BY_TOPIC), ACTIONS_TOPIC)
HEADER = struct.Struct(">BI")
UNKNOWN_ID = 987_654
EPOCH = dt.date(1970, 1, 1)
UTC = dt.UTC
ODD_TEXT = (
    "\u0000",
    "\u200b",  # zero-width space
    "\u202e",  # right-to-left override
    "\ufeff",
    "\uffff",
    "\U0010ffff",
    "e\u0301",  # combining accent
    "\U0001f600",
    "\u0130",  # dotted capital I: lower() changes its length
    "\u00df",
    "\r\n",
    "/",
    "%s%n",
    "' OR 1=1 --",
    '"}',
)


class FuzzRegistry(RegistryClient):
    """An in-memory schema registry: ids in registration order, 404 for the rest."""

    def __init__(self) -> None:
        super().__init__("http://fuzz.invalid")
        self.texts: dict[int, str] = {}

    def register(self, subject: str, schema: str) -> int:
        for schema_id, text in self.texts.items():
            if text == schema:
                return schema_id
        schema_id = max(self.texts, default=0) + 1
        self.texts[schema_id] = schema
        return schema_id

    def preload(self, schema_id: int, schema: str) -> None:
        """Know `schema` under a given id (a corpus case names its writer's id)."""
        self.texts[schema_id] = schema

    def schema_by_id(self, schema_id: int) -> str:
        text = self.texts.get(schema_id)
        if text is None:
            raise SchemaNotFound(f"schema {schema_id} not found", 404)
        return text


def make_decoder(registry: FuzzRegistry | None = None) -> Decoder:
    """A worker's decoder over an in-memory registry holding the contract's schemas."""
    registry = registry or FuzzRegistry()
    codec = Codec(registry)
    codec.register_all(INGEST_TOPICS)
    settings = Settings(schema_registry_url=registry.url)
    return Decoder(settings, codec, Metrics(), Stats())


def frame(schema_id: int, body: bytes) -> bytes:
    return HEADER.pack(0, schema_id) + body


def avro_body(schema: Any, value: Any) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(copy.deepcopy(schema)), value)
    return buf.getvalue()


# -- writer schemas a producer may use -------------------------------------------------


def _image_fields(value_schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The after-image record's fields (the first union branch of `before`)."""
    fields: list[dict[str, Any]] = value_schema["fields"][0]["type"][1]["fields"]
    return fields


def loose_writer(topic: str) -> dict[str, Any]:
    """The value schema with every image field nullable and decimals as plain bytes: a
    writer that can put nulls in required fields and any number into a decimal."""
    schema = json.loads(load_schema_text(topic, "value"))
    fields = schema["fields"] if topic == ACTIONS_TOPIC else _image_fields(schema)
    for f in fields:
        kind = f["type"]
        branches = kind if isinstance(kind, list) else [kind]
        plain = ["bytes" if _is_decimal({"type": b}) else b for b in branches]
        f["type"] = plain if isinstance(kind, list) else ["null", plain[0]]
        f["default"] = None
    return dict(schema)


def unscaled(number: Decimal, scale: int = 2) -> bytes:
    """A decimal's Avro bytes: the two's-complement unscaled integer."""
    n = int(number.scaleb(scale))
    return n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True)


def plain_writer(topic: str) -> dict[str, Any]:
    """The value schema without logical types (dates as int days, instants as long ms),
    as a producer that does not know them writes: compatible for the registry."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("logicalType") in ("date", "timestamp-millis"):
                return node["type"]
            return {k: strip(v) for k, v in node.items()}
        if isinstance(node, list):
            return [strip(n) for n in node]
        return node

    return dict(strip(json.loads(load_schema_text(topic, "value"))))


def evolved_writer(topic: str) -> dict[str, Any]:
    """A newer compatible writer: an extra field with a default in the image."""
    schema = json.loads(load_schema_text(topic, "value"))
    fields = schema["fields"] if topic == ACTIONS_TOPIC else _image_fields(schema)
    fields.append({"name": "x_extra", "type": ["null", "string"], "default": None})
    return dict(schema)


# -- good values ---------------------------------------------------------------------------


class Values:
    """Valid Avro values of the contract's input topics, from a seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.value_schemas = {t: json.loads(load_schema_text(t, "value")) for t in INGEST_TOPICS}

    def text(self, odd: bool = False) -> str:
        rng = self.rng
        base = f"{rng.choice('ABCDEFGH')}-{rng.randrange(1, 40)}"
        if odd or rng.random() < 0.05:
            return base + "".join(rng.choice(ODD_TEXT) for _ in range(rng.randrange(1, 4)))
        return base

    def date(self, edge: bool = False) -> dt.date:
        if edge:
            return self.rng.choice((dt.date(1, 1, 1), dt.date(9999, 12, 31), dt.date(1969, 12, 31)))
        return EPOCH + dt.timedelta(days=self.rng.randrange(19_000, 21_000))

    def instant(self, edge: bool = False) -> dt.datetime:
        if edge:
            return self.rng.choice(
                (
                    dt.datetime(1, 1, 1, tzinfo=UTC),
                    dt.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
                    dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC),
                )
            )
        ms = 1_700_000_000_000 + self.rng.randrange(0, 200_000_000_000)
        return dt.datetime.fromtimestamp(ms / 1000, tz=UTC)

    def field(self, topic: str, name: str, kind: Any, edge: bool) -> Any:
        rng = self.rng
        allowed = ENUMS.get((topic, name))
        if allowed is not None:
            return rng.choice(sorted(allowed))
        if isinstance(kind, list):
            if rng.random() < 0.3:
                return None
            kind = next(b for b in kind if b != "null")
        if isinstance(kind, dict):
            logical = kind.get("logicalType")
            if logical == "decimal":
                whole = kind["precision"] - kind["scale"]
                return Decimal(rng.randrange(0, 10 ** (whole + 2))).scaleb(-2)
            if logical == "date":
                return self.date(edge)
            if logical == "timestamp-millis":
                return self.instant(edge)
            kind = kind["type"]
        if kind == "string":
            return self.text()
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "int":
            return rng.randrange(0, 101)
        if kind == "long":
            return rng.randrange(0, 2**40)
        raise ValueError(f"no generator for {kind!r}")

    def image(self, topic: str, entity: str, edge: bool = False) -> dict[str, Any]:
        table = TABLES_BY_TOPIC[topic]
        fields = _image_fields(self.value_schemas[topic])
        out = {f["name"]: self.field(topic, f["name"], f["type"], edge) for f in fields}
        out[table.key[0]] = entity
        return out

    def source(self, topic: str) -> dict[str, Any]:
        rng = self.rng
        _, platform, table = topic.split(".")
        return {
            "version": "2.7",
            "connector": "postgresql",
            "name": "cdc",
            "ts_ms": 1_767_225_600_000 + rng.randrange(0, 10**9),
            "snapshot": rng.choice(("false", "false", "true", "last", None)),
            "db": platform,
            "schema": platform,
            "table": table,
            "txId": rng.choice((None, rng.randrange(1, 10**6))),
            "lsn": rng.choice((None, rng.randrange(1, 2**40))),
        }

    def record(
        self, topic: str, edge: bool = False, upsert: bool = False
    ) -> tuple[Any, dict[str, Any]]:
        """(key, value) as Avro values: a valid change of `topic` (with an after-image
        when `upsert`)."""
        rng = self.rng
        if topic == ACTIONS_TOPIC:
            return self.action()
        entity = self.text()
        table = TABLES_BY_TOPIC[topic]
        op = rng.choice("cur" if upsert else "cudr")
        image = self.image(topic, entity, edge)
        before = None if op in "cr" or rng.random() < 0.5 else self.image(topic, entity, edge)
        after = None if op == "d" else image
        if op == "d" and before is None and rng.random() < 0.5:
            before = image
        value = {
            "before": before,
            "after": after,
            "op": op,
            "ts_ms": rng.choice((None, 1_767_225_600_000)),
            "source": self.source(topic),
        }
        return {table.key[0]: entity}, value

    def action(self) -> tuple[Any, dict[str, Any]]:
        rng = self.rng
        flow = rng.choice(("worker", "project"))
        owner = self.text()
        value = {
            "action_id": f"act-{rng.randrange(10**9)}",
            "action": rng.choice(ACTIONS),
            "exception_id": f"exc-{rng.randrange(10**6)}",
            "rule": "TIME_IN_CLOSED_PERIOD",
            "entity_type": "time_entry" if flow == "worker" else "project",
            "entity_id": self.text(),
            "owner": f"{flow}:{owner}",
            "who": rng.choice(("ops-alice", "dash", "\u202eevil")),
            "note": rng.choice((None, "", "looked at it", self.text(odd=True))),
            "assignee": rng.choice((None, "bob")),
            "requested_at": self.instant(),
            "at": self.instant(),
        }
        return owner, value


# -- cases ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Case:
    """One hostile input record and what it must become (None: any one outcome)."""

    kind: str
    topic: str
    key: bytes | None
    value: bytes | None
    expect: str | None  # "change", "tombstone", "dead" or None
    after: Any = None  # for an expected change: the after-image in JSON form
    writers: dict[int, str] = field(default_factory=dict)  # extra writer schemas used

    def to_json(self) -> dict[str, Any]:
        """The case as a corpus entry (`tests/fuzz_corpus/*.json`)."""

        def b64(data: bytes | None) -> str | None:
            return None if data is None else base64.b64encode(data).decode()

        return {
            "kind": self.kind,
            "topic": self.topic,
            "key": b64(self.key),
            "value": b64(self.value),
            "expect": self.expect,
            "writers": {str(k): v for k, v in self.writers.items()},
        }


def _varint(n: int) -> bytes:
    """Avro's zigzag varint of `n` (any size: a hostile length prefix)."""
    z = n << 1 if n >= 0 else ((-n) << 1) - 1
    out = bytearray()
    while True:
        byte = z & 0x7F
        z >>= 7
        if z:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class Cases:
    """Generates the hostile ingest cases and the produce lines, seeded."""

    INGEST_KINDS = (
        "good",
        "odd_unicode",
        "edge_dates",
        "evolved_writer",
        "plain_writer",
        "no_key",
        "bitflip",
        "byte_set",
        "splice",
        "truncate",
        "trailing",
        "length_bomb",
        "bad_magic",
        "too_short",
        "unknown_id",
        "wrong_id",
        "wrong_key_id",
        "huge_string",
        "huge_decimal",
        "null_required",
        "bad_enum",
        "date_out_of_range",
        "instant_out_of_range",
        "bad_utf8",
        "key_mismatch",
        "bad_op",
        "bad_action",
        "tombstone",
        "tombstone_garbage_key",
    )

    def __init__(self, decoder: Decoder, seed: int, huge_bytes: int = 1 << 20) -> None:
        self.rng = random.Random(seed)
        self.values = Values(self.rng)
        self.codec = decoder.codec
        self.registry = decoder.codec.registry
        self.huge_bytes = huge_bytes
        self.huge_digits = 1_000
        self.forms = Forms()
        self.writers: dict[tuple[str, str], tuple[int, dict[str, Any], str]] = {}
        for topic in INGEST_TOPICS:
            for name, make in (
                ("loose", loose_writer),
                ("plain", plain_writer),
                ("evolved", evolved_writer),
            ):
                schema = make(topic)
                text = json.dumps(schema)
                schema_id = self.registry.register(f"{topic}-value", text)
                self.writers[(topic, name)] = (schema_id, schema, text)
        self.all_ids = (
            sorted(self.registry.texts) if isinstance(self.registry, FuzzRegistry) else []
        )

    # the good record of a topic, and its encoding
    def good(self, topic: str, edge: bool = False) -> tuple[Any, Any, bytes, bytes]:
        key, value = self.values.record(topic, edge)
        return key, value, self.codec.encode_key(topic, key), self.codec.encode_value(topic, value)

    def expected_after(self, topic: str, value: dict[str, Any]) -> Any:
        form = self.forms.get(topic, "value")
        if topic == ACTIONS_TOPIC:
            return form.to_json(value)
        return form.to_json(value)["after"]

    def ingest(self) -> Case:
        rng = self.rng
        kind = rng.choice(self.INGEST_KINDS)
        topic = rng.choice(INGEST_TOPICS)
        make = getattr(self, f"_{kind}")
        case: Case = make(topic)
        return case

    def _good(self, topic: str) -> Case:
        _, value, k, v = self.good(topic)
        return Case("good", topic, k, v, "change", self.expected_after(topic, value))

    def _odd_unicode(self, topic: str) -> Case:
        key, value = self.values.record(topic)
        table = TABLES_BY_TOPIC.get(topic)
        for image in _images(topic, value):
            for name in list(image):
                fixed = ("op", "action", "owner", *(table.key if table else ()))
                if (
                    isinstance(image[name], str)
                    and name not in fixed
                    and (topic, name) not in ENUMS
                    and rng_pick(self.rng)
                ):
                    image[name] = image[name] + self.values.text(odd=True)
        k, v = self.codec.encode_key(topic, key), self.codec.encode_value(topic, value)
        return Case("odd_unicode", topic, k, v, "change", self.expected_after(topic, value))

    def _edge_dates(self, topic: str) -> Case:
        _, value, k, v = self.good(topic, edge=True)
        return Case("edge_dates", topic, k, v, "change", self.expected_after(topic, value))

    def _with_writer(self, kind: str, topic: str, writer: str, mutate: Callable[..., Any]) -> Case:
        key, value = self.values.record(topic)
        schema_id, schema, text = self.writers[(topic, writer)]
        if writer == "loose":  # decimals as their bytes
            for image in _images(topic, value):
                for name, v in image.items():
                    if isinstance(v, Decimal):
                        image[name] = unscaled(v)
        expect = mutate(value)
        body = avro_body(schema, value)
        case = Case(kind, topic, self.codec.encode_key(topic, key), frame(schema_id, body), expect)
        case.writers = {schema_id: text}
        return case

    def _evolved_writer(self, topic: str) -> Case:
        def extra(value: dict[str, Any]) -> str:
            image = value if topic == ACTIONS_TOPIC else value.get("after")
            if image is not None:
                image["x_extra"] = "ignored by the reader"
            return "change"

        return self._with_writer("evolved_writer", topic, "evolved", extra)

    def _plain_writer(self, topic: str) -> Case:
        def plain(value: dict[str, Any]) -> str:
            for image in _images(topic, value):
                for name, v in image.items():
                    if isinstance(v, dt.datetime):
                        image[name] = int(v.timestamp() * 1000)
                    elif isinstance(v, dt.date):
                        image[name] = (v - EPOCH).days
            return "change"

        return self._with_writer("plain_writer", topic, "plain", plain)

    def _no_key(self, topic: str) -> Case:
        _, value, _, v = self.good(topic)
        if topic != ACTIONS_TOPIC and value["after"] is None and value["before"] is None:
            return Case("no_key", topic, None, v, "dead")
        return Case("no_key", topic, None, v, "change", self.expected_after(topic, value))

    def _mutated(self, kind: str, topic: str, change: Callable[[bytearray], None]) -> Case:
        _, _, k, v = self.good(topic)
        body = bytearray(v)
        change(body)
        return Case(kind, topic, k, bytes(body), None)

    def _bitflip(self, topic: str) -> Case:
        def flip(body: bytearray) -> None:
            for _ in range(self.rng.randrange(1, 5)):
                i = self.rng.randrange(5, len(body))
                body[i] ^= 1 << self.rng.randrange(8)

        return self._mutated("bitflip", topic, flip)

    def _byte_set(self, topic: str) -> Case:
        def put(body: bytearray) -> None:
            for _ in range(self.rng.randrange(1, 4)):
                i = self.rng.randrange(5, len(body))
                body[i] = self.rng.choice((0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF))

        return self._mutated("byte_set", topic, put)

    def _splice(self, topic: str) -> Case:
        def splice(body: bytearray) -> None:
            i = self.rng.randrange(5, len(body) + 1)
            j = min(len(body), i + self.rng.randrange(0, 8))
            body[i:j] = self.rng.randbytes(self.rng.randrange(0, 12))

        return self._mutated("splice", topic, splice)

    def _truncate(self, topic: str) -> Case:
        _, _, k, v = self.good(topic)
        return Case("truncate", topic, k, v[: self.rng.randrange(0, len(v))], "dead")

    def _trailing(self, topic: str) -> Case:
        _, _, k, v = self.good(topic)
        return Case("trailing", topic, k, v + self.rng.randbytes(self.rng.randrange(1, 9)), "dead")

    def _length_bomb(self, topic: str) -> Case:
        def bomb(body: bytearray) -> None:
            i = self.rng.randrange(5, len(body))
            n = self.rng.choice((2**31 - 1, 2**62, 2**63 - 1, -1, -(2**62), 10**9, 1 << 40))
            body[i : i + 1] = _varint(n)

        return self._mutated("length_bomb", topic, bomb)

    def _bad_magic(self, topic: str) -> Case:
        _, _, k, v = self.good(topic)
        return Case("bad_magic", topic, k, bytes([self.rng.randrange(1, 256)]) + v[1:], "dead")

    def _too_short(self, topic: str) -> Case:
        _, _, k, v = self.good(topic)
        return Case("too_short", topic, k, v[: self.rng.randrange(0, 5)], "dead")

    def _unknown_id(self, topic: str) -> Case:
        _, _, k, v = self.good(topic)
        return Case(
            "unknown_id", topic, k, frame(UNKNOWN_ID + self.rng.randrange(100), v[5:]), "dead"
        )

    def _wrong_id(self, topic: str) -> Case:
        _, _, k, v = self.good(topic)
        own = {self.codec.schema_id_of(v)} | {
            w[0] for (t, _), w in self.writers.items() if t == topic
        }
        others = [i for i in self.all_ids if i not in own]
        # mostly dead; but Avro resolves records by their unqualified names, so another
        # topic's envelope may read a delete's bytes into a valid record of this one
        return Case("wrong_id", topic, k, frame(self.rng.choice(others), v[5:]), None)

    def _wrong_key_id(self, topic: str) -> Case:
        _, _, k, v = self.good(topic)
        own = {self.codec.schema_id_of(k)}
        if topic == ACTIONS_TOPIC:  # a string key: any record id is wrong for it
            pass
        others = [i for i in self.all_ids if i not in own]
        return Case("wrong_key_id", topic, frame(self.rng.choice(others), k[5:]), v, "dead")

    def _huge_string(self, topic: str) -> Case:
        key, value = self.values.record(topic, upsert=True)
        image = _images(topic, value)[0]
        names = [n for n, x in image.items() if isinstance(x, str) and (topic, n) not in ENUMS]
        table = TABLES_BY_TOPIC.get(topic)
        names = [n for n in names if table is None or n not in table.key]
        names = [n for n in names if n not in ("action", "owner", "action_id")]
        size = self.rng.randrange(self.huge_bytes // 4, self.huge_bytes + 1)
        image[self.rng.choice(names)] = self.rng.choice("xé\u202e") * size
        k, v = self.codec.encode_key(topic, key), self.codec.encode_value(topic, value)
        return Case("huge_string", topic, k, v, "change", self.expected_after(topic, value))

    def _huge_decimal(self, topic: str) -> Case:
        decimals = {
            t: [f["name"] for f in _image_fields(self.values.value_schemas[t]) if _is_decimal(f)]
            for t in TABLES_BY_TOPIC
        }
        topic = self.rng.choice([t for t, names in decimals.items() if names])

        def huge(value: dict[str, Any]) -> str:
            digits = self.rng.choice((5, 13, 29, 40, 4_400, 100_000, self.huge_digits))
            n = self.rng.choice((1, -1)) * (10**digits - 1)
            raw = n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True)
            for image in _images(topic, value):
                image[self.rng.choice(decimals[topic])] = raw
            return "dead" if _images(topic, value) and digits > 12 else "change"

        return self._with_writer("huge_decimal", topic, "loose", huge)

    def _null_required(self, topic: str) -> Case:
        def null(value: dict[str, Any]) -> str:
            images = _images(topic, value)
            if not images:
                return "change"
            schema = self.values.value_schemas[topic]
            fields = schema["fields"] if topic == ACTIONS_TOPIC else _image_fields(schema)
            required = [f["name"] for f in fields if not isinstance(f["type"], list)]
            images[0][self.rng.choice(required)] = None
            return "dead"

        return self._with_writer("null_required", topic, "loose", null)

    def _bad_enum(self, topic: str) -> Case:
        enum_topics = [*sorted({t for t, _ in ENUMS}), ACTIONS_TOPIC]
        topic = self.rng.choice(enum_topics)
        key, value = self.values.record(topic, upsert=True)
        bad = self.rng.choice(("", "active", "ACTIVE ", "DELETED", "\u0000", "A" * 1000))
        if topic == ACTIONS_TOPIC:
            value["action"] = bad
        else:
            image = value["after"] or value["before"]
            names = [n for t, n in ENUMS if t == topic]
            image[self.rng.choice(names)] = bad
        k, v = self.codec.encode_key(topic, key), self.codec.encode_value(topic, value)
        return Case("bad_enum", topic, k, v, "dead")

    def _raw_out_of_range(
        self, kind: str, topic: str, logical: str, values: tuple[int, ...]
    ) -> Case:
        table_topics = [
            t
            for t in INGEST_TOPICS
            if any(_logical(f) == logical for f in _fields_of(t, self.values.value_schemas[t]))
        ]
        topic = self.rng.choice(table_topics)
        names = [
            f["name"]
            for f in _fields_of(topic, self.values.value_schemas[topic])
            if _logical(f) == logical
        ]

        def out_of_range(value: dict[str, Any]) -> str:
            images = _images(topic, value)
            for image in images:
                for name, v in list(image.items()):
                    if isinstance(v, dt.datetime):
                        image[name] = int(v.timestamp() * 1000)
                    elif isinstance(v, dt.date):
                        image[name] = (v - EPOCH).days
                image[self.rng.choice(names)] = self.rng.choice(values)
            return "dead" if images else "change"

        return self._with_writer(kind, topic, "plain", out_of_range)

    def _date_out_of_range(self, topic: str) -> Case:
        days = (2**31 - 1, -(2**31), 2_932_897, -719_163, 10**8, -(10**8))
        return self._raw_out_of_range("date_out_of_range", topic, "date", days)

    def _instant_out_of_range(self, topic: str) -> Case:
        ms = (2**63 - 1, -(2**63), 253_402_300_800_000, -62_135_596_800_001, 10**17)
        return self._raw_out_of_range("instant_out_of_range", topic, "timestamp-millis", ms)

    def _bad_utf8(self, topic: str) -> Case:
        _, value, k, v = self.good(topic)
        junk = self.rng.choice(
            (b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80")
        )
        text = next(s for s in _strings(value))
        raw = text.encode()
        at = v.find(_varint(len(raw)) + raw, 5)
        if at < 0:
            return Case("bad_utf8", topic, k, v, "change", self.expected_after(topic, value))
        n = len(_varint(len(raw)))
        bad = raw[:1] + junk[: len(raw) - 1] + raw[1 + len(junk[: len(raw) - 1]) :]
        if len(bad) != len(raw) or bad == raw:
            return Case("bad_utf8", topic, k, v, "change", self.expected_after(topic, value))
        return Case("bad_utf8", topic, k, v[: at + n] + bad + v[at + n + len(raw) :], "dead")

    def _key_mismatch(self, topic: str) -> Case:
        key, value, _, v = self.good(topic)
        images = _images(topic, value)
        if topic == ACTIONS_TOPIC:
            other: Any = str(key) + "-other"
        else:
            table = TABLES_BY_TOPIC[topic]
            other = {table.key[0]: key[table.key[0]] + "-other"}
            if value["after"] is None:  # a delete is taken by its key: no mismatch to see
                return Case("key_mismatch", topic, self.codec.encode_key(topic, other), v, "change")
        expect = "dead" if images else "change"
        return Case("key_mismatch", topic, self.codec.encode_key(topic, other), v, expect)

    def _bad_op(self, topic: str) -> Case:
        if topic == ACTIONS_TOPIC:
            return self._bad_action(topic)
        key, value = self.values.record(topic)
        image = self.values.image(topic, next(iter(key.values())))
        variant = self.rng.randrange(4)
        if variant == 0:
            value["op"] = self.rng.choice(("", "x", "C", "delete", "\u0000"))
        elif variant == 1:
            value.update(op="c", before=image, after=image)
        elif variant == 2:
            value.update(op=self.rng.choice("cur"), after=None)
        else:
            value.update(op="d", after=image)
        k, v = self.codec.encode_key(topic, key), self.codec.encode_value(topic, value)
        return Case("bad_op", topic, k, v, "dead")

    def _bad_action(self, topic: str) -> Case:
        topic = ACTIONS_TOPIC
        key, value = self.values.action()
        variant = self.rng.randrange(4)
        if variant == 0:
            value["owner"] = self.rng.choice(("", "worker", "worker:", "team:x", ":x"))
        elif variant == 1:
            value[self.rng.choice(("action_id", "exception_id", "who", "entity_id"))] = ""
        elif variant == 2:
            value["action"] = self.rng.choice(("DISMISS", "delete", ""))
        else:
            key = key + "-other"
        k, v = self.codec.encode_key(topic, key), self.codec.encode_value(topic, value)
        return Case("bad_action", topic, k, v, "dead")

    def _tombstone(self, topic: str) -> Case:
        _, _, k, _ = self.good(topic)
        return Case("tombstone", topic, k, None, "tombstone")

    def _tombstone_garbage_key(self, topic: str) -> Case:
        key = self.rng.choice((None, b"", b"\x00", self.rng.randbytes(self.rng.randrange(0, 30))))
        return Case("tombstone_garbage_key", topic, key, None, "tombstone")

    # -- produce lines -------------------------------------------------------------
    def line(self) -> tuple[str, str]:
        """(kind, JSONL text) of a `pssync produce` line: valid, or mutated."""
        rng = self.rng
        topic = rng.choice(INGEST_TOPICS)
        key, value = self.values.record(topic, edge=rng.random() < 0.1)
        obj: dict[str, Any] = {
            "topic": topic,
            "key": self.forms.get(topic, "key").to_json(key),
            "value": self.forms.get(topic, "value").to_json(value),
        }
        if rng.random() < 0.2:
            obj["headers"] = {"correlation_id": self.values.text()}
        kind = rng.choice(
            (
                "line_good",
                "line_tombstone",
                "line_field",
                "line_field",
                "line_field",
                "line_shape",
                "line_text",
                "line_text",
            )
        )
        if kind == "line_tombstone":
            obj["value"] = None
        elif kind == "line_field":
            self._mutate_json(obj)
        elif kind == "line_shape":
            obj = self._reshape(obj)
        if obj is NESTED:
            depth = rng.choice((10, 1_000, 100_000))
            text = '{"a":' * depth + "{}" + "}" * depth
        else:
            text = json.dumps(obj, ensure_ascii=rng.random() < 0.5)
        if kind == "line_text":
            text = self._mutate_text(text)
        return kind, text

    def _mutate_json(self, obj: dict[str, Any]) -> None:
        rng = self.rng
        target = obj
        path: list[Any] = []
        node: Any = obj
        while isinstance(node, dict) and node and rng.random() < 0.8:
            name = rng.choice(sorted(node))
            path.append(name)
            target, node = node, node[name]
        if not path:
            return
        name = path[-1]
        target[name] = rng.choice(
            (
                None,
                "",
                0,
                -1,
                2**31,
                2**63,
                -(2**63) - 1,
                10**400,
                1e308,
                -0.0,
                True,
                [],
                {},
                {"x": 1},
                "\ud800",
                "\udfff\ud800",
                "x" * rng.choice((10, 10_000, 1_000_000)),
                "9" * rng.choice((20, 5_000, 1_000_000)),
                "1e999999999",
                "-1E-999999999",
                "NaN",
                "Infinity",
                "0E+1000000",
                "0." + "0" * 100_000 + "1",
                "0001-01-01",
                "9999-12-31",
                "10000-01-01",
                "2026-02-30",
                "2026-13-01",
                "0000-01-01",
                "0001-01-01T00:00:00+01:00",
                "9999-12-31T23:59:59.999-01:00",
                "2026-03-31T09:15:00.000Z",
                "2026-03-31T25:00:00Z",
                "2026-03-31T09:15:00",
                253_402_300_800_000,
                -(10**20),
                "DELETED",
                rng.choice(ODD_TEXT),
                "AAAA",
                "!!!",
            )
        )
        if rng.random() < 0.2:
            target[rng.choice(("unknown", "x_extra", "", "\u0000"))] = 1
        if rng.random() < 0.1:
            target.pop(name, None)

    def _reshape(self, obj: dict[str, Any]) -> Any:
        rng = self.rng
        return rng.choice(
            (
                [obj],
                None,
                "text",
                42,
                {},
                {**obj, "topic": rng.choice(("cdc.hr.workers", "", None, 5, "sync.dlq"))},
                {k: v for k, v in obj.items() if k != "value"},
                {
                    **obj,
                    "headers": rng.choice(
                        ([1], "h", {"a": None}, {"\ud800": "x"}, {"a": "\udc80"})
                    ),
                },
                {**obj, "key": rng.choice(("bare-id", 17, [], None, {"wrong": "x"}))},
                {**obj, "extra": 1},
                NESTED,
            )
        )

    def _mutate_text(self, text: str) -> str:
        rng = self.rng
        variant = rng.randrange(6)
        if variant == 0:
            return text[: rng.randrange(0, len(text))]
        if variant == 1:
            i = rng.randrange(len(text))
            return text[:i] + rng.choice('{}[]",:\\\u0000\ud800 ') + text[i + 1 :]
        if variant == 2:
            return text + rng.choice((" ", "}", "x", "\n{}"))
        if variant == 3:
            return rng.choice(("{", "[" * 100_000, '{"a":' * 50_000, "\ufeff" + text, "nul"))
        if variant == 4:
            return text.replace("0", "9" * rng.choice((1, 5_000)), 1)
        return "".join(c if rng.random() > 0.02 else chr(rng.randrange(0, 0x110000)) for c in text)


def rng_pick(rng: random.Random) -> bool:
    return rng.random() < 0.5


NESTED: Any = object()  # a line of objects nested deeper than any parser's recursion


def _is_decimal(f: dict[str, Any]) -> bool:
    return _logical(f) == "decimal"


def _logical(f: dict[str, Any]) -> str | None:
    kind = f["type"]
    for branch in kind if isinstance(kind, list) else [kind]:
        if isinstance(branch, dict) and branch.get("logicalType"):
            return str(branch["logicalType"])
    return None


def _fields_of(topic: str, schema: dict[str, Any]) -> list[dict[str, Any]]:
    return list(schema["fields"] if topic == ACTIONS_TOPIC else _image_fields(schema))


def _images(topic: str, value: dict[str, Any]) -> list[dict[str, Any]]:
    if topic == ACTIONS_TOPIC:
        return [value]
    return [i for i in (value.get("after"), value.get("before")) if i is not None]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str) and len(value) > 1:
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)


# -- running cases ----------------------------------------------------------------------------


class Hang(Exception):
    """A case ran past its time bound."""


@dataclass(slots=True)
class Outcomes:
    """What a run saw: counts per kind and outcome, failures, the slowest case."""

    cases: int = 0
    by_kind: Counter[tuple[str, str]] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    crashes: list[tuple[str, str, dict[str, Any] | str]] = field(default_factory=list)
    hangs: list[tuple[str, dict[str, Any] | str]] = field(default_factory=list)
    wrong: list[tuple[str, str, dict[str, Any] | str]] = field(default_factory=list)
    flow_failures: Counter[str] = field(default_factory=Counter)
    routed: int = 0
    emits: int = 0
    slowest: tuple[float, str, str] = (0.0, "", "")

    def note_time(self, seconds: float, kind: str, detail: str) -> None:
        if seconds > self.slowest[0]:
            self.slowest = (seconds, kind, detail)

    @property
    def ok(self) -> bool:
        return not (self.crashes or self.hangs or self.wrong or self.flow_failures)


def reason_of(letter_value: dict[str, Any]) -> str:
    return f"{letter_value['stage']}:{letter_value['error_class']}"


class Runner:
    """Runs cases through decode -> validate -> route -> keyed flows, and produce lines
    through parse -> encode -> decode, checking every outcome."""

    def __init__(self, root: Path, seed: int, case_timeout_s: float = 10.0, huge: int = 1 << 20):
        self.decoder = make_decoder()
        self.cases = Cases(self.decoder, seed, huge)
        config = FlowConfig(orphan_grace_ms=900_000, dependency_timeout_ms=900_000)
        self.pipeline = OfflinePipeline(root, config)
        self.case_timeout_s = case_timeout_s
        self.out = Outcomes()
        self.offset = 0
        self.pending = 0
        self.forms = Forms()

    def close(self) -> None:
        self.pipeline.close()

    # time bound: a SIGALRM interrupts a case that runs too long (main thread only)
    def _bounded(self, fn: Callable[[], Any]) -> Any:
        def expired(signum: int, frame: FrameType | None) -> None:
            raise Hang(f"over {self.case_timeout_s}s")

        previous = signal.signal(signal.SIGALRM, expired)
        signal.setitimer(signal.ITIMER_REAL, self.case_timeout_s)
        try:
            return fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    def run_ingest(self, case: Case) -> None:
        """The hostile record, then a good one of the same topic, as one batch."""
        self.out.cases += 1
        _, good_value, gk, gv = self.cases.good(case.topic)
        good = Case(
            "good", case.topic, gk, gv, "change", self.cases.expected_after(case.topic, good_value)
        )
        records = [self._inbound(case), self._inbound(good)]
        started = time.perf_counter()
        try:
            decoded = self._bounded(lambda: asyncio.run(self.decoder.decode(records)))
            self._check(case, good, records, decoded)
            self._bounded(lambda: self._route(case.topic, decoded))
        except Hang as exc:
            self.out.hangs.append(
                (case.kind, case.to_json() if len(case.value or b"") < 4096 else str(exc))
            )
            self.out.by_kind[(case.kind, "hang")] += 1
        except Exception as exc:
            self.out.crashes.append((case.kind, f"{type(exc).__name__}: {exc}"[:500], _small(case)))
            self.out.by_kind[(case.kind, "crash")] += 1
        self.out.note_time(time.perf_counter() - started, case.kind, json.dumps(_small(case))[:300])

    def _inbound(self, case: Case) -> Inbound:
        self.offset += 1
        headers = (("correlation_id", f"fuzz-{self.offset}".encode()),)
        return Inbound(case.topic, 0, self.offset, case.key, case.value, headers)

    def _check(self, case: Case, good: Case, records: list[Inbound], decoded: Decoded) -> None:
        seen: dict[int, list[str]] = {r.offset: [] for r in records}
        changes = {}
        for change in decoded.changes:
            seen[change.source.offset].append("change")
            changes[change.source.offset] = change
        for letter in decoded.dead:
            value = letter.value or {}
            seen[value["offset"]].append("dead")
            if not (value.get("error_class") and value.get("error_message") and value.get("stage")):
                self.out.wrong.append((case.kind, "dead letter without a reason", _small(case)))
            self.out.reasons[reason_of(value)] += 1
        tombstones = [r.offset for r in records if r.value is None]
        for offset in tombstones:
            seen[offset].append("tombstone")
        if decoded.tombstones != len(tombstones) or any(len(v) != 1 for v in seen.values()):
            self.out.wrong.append((case.kind, f"outcomes {seen}", _small(case)))
            return
        for c, record in ((case, records[0]), (good, records[1])):
            (got,) = seen[record.offset]
            if c is case:
                self.out.by_kind[(case.kind, got)] += 1
            if c.expect is not None and got != c.expect:
                what = f"expected {c.expect}, got {got}"
                if got == "dead":
                    letter = next(
                        d.value
                        for d in decoded.dead
                        if d.value and d.value["offset"] == record.offset
                    )
                    what += f" ({letter['error_class']}: {letter['error_message'][:200]})"
                self.out.wrong.append((c.kind, what, _small(c)))
            elif got == "change" and c.after is not None:
                change = changes[record.offset]
                if change.after != c.after:
                    self.out.wrong.append(
                        (c.kind, "change differs from what was written", _small(c))
                    )

    def _route(self, topic: str, decoded: Decoded) -> None:
        if not decoded.changes:
            return
        self.pipeline.ingest((topic, 0), decoded.changes)
        self.out.routed += len(decoded.changes)
        self.pending += 1
        if self.pending >= 25:
            self.deliver()

    def deliver(self) -> None:
        before = len(self.pipeline.counters.results)
        self.pipeline.wall_ms += 1_000
        self.pipeline.idle_except(())
        self.pipeline.deliver()
        self.pending = 0
        for result in self.pipeline.counters.results[before:]:
            self.out.emits += len(result.emits)
            for failure in result.failures:
                self.out.flow_failures[
                    f"{type(failure.error).__name__}: {failure.error}"[:200]
                ] += 1
        del self.pipeline.counters.results[:]

    def run_line(self, kind: str, text: str) -> None:
        """One produce line: rejected with a clear message, or encoded and decoded back."""
        self.out.cases += 1
        started = time.perf_counter()
        try:
            outcome = self._bounded(lambda: self._line(text))
            self.out.by_kind[(kind, outcome)] += 1
        except Hang:
            self.out.hangs.append((kind, text[:2000]))
            self.out.by_kind[(kind, "hang")] += 1
        except Exception as exc:
            self.out.crashes.append((kind, f"{type(exc).__name__}: {exc}"[:500], text[:2000]))
            self.out.by_kind[(kind, "crash")] += 1
        self.out.note_time(time.perf_counter() - started, kind, text[:300])

    def _line(self, text: str) -> str:
        try:
            topic, key, value, headers = parse_line(self.forms, 7, text)
        except LineError as exc:
            message = str(exc)
            if not message.startswith("line 7: ") or len(message) > 2_000 or "Traceback" in message:
                self.out.wrong.append(("line", f"unclear message {message[:300]!r}", text[:2000]))
            self.out.reasons["line:" + _message_kind(message)] += 1
            return "rejected"
        codec = self.decoder.codec
        key_bytes = None if key is None else codec.encode_key(topic, key)
        value_bytes = None if value is None else codec.encode_value(topic, value)
        for _, v in headers:
            v.decode()
        if value_bytes is not None:
            back = self.forms.get(topic, "value").to_json(codec.decode_value(topic, value_bytes))
            sent = self.forms.get(topic, "value").to_json(value)
            if back != sent:
                self.out.wrong.append(
                    ("line", "value changed on the way through Avro", text[:2000])
                )
        if key_bytes is not None:
            codec.decode_key(topic, key_bytes)
        return "sent"


def _message_kind(message: str) -> str:
    """A short class of a LineError message, for the counts (the field-free part)."""
    body = message.split(": ", 1)[1] if ": " in message else message
    for marker in (
        "not valid JSON",
        "unknown field",
        "missing required field",
        "may not be null",
        "is not a contract topic",
        "expected",
        "exceeds precision",
        "decimal places",
        "not a date",
        "out of range",
        "not valid UTF-8",
        "not a decimal",
        "not a finite",
        "too deeply nested",
        "not one of",
        "base64",
        "time zone",
        "instant",
    ):
        if marker in body:
            return marker
    return body[:40]


def _small(case: Case) -> dict[str, Any] | str:
    if len(case.value or b"") > 8192:
        return f"{case.kind} on {case.topic}: a {len(case.value or b'')}-byte value"
    return case.to_json()


# -- the full run -----------------------------------------------------------------------------


def run(cases: int, seed: int, produce_share: float, huge: int, case_timeout_s: float) -> Outcomes:
    root = Path(tempfile.mkdtemp(prefix="pssync-fuzz-"))
    runner = Runner(root, seed, case_timeout_s, huge)
    try:
        for i in range(cases):
            if runner.cases.rng.random() < produce_share:
                runner.run_line(*runner.cases.line())
            else:
                runner.run_ingest(runner.cases.ingest())
            if i % 10_000 == 9_999:
                print(f"  {i + 1} cases, {len(runner.out.crashes)} crashes", flush=True)
        runner.deliver()
        runner.pipeline.finish(3_600_000)
        runner.deliver()
        return runner.out
    finally:
        runner.close()
        shutil.rmtree(root, ignore_errors=True)


def giant_cases(seed: int) -> Outcomes:
    """The two largest values the issue names, once each: a 50 MB string and a decimal of
    10^6 digits, through decode and routing, each under the time bound."""
    root = Path(tempfile.mkdtemp(prefix="pssync-fuzz-giant-"))
    runner = Runner(root, seed, case_timeout_s=60.0, huge=50 * 1024 * 1024)
    try:
        runner.cases.rng = random.Random(seed)
        case = runner.cases._huge_string("cdc.hr.worker")
        case.kind = "string_50MB"
        runner.run_ingest(case)
        runner.cases.huge_digits = 1_000_000
        case = runner.cases._huge_decimal("cdc.psa.time_entry")
        while "decimal_giant" not in case.kind and len(case.value or b"") < 400_000:
            case = runner.cases._huge_decimal("cdc.psa.time_entry")
        case.kind = "decimal_giant"
        runner.run_ingest(case)
        runner.deliver()
        return runner.out
    finally:
        runner.close()
        shutil.rmtree(root, ignore_errors=True)


def report(out: Outcomes, giant: Outcomes, args: argparse.Namespace, seconds: float) -> str:
    lines = [
        f"# Fuzzing the ingest path and `pssync produce` ({dt.date.today().isoformat()})",
        "",
        f"Command: `python -m bench.fuzz --cases {args.cases} --seed {args.seed}`  ",
        f"{out.cases} cases in {seconds:.0f} s (seed {args.seed}, "
        f"case time bound {args.case_timeout}s, huge strings up to {args.huge} bytes); "
        f"plus {giant.cases} giant cases (a 50 MB string, a decimal of up to 10^6 digits).",
        "",
        f"- crashes: **{len(out.crashes) + len(giant.crashes)}**",
        f"- hangs: **{len(out.hangs) + len(giant.hangs)}**",
        f"- wrong outcomes: **{len(out.wrong) + len(giant.wrong)}**",
        f"- keyed-flow failures (dead-lettered): **{sum(out.flow_failures.values())}**",
        f"- changes routed through the keyed flows: {out.routed}; "
        f"outputs they emitted: {out.emits}",
        f"- slowest case: {out.slowest[0] * 1000:.1f} ms "
        f"({out.slowest[1]}: `{out.slowest[2][:160]}`)",
        f"- giant cases: {_giant_line(giant)}",
        "",
        "## Outcome per case kind",
        "",
        "| case kind | change | tombstone | dead | sent | rejected | crash | hang |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    kinds = sorted({k for k, _ in out.by_kind})
    for kind in kinds:
        cells = [
            str(out.by_kind.get((kind, o), 0))
            for o in ("change", "tombstone", "dead", "sent", "rejected", "crash", "hang")
        ]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Dead letters and rejected lines per reason",
        "",
        "| reason | count |",
        "|---|---:|",
    ]
    lines += [f"| {r} | {n} |" for r, n in sorted(out.reasons.items(), key=lambda x: -x[1])]
    for title, items in (
        ("Crashes", out.crashes + giant.crashes),
        ("Hangs", out.hangs + giant.hangs),
        ("Wrong outcomes", out.wrong + giant.wrong),
    ):
        if items:
            lines += ["", f"## {title}", ""]
            lines += [f"- `{str(item)[:400]}`" for item in items[:30]]
    if out.flow_failures:
        lines += ["", "## Keyed-flow failures", ""]
        lines += [f"- {n} x `{what}`" for what, n in out.flow_failures.most_common(20)]
    return "\n".join(lines) + "\n"


def _giant_line(giant: Outcomes) -> str:
    kinds = ", ".join(f"{k} -> {o}" for (k, o), n in sorted(giant.by_kind.items()))
    return f"{kinds}; slowest {giant.slowest[0]:.2f} s ({giant.slowest[1]})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--produce-share", type=float, default=0.3)
    parser.add_argument("--huge", type=int, default=1 << 20, help="largest huge string (bytes)")
    parser.add_argument("--case-timeout", type=float, default=10.0)
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args(argv)
    logging.getLogger("pssync").setLevel(logging.ERROR)  # one warning per dead letter
    started = time.perf_counter()
    out = run(args.cases, args.seed, args.produce_share, args.huge, args.case_timeout)
    giant = giant_cases(args.seed)
    text = report(out, giant, args, time.perf_counter() - started)
    print(text)
    if not args.no_results:
        args.results.mkdir(parents=True, exist_ok=True)
        path = args.results / f"fuzz-{dt.date.today().isoformat()}.md"
        path.write_text(text)
        print(f"results: {path}")
    return 0 if out.ok and giant.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
