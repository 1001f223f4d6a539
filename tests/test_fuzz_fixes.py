"""One test per bug the hostile-input fuzzing found, at the module that had it, plus
hypothesis properties over `pssync produce` lines and the real CLI on a bad file."""

from __future__ import annotations

import asyncio
import dataclasses
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
from bench.fuzz.runner import Runner
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
from pssync.streams.changes import MAX_INSTANT_MS, MIN_INSTANT_MS
from pssync.streams.decode import Decoded, Decoder, Inbound
from pssync.streams.flow import DeadlineError
from pssync.streams.routing import month_end_ms
from pssync.streams.rules import projects
from pssync.streams.rules.common import Evaluation, Timing
from pssync.tables.view import StateView
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


@pytest.mark.parametrize(
    "ts_ms",
    [9_223_372_019_674_906_623, MAX_INSTANT_MS + 1, MIN_INSTANT_MS - 1, -(2**63)],
)
def test_a_source_time_no_instant_can_have_is_a_dead_letter(ts_ms: int) -> None:
    """Was: taken as event time. A length bomb in a cdc.erp.project record (seed 2026,
    case 4881) decoded with source.ts_ms = 9223372019674906623: that source's watermark
    moved the keyed flows' aligned time some 292 million years out, and every timer came
    due (which, with the SOW timer below, spun for ever)."""
    decoder = make_decoder()
    cases = Cases(decoder, seed=1)
    topic = "cdc.erp.project"
    records = []
    for offset, ts in enumerate((ts_ms, MAX_INSTANT_MS, MIN_INSTANT_MS), 1):
        key, value = cases.values.record(topic, upsert=True)
        value["source"]["ts_ms"] = ts
        codec = decoder.codec
        records.append(
            Inbound(
                topic, 0, offset, codec.encode_key(topic, key), codec.encode_value(topic, value)
            )
        )

    decoded = decode(decoder, *records)

    (letter,) = decoded.dead
    assert letter.value is not None
    assert (letter.value["offset"], letter.value["stage"]) == (1, "validate")
    assert letter.value["error_message"] == (
        f"source.ts_ms: {ts_ms} ms is out of the range of an instant (0001-01-01 to 9999-12-31 UTC)"
    )
    # the first and the last instant there are still pass
    assert [c.source.ts_ms for c in decoded.changes] == [MAX_INSTANT_MS, MIN_INSTANT_MS]


# -- keyed flows -------------------------------------------------------------------------------

SOW = "cdc.crm.sow"
DAY_MS = 86_400_000
SIGNED_MS = 1_767_225_600_000  # 2026-01-01


def _flow_runner(tmp_path: Path) -> Runner:
    # the fuzz run's pipeline, with its time bound per case
    return Runner(tmp_path, seed=1, case_timeout_s=5.0)


def _ingest(runner: Runner, topic: str, ts_ms: int, **after: Any) -> None:
    """One streamed upsert of `topic` at source time `ts_ms`, decoded and routed."""
    key, value = runner.cases.values.record(topic, upsert=True)
    value.update(op="c", before=None)
    value["after"].update(after)
    value["source"].update(ts_ms=ts_ms, snapshot="false")
    key = {name: value["after"][name] for name in key}
    codec = runner.decoder.codec
    record = Inbound(topic, 0, 1, codec.encode_key(topic, key), codec.encode_value(topic, value))
    (change,) = decode(runner.decoder, record).changes
    runner.pipeline.ingest((topic, 0), [change])


def _run_out(runner: Runner) -> None:
    """Deliver, and let stream time run on until every timer due has fired, within the
    runner's time bound for a case (a spin raises `Hang`)."""

    def go() -> None:
        runner.deliver()
        runner.pipeline.finish(3_600_000)

    runner._bounded(go)
    runner.deliver()


def _findings(runner: Runner, rule: str) -> list[dict[str, Any]]:
    return [e.value for e in runner.pipeline.emits if e.value and e.value.get("rule") == rule]


def test_a_signed_sow_without_signed_at_alerts_once_however_far_stream_time_jumps(
    tmp_path: Path,
) -> None:
    """Was: a hang (seed 2026, at case 4902, in `KeyedFlow._release`). A SIGNED SOW with no
    signed_at and no project counted its setup SLA from each evaluation's `now`: every
    fire re-armed its timer one SLA (a day) later, so it never came due and walked, a day
    per fire, to the aligned time. With the aligned time at 9223372019674906623 (the
    record above) SOW G-6 was firing at 13371222117403 (year 2393), a day at a time,
    still 10^11 fires away. Now the SLA runs once, from arrival: one alert, a day on."""
    runner = _flow_runner(tmp_path)
    try:
        sow_id = "S-1"
        _ingest(runner, SOW, SIGNED_MS, sow_id=sow_id, status="SIGNED", signed_at=None)
        # the latest instant a source time can be: stream time jumps there at once
        _ingest(runner, "cdc.erp.project", MAX_INSTANT_MS)
        _run_out(runner)

        alerts = _findings(runner, "SOW_SIGNED_WITHOUT_PROJECT")
        assert [(a["entity_id"], a["state"]) for a in alerts] == [(sow_id, "OPEN")]
        assert alerts[0]["detected_at"] == "2026-01-02T00:00:00.000Z"  # the SLA after arrival
        assert not runner.out.flow_failures
    finally:
        runner.close()


def test_a_sow_without_signed_at_counts_its_sla_from_arrival_not_from_now() -> None:
    sow = {"sow_id": "S-1", "status": "SIGNED", "signed_at": None}
    state = projects.new_sow_state("S-1")

    def at(now_ms: int) -> Evaluation:
        return projects.evaluate_sow(state, sow, Timing(now_ms, 0, 0, DAY_MS))

    assert at(SIGNED_MS).deadline_ms == SIGNED_MS + DAY_MS
    assert at(SIGNED_MS + DAY_MS - 1).deadline_ms == SIGNED_MS + DAY_MS  # not re-armed
    late = at(SIGNED_MS + DAY_MS)
    assert [f.rule for f in late.findings] == ["SOW_SIGNED_WITHOUT_PROJECT"]
    assert late.deadline_ms is None


def test_a_deadline_not_after_now_is_a_dead_letter_not_a_spin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rule that asks for a timer at (or before) the time it evaluates at would fire
    again at once, for ever: the keyed flow refuses it (the change or timer is
    dead-lettered, and the partition goes on)."""

    def now_again(state: Any, sow: Any, timing: Timing) -> Evaluation:
        return Evaluation(deadline_ms=timing.now_ms)

    monkeypatch.setattr(projects, "evaluate_sow", now_again)
    runner = _flow_runner(tmp_path)
    try:
        _ingest(runner, SOW, SIGNED_MS, status="SIGNED")
        _run_out(runner)

        ((what, n),) = runner.out.flow_failures.items()
        assert n == 1
        assert what.startswith(f"{DeadlineError.__name__}: s/")
        assert what.endswith(f"deadline {SIGNED_MS} is not after stream time {SIGNED_MS}")
    finally:
        runner.close()


def _sows_and_a_jump(tmp_path: Path, max_timers: int) -> tuple[list[Any], int]:
    """Five unreferenced signed SOWs, then stream time ten days on: their outputs, and
    the most timers one batch fired."""
    runner = _flow_runner(tmp_path)
    try:
        pipeline = runner.pipeline
        for flow in pipeline.flows.values():
            flow.config = dataclasses.replace(flow.config, max_timers=max_timers)
        for i in range(5):
            _ingest(runner, SOW, SIGNED_MS + i, sow_id=f"S-{i}", status="SIGNED", signed_at=None)
        _ingest(runner, "cdc.erp.project", SIGNED_MS + 10 * DAY_MS)
        runner._bounded(lambda: pipeline.finish(3_600_000))
        results = pipeline.counters.results
        assert not [f for r in results for f in r.failures]
        return [(e.topic, e.key, e.value) for e in pipeline.emits], max(r.timers for r in results)
    finally:
        runner.close()


def test_timers_fire_at_most_max_timers_per_batch_and_go_on_in_the_next(
    tmp_path: Path,
) -> None:
    """The release loop's safety net: a batch fires at most `max_timers` timers, the way
    it applies at most `max_release` changes; the next batch goes on, in the same order,
    so the outputs are the same."""
    unbounded, most = _sows_and_a_jump(tmp_path / "unbounded", 20_000)
    bounded, most_bounded = _sows_and_a_jump(tmp_path / "bounded", 2)

    assert (most, most_bounded) == (5, 2)
    alerts = [v for _, _, v in bounded if v and v.get("rule") == "SOW_SIGNED_WITHOUT_PROJECT"]
    assert [a["entity_id"] for a in alerts] == [f"S-{i}" for i in range(5)]
    assert bounded == unbounded


def test_a_timer_storm_reads_each_deadline_by_its_range_scan_not_once_more_per_timer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: seed 2026's slowest delivery (case 55058, 15.9 s, reported as six hangs at the
    10 s case bound under load): stream time jumped from 2039 to 9141 and 1,501 timers came
    due at once; the release loop found them by a range scan of `dl/`, then read each
    deadline key again by a point read (whether an earlier timer had moved it) - 1,502
    of the delivery's 3,743 RocksDB reads. The scan now reads them into the batch's view,
    so the check is a cache hit; the same timers fire, in the same order."""
    point_reads: list[str] = []  # what the flows read by key (a get the view had not cached)
    load = StateView._load

    def counted(view: StateView, key: str) -> None:
        point_reads.append(key)
        load(view, key)

    runner = _flow_runner(tmp_path)
    try:
        for i in range(5):
            _ingest(runner, SOW, SIGNED_MS + i, sow_id=f"S-{i}", status="SIGNED", signed_at=None)
        runner.deliver()
        _ingest(runner, "cdc.erp.project", SIGNED_MS + 10 * DAY_MS)
        monkeypatch.setattr(StateView, "_load", counted)
        runner.deliver()

        fired = _findings(runner, "SOW_SIGNED_WITHOUT_PROJECT")
        assert [a["entity_id"] for a in fired] == [f"S-{i}" for i in range(5)]
        assert [k for k in point_reads if k.startswith("dl/")] == []
    finally:
        runner.close()


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
