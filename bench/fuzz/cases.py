"""The hostile cases: each one bad record (or `pssync produce` line) and what it must become."""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bench.fuzz.values import Values
from bench.fuzz.wire import (
    EPOCH,
    INGEST_TOPICS,
    ODD_TEXT,
    UNKNOWN_ID,
    FuzzRegistry,
    _image_fields,
    _is_decimal,
    _logical,
    avro_body,
    evolved_writer,
    frame,
    loose_writer,
    plain_writer,
    unscaled,
)
from pssync.avro.contract import ACTIONS_TOPIC, ENUMS, TABLES_BY_TOPIC
from pssync.connectors.jsonl import Forms
from pssync.streams.decode import Decoder

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
