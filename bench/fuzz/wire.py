"""The fuzzer's wire: an in-memory schema registry, the worker's decoder over it, framed
Avro, and the writer schemas a producer may use (loose, plain, evolved)."""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import struct
from decimal import Decimal
from typing import Any

from fastavro import parse_schema, schemaless_writer

from pssync.avro.codec import Codec, load_schema_text
from pssync.avro.contract import ACTIONS_TOPIC, TABLES_BY_TOPIC
from pssync.avro.registry import RegistryClient, SchemaNotFound
from pssync.settings import Settings
from pssync.streams.decode import Decoder, Stats
from pssync.streams.metrics import Metrics

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


def _is_decimal(f: dict[str, Any]) -> bool:
    return _logical(f) == "decimal"


def _logical(f: dict[str, Any]) -> str | None:
    kind = f["type"]
    for branch in kind if isinstance(kind, list) else [kind]:
        if isinstance(branch, dict) and branch.get("logicalType"):
            return str(branch["logicalType"])
    return None
