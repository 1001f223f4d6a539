"""Avro in the Confluent wire format: magic byte 0, 4-byte schema ID, Avro binary.

Guarantees:
- Every contract schema is registered at start-up (`register_all`), under the
  TopicNameStrategy subjects `<topic>-key` / `<topic>-value` of the physical
  (prefixed) topic name.
- Decoding uses the *writer's* schema, found by the ID in the message, and
  resolves it into the contract (reader) schema, so records written under an
  older or newer compatible schema decode.
- Writer schemas are cached by ID. The registry is never called per message:
  an ID not yet cached raises `UnknownSchemaId`; callers batch those IDs and
  `prefetch` them once, off the event loop, then decode again. An ID the
  registry does not know is remembered as unknown (the record goes to the DLQ).
- Decoding is bounded by the input: a decimal's bytes may not exceed what its
  precision needs (fastavro turns them into a number in quadratic time, so a
  400 kB decimal would stall the worker for half a minute), and lengths read from
  corrupt input end in `DecodeError`, never in a read past the record.
"""

from __future__ import annotations

import asyncio
import io
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import LOGICAL_READERS

from pssync.avro.contract import schema_file
from pssync.avro.jsonform import decimal_max_bytes
from pssync.avro.registry import RegistryClient, RegistryError, SchemaNotFound

SCHEMA_DIR = Path(__file__).parent / "schemas"
MAGIC = 0
_HEADER = struct.Struct(">BI")


def _bounded(read_decimal: Any) -> Any:
    """fastavro's decimal reader, refusing more bytes than the precision allows (of the
    reader's schema when it has one: a writer may declare any precision)."""

    def read(data: bytes, writer_schema: Any = None, reader_schema: Any = None) -> Any:
        schema = reader_schema if isinstance(reader_schema, dict) else writer_schema
        precision = int(schema["precision"])
        if len(data) > decimal_max_bytes(precision):
            raise ValueError(f"a decimal of {len(data)} bytes exceeds precision {precision}")
        return read_decimal(data, writer_schema, reader_schema)

    read.bounded = True  # type: ignore[attr-defined]
    return read


# fastavro's documented hook for logical types; every reader in the process is bounded
for _kind in ("bytes-decimal", "fixed-decimal"):
    if not getattr(LOGICAL_READERS[_kind], "bounded", False):
        LOGICAL_READERS[_kind] = _bounded(LOGICAL_READERS[_kind])


class DecodeError(Exception):
    """Bytes that are not a decodable Confluent-framed Avro record."""

    reason = "undecodable"


class UnknownSchemaId(DecodeError):
    """The schema ID is neither cached nor known to the registry."""

    reason = "unknown_schema_id"

    def __init__(self, schema_id: int, known_missing: bool) -> None:
        super().__init__(f"schema id {schema_id} is not known to the schema registry")
        self.schema_id = schema_id
        self.known_missing = known_missing


def load_schema_text(topic: str, part: str) -> str:
    """The contract schema of a logical topic's key or value, as JSON text."""
    return (SCHEMA_DIR / schema_file(topic, part)).read_text()


@dataclass(slots=True)
class _Bound:
    schema_id: int
    parsed: Any
    header: bytes


class Codec:
    """Encodes and decodes contract topics through a schema registry."""

    def __init__(self, registry: RegistryClient, prefix: str = "") -> None:
        self.registry = registry
        self.prefix = prefix
        self._bound: dict[tuple[str, str], _Bound] = {}
        self._writers: dict[int, Any] = {}
        self._missing: set[int] = set()

    # -- start-up ---------------------------------------------------------
    def register_all(self, topics: Iterable[str]) -> None:
        """Register key and value schemas of `topics` (logical names). Blocking."""
        for topic in topics:
            for part in ("key", "value"):
                self.register(topic, part, load_schema_text(topic, part))

    def register(self, topic: str, part: str, schema_text: str) -> int:
        """Register `schema_text` for `topic`'s part and write with it from now on."""
        parsed = parse_schema(json.loads(schema_text))
        subject = f"{self.prefix}{topic}-{part}"
        schema_id = self.registry.register(subject, json.dumps(json.loads(schema_text)))
        self._bound[(topic, part)] = _Bound(schema_id, parsed, _HEADER.pack(MAGIC, schema_id))
        self._writers[schema_id] = parsed
        return schema_id

    def is_bound(self, topic: str) -> bool:
        return (topic, "value") in self._bound

    # -- encode -----------------------------------------------------------
    def encode(self, topic: str, part: str, value: Any) -> bytes:
        bound = self._bound[(topic, part)]
        buf = io.BytesIO()
        buf.write(bound.header)
        schemaless_writer(buf, bound.parsed, value)
        return buf.getvalue()

    def encode_key(self, topic: str, key: Any) -> bytes:
        return self.encode(topic, "key", key)

    def encode_value(self, topic: str, value: Any) -> bytes:
        return self.encode(topic, "value", value)

    # -- decode -----------------------------------------------------------
    @staticmethod
    def schema_id_of(data: bytes) -> int:
        if len(data) < 5:
            raise DecodeError(f"{len(data)} bytes is too short for the Confluent wire format")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise DecodeError(f"magic byte {magic} is not the Confluent wire format's 0")
        return int(schema_id)

    def decode(self, topic: str, part: str, data: bytes) -> Any:
        """Decode with the writer's schema into the contract schema of `topic`."""
        schema_id = self.schema_id_of(data)
        writer = self._writers.get(schema_id)
        if writer is None:
            raise UnknownSchemaId(schema_id, schema_id in self._missing)
        bound = self._bound[(topic, part)]
        reader = None if schema_id == bound.schema_id else bound.parsed
        fo = io.BytesIO(data)
        fo.seek(5)
        try:
            value = schemaless_reader(fo, writer, reader)
        except Exception as exc:  # fastavro raises many types for corrupt input
            raise DecodeError(f"avro decode failed ({type(exc).__name__}): {exc}") from exc
        if fo.tell() != len(data):
            raise DecodeError(f"{len(data) - fo.tell()} trailing bytes after the Avro record")
        return value

    def decode_key(self, topic: str, data: bytes) -> Any:
        return self.decode(topic, "key", data)

    def decode_value(self, topic: str, data: bytes) -> Any:
        return self.decode(topic, "value", data)

    # -- writer schemas not yet seen -------------------------------------
    def unknown_ids(self, blobs: Iterable[bytes | None]) -> set[int]:
        """IDs in `blobs` whose writer schema is not cached (and not known missing)."""
        out: set[int] = set()
        for data in blobs:
            if data is None or len(data) < 5 or data[0] != MAGIC:
                continue
            schema_id = _HEADER.unpack_from(data)[1]
            if schema_id not in self._writers and schema_id not in self._missing:
                out.add(schema_id)
        return out

    def fetch_writer(self, schema_id: int) -> None:
        """Fetch one writer schema (blocking); a 404 marks the ID as missing."""
        try:
            text = self.registry.schema_by_id(schema_id)
        except SchemaNotFound:
            self._missing.add(schema_id)
            return
        try:
            self._writers[schema_id] = parse_schema(json.loads(text))
        except Exception:
            # A schema we cannot parse is as good as missing for decoding.
            self._missing.add(schema_id)

    async def prefetch(self, schema_ids: Iterable[int]) -> None:
        """Fetch writer schemas off the event loop. RegistryError propagates."""
        ids = [i for i in schema_ids if i not in self._writers and i not in self._missing]
        if not ids:
            return
        loop = asyncio.get_running_loop()
        for schema_id in ids:
            await loop.run_in_executor(None, self.fetch_writer, schema_id)


__all__ = ["Codec", "DecodeError", "RegistryError", "UnknownSchemaId", "load_schema_text"]
