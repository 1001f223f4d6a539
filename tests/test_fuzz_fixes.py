"""One test per bug the hostile-input fuzzing found, at the module that had it, plus
hypothesis properties over `pssync produce` lines and the real CLI on a bad file."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz.cases import Cases
from bench.fuzz.wire import (
    FuzzRegistry,
    avro_body,
    frame,
    loose_writer,
    make_decoder,
    plain_writer,
    unscaled,
)
from pssync.avro.codec import DecodeError
from pssync.avro.jsonform import JsonForm, JsonFormError, format_instant
from pssync.connectors.jsonl import Forms, LineError, parse_line
from pssync.streams.decode import Decoded, Decoder, Inbound
from pssync.streams.routing import month_end_ms
from tests.conftest import SettingsFactory
from tests.test_cli import cli_env, create_topics, pssync

TE = "cdc.psa.time_entry"
UTC = dt.UTC


def decode(decoder: Decoder, *records: Inbound) -> Decoded:
    return asyncio.run(decoder.decode(list(records)))


def time_entry(cases: Cases, **after: Any) -> tuple[Any, dict[str, Any]]:
    key, value = cases.values.record(TE, upsert=True)
    value["after"].update(after)
    return key, value


# -- decode ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hours", "stage", "message"),
    [
        ("9" * 40, "decode", "a decimal of 18 bytes exceeds precision 6"),
        ("80000.00", "validate", "after.hours: '80000.0' exceeds precision 6"),
    ],
)
def test_a_decimal_beyond_its_precision_is_a_dead_letter_not_a_crash(
    hours: str, stage: str, message: str
) -> None:
    """Was: decimal.InvalidOperation out of Decoder.decode (fastavro rounds to the
    precision; the JSON form could not quantize a 40-digit value)."""
    decoder = make_decoder()
    codec = decoder.codec
    cases = Cases(decoder, seed=1)
    key, value = time_entry(cases, hours=Decimal(hours))
    schema = json.loads(json.dumps(cases.values.value_schemas[TE]))
    schema["fields"][0]["type"][1]["fields"][5]["type"]["precision"] = 100  # any writer
    schema_id = codec.schema_id_of(codec.encode_value(TE, time_entry(cases)[1]))
    body = avro_body(schema, value)
    bad = Inbound(TE, 0, 1, codec.encode_key(TE, key), frame(schema_id, body))
    good_key, good_value = time_entry(cases, hours=Decimal("7.50"))
    good = Inbound(TE, 0, 2, codec.encode_key(TE, good_key), codec.encode_value(TE, good_value))

    decoded = decode(decoder, bad, good)

    (letter,) = decoded.dead
    assert letter.value is not None
    assert letter.value["stage"] == stage
    assert message in letter.value["error_message"]
    (change,) = decoded.changes  # the good record after it, as usual
    assert change.source.offset == 2
    assert change.after is not None
    assert change.after["hours"] == "7.50"


def test_a_million_digit_decimal_is_refused_before_it_is_converted() -> None:
    """Was: fastavro turned a 415 kB decimal into a number in quadratic time (about
    30 s per record for 10^6 digits)."""
    decoder = make_decoder()
    cases = Cases(decoder, seed=1)
    _, value = time_entry(cases)
    n = 10**1_000_000 - 1
    body = avro_body(cases.values.value_schemas[TE], value)
    hours = unscaled(value["after"]["hours"])
    at = body.index(bytes([len(hours) << 1]) + hours)
    huge = n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True)
    from bench.fuzz.cases import _varint

    body = body[:at] + _varint(len(huge)) + huge + body[at + 1 + len(hours) :]
    schema_id = decoder.codec.schema_id_of(decoder.codec.encode_value(TE, value))
    record = Inbound(TE, 0, 1, None, frame(schema_id, body))

    started = time.perf_counter()
    decoded = decode(decoder, record)

    assert time.perf_counter() - started < 1.0
    (letter,) = decoded.dead
    assert letter.value is not None
    assert letter.value["stage"] == "decode"
    assert "a decimal of 415242 bytes exceeds precision 6" in letter.value["error_message"]
    with pytest.raises(DecodeError, match="exceeds precision"):
        decoder.codec.decode_value(TE, frame(schema_id, body))


def test_a_writer_without_logical_types_decodes_to_the_contract_form() -> None:
    """Was: dates and instants came out as raw ints (the reader's logical type is not
    applied by fastavro), and an int work_date crashed routing."""
    registry = FuzzRegistry()
    decoder = make_decoder(registry)
    cases = Cases(decoder, seed=1)
    key, value = time_entry(
        cases,
        work_date=(dt.date(2026, 3, 31) - dt.date(1970, 1, 1)).days,
        approved_at=1_774_948_500_000,
    )
    value["before"] = None
    value["op"] = "c"
    schema = plain_writer(TE)
    schema_id = registry.register(f"{TE}-value", json.dumps(schema))
    record = Inbound(
        TE, 0, 1, decoder.codec.encode_key(TE, key), frame(schema_id, avro_body(schema, value))
    )

    (change,) = decode(decoder, record).changes

    assert change.after is not None
    assert change.after["work_date"] == "2026-03-31"
    assert change.after["approved_at"] == "2026-03-31T09:15:00.000Z"


def test_a_decimal_written_as_plain_bytes_is_read_as_the_decimal() -> None:
    form = JsonForm(
        json.loads(
            json.dumps({"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2})
        )
    )
    assert form.to_json(unscaled(Decimal("142.50"))) == "142.50"
    assert form.to_json(unscaled(Decimal("-0.05"))) == "-0.05"
    with pytest.raises(JsonFormError, match="a decimal of 9 bytes exceeds precision 12"):
        form.to_json(b"\x7f" * 9)
    with pytest.raises(JsonFormError, match="exceeds precision 12"):
        form.to_json(unscaled(Decimal("10000000000.00")))
    loose = loose_writer("cdc.erp.cost_rate")  # the loose writer's decimal is plain bytes
    rate = next(f for f in loose["fields"][0]["type"][1]["fields"] if f["name"] == "rate")
    assert rate["type"] == ["null", "bytes"]


def test_raw_dates_and_instants_out_of_range_are_refused_by_field() -> None:
    schema = {
        "type": "record",
        "name": "R",
        "fields": [
            {"name": "d", "type": {"type": "int", "logicalType": "date"}},
            {"name": "t", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]},
        ],
    }
    form = JsonForm(schema)
    assert form.to_json({"d": 0, "t": None}) == {"d": "1970-01-01", "t": None}
    with pytest.raises(JsonFormError, match=r"^d: 2147483647 days is out of the range"):
        form.to_json({"d": 2**31 - 1, "t": None})
    with pytest.raises(JsonFormError, match=r"^t: .* ms is out of the range of an instant"):
        form.to_json({"d": 0, "t": 2**62})


# -- routing -----------------------------------------------------------------------------------


def test_a_time_entry_in_december_9999_routes() -> None:
    """Was: OverflowError out of the ingest agent (the month after December 9999)."""
    assert month_end_ms("9999-12-31") == 253_402_300_800_000
    assert month_end_ms("2026-12-01") == 1_798_761_600_000
    assert month_end_ms("2024-02-29") == 1_709_251_200_000
    assert month_end_ms("0001-01-01") == -62_132_918_400_000


# -- JSON form ----------------------------------------------------------------------------------


def test_an_instant_in_year_1_is_iso_and_reads_back() -> None:
    """Was: '1-01-01T00:00:00.000Z' (strftime's unpadded year), which produce rejected."""
    text = format_instant(dt.datetime(1, 1, 1, tzinfo=UTC))
    assert text == "0001-01-01T00:00:00.000Z"
    form = JsonForm({"type": "long", "logicalType": "timestamp-millis"})
    assert form.from_json(text) == dt.datetime(1, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("schema", "value", "message"),
    [
        ("string", "a\ud800b", "x: is not valid UTF-8 text (a lone surrogate at character 1)"),
        ("int", 2**31, "x: 2147483648 is out of range for an Avro int"),
        ("int", -(2**31) - 1, "x: -2147483649 is out of range for an Avro int"),
        ("long", 2**63, "x: 9223372036854775808 is out of range for an Avro long"),
        (
            {"type": "long", "logicalType": "timestamp-millis"},
            "0001-01-01T00:00:00+01:00",
            "x: '0001-01-01T00:00:00+01:00' is out of range in UTC",
        ),
        (
            {"type": "long", "logicalType": "timestamp-millis"},
            10**17,
            "x: 100000000000000000 ms is out of the range of an instant",
        ),
        (
            {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2},
            "9" * 1_000_000,
            "x: '999999999999999999999999999999999999999... (1000002 characters) exceeds",
        ),
    ],
)
def test_from_json_refuses_what_avro_cannot_hold(schema: Any, value: Any, message: str) -> None:
    """Were: UnicodeEncodeError / OverflowError / ValueError out of `pssync produce`, or
    an int silently written as a long."""
    with pytest.raises(JsonFormError) as caught:
        JsonForm(schema).from_json(value, "x")
    assert str(caught.value).startswith(message)
    assert len(str(caught.value)) < 200


# -- pssync produce -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"topic": ' + "9" * 5000 + "}", "line 4: not valid JSON (Exceeds the limit"),
        ('{"a":' * 5000 + "{}" + "}" * 5000, "line 4: not valid JSON (nested too deeply)"),
        (
            '{"topic": "cdc.hr.worker", "key": "W", "value": null, "headers": {"c": "\\udc80"}}',
            "line 4: headers.'c': is not valid UTF-8 text",
        ),
        ('{"topic": "' + "x" * 10_000 + '", "value": null}', "line 4: topic: 'xxxxxxxx"),
    ],
)
def test_a_bad_line_is_one_clear_line_error(text: str, message: str) -> None:
    """Were: ValueError / RecursionError / UnicodeEncodeError out of parse_line, and a
    message repeating a 10,000-character topic."""
    with pytest.raises(LineError) as caught:
        parse_line(Forms(), 4, text)
    assert str(caught.value).startswith(message)
    assert len(str(caught.value)) < 200


JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.sampled_from(["2026-03-31", "9999-12-31", "0000-01-01", "142.50", "1e99999", "ACTIVE"])
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _good_line(topic: str, seed: int) -> dict[str, Any]:
    cases = Cases(make_decoder(), seed)
    key, value = cases.values.record(topic)
    forms = Forms()
    return {
        "topic": topic,
        "key": forms.get(topic, "key").to_json(key),
        "value": forms.get(topic, "value").to_json(value),
    }


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    return out


@settings(max_examples=400, deadline=2_000, suppress_health_check=[HealthCheck.too_slow])
@given(
    topic=st.sampled_from(
        ["cdc.hr.worker", "cdc.psa.time_entry", "cdc.erp.cost_rate", "ops.actions"]
    ),
    seed=st.integers(0, 50),
    pick=st.integers(0, 10_000),
    replacement=JSON_VALUES,
)
def test_any_value_anywhere_in_a_line_is_sent_or_rejected_cleanly(
    topic: str, seed: int, pick: int, replacement: Any
) -> None:
    obj = _good_line(topic, seed)
    paths = _paths(obj)[1:]
    path = paths[pick % len(paths)]
    node = obj
    for name in path[:-1]:
        node = node[name]
    node[path[-1]] = replacement
    text = json.dumps(obj)
    try:
        parsed_topic, key, value, _ = parse_line(Forms(), 9, text)
    except LineError as exc:
        message = str(exc)
    else:
        message = None
    if message is not None:
        assert message.startswith("line 9: ")
        assert len(message) < 400
        return
    codec = make_decoder().codec
    if value is not None:
        codec.decode_value(parsed_topic, codec.encode_value(parsed_topic, value))
    if key is not None:
        codec.decode_key(parsed_topic, codec.encode_key(parsed_topic, key))


@settings(max_examples=400, deadline=2_000)
@given(text=st.text(max_size=300))
def test_any_text_is_a_line_error_or_a_line(text: str) -> None:
    message = "line 1: "
    try:
        parse_line(Forms(), 1, text)
    except LineError as exc:
        message = str(exc)
    assert message.startswith("line 1: ")


@pytest.mark.kafka
def test_produce_rejects_a_line_that_is_not_utf8_and_sends_the_rest(
    settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    """Was: the whole run stopped at the first byte that is not UTF-8 ("pssync produce:
    'utf-8' codec can't decode ..."), without flushing the lines before it."""
    s = settings_factory()
    create_topics(s, ["cdc.hr.worker"])
    good = json.dumps(
        {
            "topic": "cdc.hr.worker",
            "key": "W-1",
            "value": None,
        }
    ).encode()
    bad = good.replace(b"W-1", b"W-\xff")
    lone = json.dumps({"topic": "cdc.hr.worker", "key": "W-\ud800", "value": None}).encode()
    jsonl = tmp_path / "input.jsonl"
    jsonl.write_bytes(
        good + b"\n" + bad + b"\n" + lone + b"\n" + good.replace(b"W-1", b"W-2") + b"\n"
    )

    produced = pssync("produce", "--file", str(jsonl), env=cli_env(s))

    assert produced.returncode == 1, produced.stderr
    assert "Traceback" not in produced.stderr
    errors = [line for line in produced.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: line 2: key.worker_id: is not valid UTF-8 text (a lone surrogate at character 2)",
        "error: line 3: key.worker_id: is not valid UTF-8 text (a lone surrogate at character 2)",
    ]
    assert produced.stderr.splitlines()[-1] == "sent 2 records (cdc.hr.worker=2); 2 lines rejected"
