"""The contract's JSON form, converted to and from Avro values by schema.

JSON form: plain JSON, no union wrapping; dates `"2026-03-31"`, instants
ISO-8601 UTC `"2026-03-31T09:15:00.000Z"`, decimals as strings `"142.50"`,
bytes as base64. A missing nullable field is null; an unknown field is an
error naming the field path.

Both directions refuse what the schema cannot hold, as a `JsonFormError` naming
the field: text that is not UTF-8 (a lone surrogate), integers outside int/long,
instants and dates outside years 1-9999, decimals beyond their precision. A
decoded value keeps the reader's logical types even when the writer's schema had
none (Avro resolves by the underlying type: an `int`, `long` or `bytes` arrives
raw and is converted here), and a decimal's bytes are bounded by its precision
before they are turned into a number, so a hostile length costs no time.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime as dt
import re
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

UTC = dt.UTC
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?")


class JsonFormError(ValueError):
    """A JSON value that does not fit the schema; `path` names the field."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path or '<root>'}: {message}")
        self.path = path
        self.message = message


def _named(schema: Any, names: dict[str, Any], namespace: str | None) -> None:
    """Collect named types (records, enums, fixed) of a JSON schema into `names`."""
    if isinstance(schema, list):
        for branch in schema:
            _named(branch, names, namespace)
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    if kind in ("record", "enum", "fixed", "error"):
        name = schema["name"]
        ns = schema.get("namespace", namespace)
        full = name if "." in name or not ns else f"{ns}.{name}"
        names[full] = schema
        names.setdefault(full.rsplit(".", 1)[-1], schema)
        inner_ns = full.rsplit(".", 1)[0] if "." in full else ns
        for f in schema.get("fields", []):
            _named(f["type"], names, inner_ns)
    elif kind == "array":
        _named(schema["items"], names, namespace)
    elif kind == "map":
        _named(schema["values"], names, namespace)
    elif isinstance(kind, dict | list):
        _named(kind, names, namespace)


class JsonForm:
    """Converter for one schema (given as parsed JSON, not fastavro's form)."""

    def __init__(self, schema: Any) -> None:
        self.schema = schema
        self.names: dict[str, Any] = {}
        _named(schema, self.names, None)
        self._compiled: Out | None = None

    def _resolve(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema in self.names:
            return self.names[schema]
        if isinstance(schema, dict) and isinstance(schema.get("type"), dict | list):
            return schema["type"]
        return schema

    # -- JSON -> Avro -----------------------------------------------------
    def from_json(self, value: Any, path: str = "") -> Any:
        return self._in(self.schema, value, path)

    def _in(self, schema: Any, value: Any, path: str) -> Any:
        schema = self._resolve(schema)
        if isinstance(schema, list):
            if value is None:
                if "null" in schema:
                    return None
                raise JsonFormError(path, "null is not allowed here")
            branches = [b for b in schema if b != "null"]
            if len(branches) == 1:
                return self._in(branches[0], value, path)
            errors = []
            for branch in schema:
                if branch == "null":
                    continue
                try:
                    return self._in(branch, value, path)
                except JsonFormError as exc:
                    errors.append(exc.message)
            raise JsonFormError(path, "; ".join(errors))
        kind = schema.get("type") if isinstance(schema, dict) else schema
        logical = schema.get("logicalType") if isinstance(schema, dict) else None
        if value is None and kind != "null":
            raise JsonFormError(path, "is required and may not be null")
        if kind == "null":
            if value is not None:
                raise JsonFormError(path, f"expected null, got {brief(value)}")
            return None
        if logical == "decimal":
            return _decimal(value, int(schema.get("scale", 0)), int(schema["precision"]), path)
        if logical == "date":
            if not isinstance(value, str) or not _DATE.fullmatch(value):
                raise JsonFormError(path, f"expected a date string YYYY-MM-DD, got {brief(value)}")
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                raise JsonFormError(path, f"{brief(value)} is not a date (YYYY-MM-DD)") from None
        if logical in ("timestamp-millis", "timestamp-micros"):
            return _instant(value, path)
        if kind == "string":
            if not isinstance(value, str):
                raise JsonFormError(path, f"expected a string, got {type(value).__name__}")
            return _utf8(value, path)
        if kind == "boolean":
            if not isinstance(value, bool):
                raise JsonFormError(path, f"expected true or false, got {brief(value)}")
            return value
        if kind in ("int", "long"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise JsonFormError(path, f"expected an integer, got {brief(value)}")
            low, high = _INT_RANGE[kind]
            if not low <= value <= high:
                raise JsonFormError(path, f"{brief(value)} is out of range for an Avro {kind}")
            return value
        if kind in ("float", "double"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise JsonFormError(path, f"expected a number, got {brief(value)}")
            return float(value)
        if kind == "bytes":
            if not isinstance(value, str):
                raise JsonFormError(path, "expected base64 text for bytes")
            try:
                return base64.b64decode(value, validate=True)
            except binascii.Error:
                raise JsonFormError(path, "is not valid base64") from None
        if kind == "enum":
            if value not in schema["symbols"]:
                raise JsonFormError(path, f"{brief(value)} is not one of {schema['symbols']}")
            return value
        if kind == "array":
            if not isinstance(value, list):
                raise JsonFormError(path, "expected a list")
            return [self._in(schema["items"], v, f"{path}[{i}]") for i, v in enumerate(value)]
        if kind == "map":
            if not isinstance(value, dict):
                raise JsonFormError(path, "expected an object")
            return {
                _utf8(k, f"{path}.{k!r}"): self._in(schema["values"], v, f"{path}.{k}")
                for k, v in value.items()
            }
        if kind in ("record", "error"):
            return self._record_in(schema, value, path)
        raise JsonFormError(path, f"unsupported schema type {kind!r}")

    def _record_in(self, schema: dict[str, Any], value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise JsonFormError(path, f"expected an object, got {type(value).__name__}")
        fields = schema["fields"]
        known = {f["name"] for f in fields}
        unknown = sorted(set(value) - known)
        if unknown:
            where = f"{path}.{unknown[0]}" if path else unknown[0]
            raise JsonFormError(where, "unknown field")
        out: dict[str, Any] = {}
        for f in fields:
            name = f["name"]
            fpath = f"{path}.{name}" if path else name
            if name in value:
                out[name] = self._in(f["type"], value[name], fpath)
            elif "default" in f:
                out[name] = copy.deepcopy(f["default"])
            elif _nullable(self._resolve(f["type"])):
                out[name] = None
            else:
                raise JsonFormError(fpath, "missing required field")
        return out

    # -- Avro -> JSON -----------------------------------------------------
    def to_json(self, value: Any) -> Any:
        """The JSON form of a decoded Avro value (a converter compiled once per schema:
        the same result as walking the schema, `_out`, at a fraction of the cost)."""
        out = self._compiled
        if out is None:
            out = self._compiled = self._compile(self.schema, set(), "")
        return out(value)

    def _compile(self, schema: Any, seen: set[str], path: str) -> Out:
        """A function converting one value of `schema`; recursive named types fall back
        to walking the schema. `path` names the field in errors."""
        if isinstance(schema, str) and schema in self.names:
            if schema in seen:
                name: str = schema
                return lambda v: self._out(name, v)
            seen = seen | {schema}
        schema = self._resolve(schema)
        if isinstance(schema, list):
            others = [b for b in schema if b != "null"]
            logical = _logical_out(self._resolve(others[0]), path) if len(others) == 1 else None
            if logical is not None:  # ["null", a logical leaf]: typed or raw, None passes
                return logical
            simple = [self._resolve(b) for b in schema]
            simple = [b for b in simple if not isinstance(b, dict) or _leaf(b)]
            if len(simple) == len(schema):
                decimals = [b for b in simple if isinstance(b, dict) and _is_decimal(b)]
                if not decimals:
                    return _plain_or_none  # leaves only: `_out` ends in `_plain` too
                if len(decimals) == 1:
                    convert = _logical_out(decimals[0], path)
                    assert convert is not None
                    return lambda v: convert(v) if isinstance(v, Decimal) else _plain_or_none(v)
            branches = [
                (self._resolve(b), self._compile(b, seen, path)) for b in schema if b != "null"
            ]
            if len(branches) == 1:  # ["null", X]: X when it fits, as `_out` picks it
                (only, conv) = branches[0]
                return lambda v: None if v is None else conv(v) if _fits(only, v) else _plain(v)

            def union(v: Any) -> Any:
                if v is None:
                    return None
                for branch, conv in branches:
                    if _fits(branch, v):
                        return conv(v)
                return _plain(v)

            return union
        kind = schema.get("type") if isinstance(schema, dict) else schema
        if kind in ("record", "error"):
            fields = [
                (f["name"], self._compile(f["type"], seen, f"{path}.{f['name']}".lstrip(".")))
                for f in schema["fields"]
            ]

            def record(v: Any) -> Any:
                if v is None:
                    return None
                get = v.get
                return {name: conv(get(name)) for name, conv in fields}

            return record
        if kind == "array":
            item = self._compile(schema["items"], seen, f"{path}[]")
            return lambda v: None if v is None else [item(x) for x in v]
        if kind == "map":
            inner = self._compile(schema["values"], seen, f"{path}.*")
            return lambda v: None if v is None else {k: inner(x) for k, x in v.items()}
        return _logical_out(schema, path) or _plain_or_none

    def _out(self, schema: Any, value: Any) -> Any:
        schema = self._resolve(schema)
        if value is None:
            return None
        if isinstance(schema, list):
            for branch in schema:
                if branch != "null" and _fits(self._resolve(branch), value):
                    return self._out(branch, value)
            others = [b for b in schema if b != "null"]
            logical = _logical_out(self._resolve(others[0]), "") if len(others) == 1 else None
            return _plain(value) if logical is None else logical(value)
        kind = schema.get("type") if isinstance(schema, dict) else schema
        if kind in ("record", "error"):
            return {f["name"]: self._out(f["type"], value.get(f["name"])) for f in schema["fields"]}
        if kind == "array":
            return [self._out(schema["items"], v) for v in value]
        if kind == "map":
            return {k: self._out(schema["values"], v) for k, v in value.items()}
        logical = _logical_out(schema, "")
        return _plain(value) if logical is None else logical(value)


Out = Callable[[Any], Any]


def _is_decimal(schema: dict[str, Any]) -> bool:
    return schema.get("logicalType") == "decimal"


def _leaf(schema: dict[str, Any]) -> bool:
    """A schema `_out` converts with `_plain` (or, for decimals, `format_decimal`)."""
    return schema.get("type") not in ("record", "error", "array", "map") and not isinstance(
        schema.get("type"), dict | list
    )


def _plain_or_none(value: Any) -> Any:
    return None if value is None else _plain(value)


def _nullable(schema: Any) -> bool:
    return schema == "null" or (isinstance(schema, list) and "null" in schema)


def _fits(schema: Any, value: Any) -> bool:
    kind = schema.get("type") if isinstance(schema, dict) else schema
    logical = schema.get("logicalType") if isinstance(schema, dict) else None
    if logical == "decimal":
        return isinstance(value, Decimal)
    if logical == "date":
        return isinstance(value, dt.date) and not isinstance(value, dt.datetime)
    if logical in ("timestamp-millis", "timestamp-micros"):
        return isinstance(value, dt.datetime)
    if kind in ("record", "map", "error"):
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string" or kind == "enum":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind in ("int", "long"):
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "bytes":
        return isinstance(value, bytes)
    return True


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return format_instant(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def format_instant(value: dt.datetime) -> str:
    if value.tzinfo is not UTC:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    # ISO-8601 with the year in four digits, as `from_json` reads it back (strftime's
    # "%Y" writes year 1 as "1", which no ISO parser takes)
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def format_decimal(value: Decimal, scale: int) -> str:
    return str(value.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP))


def _decimal(value: Any, scale: int, precision: int, path: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise JsonFormError(
            path, f'expected a decimal as a string such as "142.50", got {brief(value)}'
        )
    try:
        number = Decimal(value)
    except (InvalidOperation, ValueError):
        raise JsonFormError(path, f"{brief(value)} is not a decimal number") from None
    if not number.is_finite():
        raise JsonFormError(path, f"{brief(value)} is not a finite decimal")
    if number and number.adjusted() >= precision - scale:
        raise JsonFormError(path, f"{brief(value)} exceeds precision {precision}")
    quantized = number.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP)
    if quantized != number:
        raise JsonFormError(path, f"{brief(value)} has more than {scale} decimal places")
    if len(quantized.as_tuple().digits) > precision:
        raise JsonFormError(path, f"{brief(value)} exceeds precision {precision}")
    return quantized


def _instant(value: Any, path: str) -> dt.datetime:
    if isinstance(value, int) and not isinstance(value, bool):
        return _instant_of_ms(value, path)
    if not isinstance(value, str) or not _INSTANT.fullmatch(value):
        raise JsonFormError(
            path,
            f"expected an ISO-8601 instant such as 2026-03-31T09:15:00.000Z, got {brief(value)}",
        )
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise JsonFormError(path, f"{brief(value)} is not an ISO-8601 instant") from None
    if parsed.tzinfo is None:
        raise JsonFormError(path, f"{brief(value)} has no time zone (use Z for UTC)")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise JsonFormError(path, f"{brief(value)} is out of range in UTC") from None


# -- limits and raw forms of logical types ------------------------------------------

_INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DAY = dt.date(1970, 1, 1)


def brief(value: Any) -> str:
    """A value for an error message: bounded, whatever its size."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"


def _utf8(value: str, path: str) -> str:
    """`value`, if it can be written as UTF-8 (JSON allows lone surrogates; Avro does not)."""
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        where = f"{exc.start}" if exc.end - exc.start == 1 else f"{exc.start}-{exc.end - 1}"
        raise JsonFormError(
            path, f"is not valid UTF-8 text (a lone surrogate at character {where})"
        ) from None
    return value


def _instant_of_ms(ms: int, path: str) -> dt.datetime:
    try:
        return _EPOCH + dt.timedelta(milliseconds=ms)
    except OverflowError:
        raise JsonFormError(path, f"{brief(ms)} ms is out of the range of an instant") from None


def _date_of_days(days: int, path: str) -> dt.date:
    try:
        return _EPOCH_DAY + dt.timedelta(days=days)
    except OverflowError:
        raise JsonFormError(path, f"{brief(days)} days is out of the range of a date") from None


def decimal_max_bytes(precision: int) -> int:
    """The most bytes a two's-complement unscaled value of `precision` digits takes."""
    largest: int = 10**precision - 1
    return (largest.bit_length() + 1 + 7) // 8


def decimal_of(value: Any, precision: int, scale: int, path: str) -> Decimal:
    """A decoded decimal (or its raw unscaled bytes) within `precision`; JsonFormError if not."""
    if isinstance(value, bytes):
        if len(value) > decimal_max_bytes(precision):
            raise JsonFormError(
                path, f"a decimal of {len(value)} bytes exceeds precision {precision}"
            )
        value = Decimal(int.from_bytes(value, "big", signed=True)).scaleb(-scale)
    if not isinstance(value, Decimal):
        raise JsonFormError(path, f"expected a decimal, got {type(value).__name__}")
    if not value.is_finite() or (value and value.adjusted() >= precision - scale):
        raise JsonFormError(path, f"{brief(str(value))} exceeds precision {precision}")
    return value


def _logical_out(schema: Any, path: str) -> Out | None:
    """The converter of a logical leaf (decimal, date, instant) to the JSON form, taking
    its raw Avro form too; None for any other schema."""
    logical = schema.get("logicalType") if isinstance(schema, dict) else None
    if logical == "decimal":
        precision, scale = int(schema["precision"]), int(schema.get("scale", 0))

        def decimal(v: Any) -> Any:
            if v is None:
                return None
            return format_decimal(decimal_of(v, precision, scale, path), scale)

        return decimal
    if logical == "date":

        def date(v: Any) -> Any:
            if isinstance(v, int) and not isinstance(v, bool):
                v = _date_of_days(v, path)
            return _plain_or_none(v)

        return date
    if logical in ("timestamp-millis", "timestamp-micros"):
        micros = logical == "timestamp-micros"

        def instant(v: Any) -> Any:
            if isinstance(v, int) and not isinstance(v, bool):
                v = _instant_of_ms(v // 1000 if micros else v, path)
            return _plain_or_none(v)

        return instant
    return None
