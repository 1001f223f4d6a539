"""JsonForm: the contract's JSON form to and from Avro values, per schema (no Kafka)."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import io
import json
from decimal import Decimal
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from pssync.avro.codec import load_schema_text
from pssync.avro.contract import ALL_TOPICS
from pssync.avro.jsonform import JsonForm, JsonFormError

UTC = dt.UTC

WORKER_LINE: dict[str, Any] = {
    "before": None,
    "after": {
        "worker_id": "W-1",
        "full_name": "Ada L",
        "email": "ada@x.com",
        "employment_status": "ACTIVE",
        "hire_date": "2025-01-06",
        "cost_center": "CC-100",
        "legal_entity": "LE-US",
        "job_profile": "Consultant",
        "updated_at": "2026-01-01T00:00:00.000Z",
    },
    "op": "c",
    "ts_ms": 1767225600000,
    "source": {
        "version": "2.7",
        "connector": "postgresql",
        "name": "cdc",
        "ts_ms": 1767225600000,
        "snapshot": "false",
        "db": "hr",
        "schema": "hr",
        "table": "worker",
        "txId": 2,
        "lsn": 200,
    },
}

MONEY = {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}
HOURS = {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}
INSTANT = {"type": "long", "logicalType": "timestamp-millis"}
DATE = {"type": "int", "logicalType": "date"}


def contract_schema(topic: str, part: str) -> Any:
    return json.loads(load_schema_text(topic, part))


def form(topic: str, part: str = "value") -> JsonForm:
    return JsonForm(contract_schema(topic, part))


def names_of(schema: Any) -> dict[str, Any]:
    """Record types of `schema` by (full) name, to follow references."""
    out: dict[str, Any] = {}
    _named_types(schema, out)
    return out


def _named_types(schema: Any, out: dict[str, Any]) -> None:
    if isinstance(schema, list):
        for branch in schema:
            _named_types(branch, out)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            out[schema["name"]] = schema
            for f in schema["fields"]:
                _named_types(f["type"], out)
        elif schema.get("type") == "array":
            _named_types(schema["items"], out)
        elif schema.get("type") == "map":
            _named_types(schema["values"], out)


def sample(schema: Any, names: dict[str, Any], full: bool) -> Any:
    """A realistic JSON-form value; `full` fills nullable fields, else leaves them out."""
    if isinstance(schema, str) and schema in names:
        schema = names[schema]
    if isinstance(schema, list):
        return sample(next(b for b in schema if b != "null"), names, full)
    if isinstance(schema, dict):
        logical = schema.get("logicalType")
        if logical == "decimal":
            return "142.50" if schema["precision"] > 6 else "7.25"
        if logical == "date":
            return "2026-03-31"
        if logical == "timestamp-millis":
            return "2026-03-31T09:15:00.000Z"
        kind = schema["type"]
        if kind == "array":
            return [sample(schema["items"], names, full)]
        if kind == "map":
            return {"sap": "CC-100", "workday": None}
        if kind == "record":
            out = {}
            for f in schema["fields"]:
                nullable = isinstance(f["type"], list) and "null" in f["type"]
                if full or not nullable:
                    out[f["name"]] = sample(f["type"], names, full)
            return out
        return sample(kind, names, full)
    return {
        "string": "LE-US",
        "boolean": True,
        "int": 80,
        "long": 1767225600000,
        "bytes": base64.b64encode(b"\x00\x01raw\xff").decode(),
    }[schema]


def with_nulls(schema: Any, names: dict[str, Any], value: Any) -> Any:
    """`value` with every missing nullable field of its records set to None."""
    if isinstance(schema, str) and schema in names:
        schema = names[schema]
    if isinstance(schema, list):
        if value is None:
            return None
        return with_nulls(next(b for b in schema if b != "null"), names, value)
    if isinstance(schema, dict) and schema.get("type") == "record":
        return {
            f["name"]: with_nulls(f["type"], names, value.get(f["name"])) for f in schema["fields"]
        }
    if isinstance(schema, dict) and schema.get("type") == "array":
        return [with_nulls(schema["items"], names, v) for v in value]
    return value


CONTRACT_PARTS = [(t, p) for t in ALL_TOPICS for p in ("key", "value")]


@pytest.mark.parametrize(("topic", "part"), CONTRACT_PARTS)
def test_full_sample_round_trips_through_avro_binary(topic: str, part: str) -> None:
    schema = contract_schema(topic, part)
    names = names_of(schema)
    json_value = sample(schema, names, full=True)
    converter = JsonForm(schema)

    avro_value = converter.from_json(json_value, part)
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(schema), avro_value)
    decoded = schemaless_reader(io.BytesIO(buf.getvalue()), parse_schema(schema), None)

    assert converter.to_json(decoded) == json_value
    assert converter.to_json(avro_value) == json_value


@pytest.mark.parametrize(("topic", "part"), [(t, "value") for t in ALL_TOPICS])
def test_missing_nullable_fields_come_back_as_null(topic: str, part: str) -> None:
    schema = contract_schema(topic, part)
    names = names_of(schema)
    sparse = sample(schema, names, full=False)
    converter = JsonForm(schema)

    out = converter.to_json(converter.from_json(sparse, part))

    assert out == with_nulls(schema, names, sparse)
    assert None in out.values()  # every contract value schema has a nullable field


def test_worker_change_event_converts_to_typed_avro_values() -> None:
    avro = form("cdc.hr.worker").from_json(WORKER_LINE, "value")

    after = avro["after"]
    assert after["hire_date"] == dt.date(2025, 1, 6)
    assert after["updated_at"] == dt.datetime(2026, 1, 1, tzinfo=UTC)
    assert after["termination_date"] is None
    assert after["manager_id"] is None
    assert avro["source"]["lsn"] == 200
    back = form("cdc.hr.worker").to_json(avro)
    assert back["after"] == {**WORKER_LINE["after"], "termination_date": None, "manager_id": None}
    assert back["source"] == WORKER_LINE["source"]


def test_time_entry_command_keeps_decimals_exact() -> None:
    value = {
        "command_id": "c-1",
        "type": "POST_TIME_ENTRY",
        "entity_id": "TE-1",
        "payload": {
            "time_entry_id": "TE-1",
            "version": 1,
            "worker_id": "W-1",
            "project_id": "P-1",
            "erp_employee_id": "E-1",
            "erp_project_id": "EP-1",
            "work_date": "2026-03-31",
            "hours": "7.5",
            "billable": True,
            "cost_rate": "142.50",
            "currency": "USD",
            "cost_amount": "1068.75",
        },
        "correlation_id": "corr-1",
        "issued_at": "2026-03-31T09:15:00.000Z",
    }
    converter = form("erp.cmd.time_entry")

    avro = converter.from_json(value)
    out = converter.to_json(avro)

    assert avro["payload"]["hours"] == Decimal("7.50")
    assert avro["payload"]["cost_amount"] == Decimal("1068.75")
    assert avro["issued_at"] == dt.datetime(2026, 3, 31, 9, 15, tzinfo=UTC)
    assert out["payload"]["hours"] == "7.50"
    assert out["payload"]["cost_rate"] == "142.50"
    assert out["causation"] == []
    assert out["rule"] is None


@pytest.mark.parametrize(
    ("path_in_after", "expected"),
    [("hours", "value.after.hours"), ("Worker_ID", "value.after.Worker_ID")],
)
def test_unknown_field_names_the_full_path(path_in_after: str, expected: str) -> None:
    line = copy.deepcopy(WORKER_LINE)
    line["after"][path_in_after] = "8.00"

    with pytest.raises(JsonFormError) as info:
        form("cdc.hr.worker").from_json(line, "value")

    assert info.value.path == expected
    assert str(info.value) == f"{expected}: unknown field"


def test_unknown_field_at_root_and_in_source() -> None:
    with pytest.raises(JsonFormError) as root:
        form("cdc.hr.worker").from_json({**WORKER_LINE, "transaction": None})
    line = copy.deepcopy(WORKER_LINE)
    line["source"]["sequence"] = "x"
    with pytest.raises(JsonFormError) as nested:
        form("cdc.hr.worker").from_json(line, "value")

    assert root.value.path == "transaction"
    assert nested.value.path == "value.source.sequence"


def test_missing_required_field_and_null_for_required() -> None:
    line = copy.deepcopy(WORKER_LINE)
    del line["after"]["legal_entity"]
    with pytest.raises(JsonFormError) as missing:
        form("cdc.hr.worker").from_json(line, "value")
    line = copy.deepcopy(WORKER_LINE)
    line["after"]["email"] = None
    with pytest.raises(JsonFormError) as null:
        form("cdc.hr.worker").from_json(line, "value")

    assert str(missing.value) == "value.after.legal_entity: missing required field"
    assert null.value.path == "value.after.email"
    assert "may not be null" in null.value.message


@pytest.mark.parametrize(
    ("field", "bad", "message_part"),
    [
        ("full_name", 42, "expected a string"),
        ("worker_id", ["W-1"], "expected a string"),
        ("hire_date", 20250106, "expected a date string"),
        ("hire_date", "2026-02-30", "is not a date"),
        ("hire_date", "31/03/2026", "YYYY-MM-DD"),
        ("updated_at", "2026-03-31T09:15:00", "has no time zone"),
        ("updated_at", "2026-03-31", "ISO-8601 instant"),
        ("updated_at", "yesterday", "ISO-8601 instant"),
        ("updated_at", 1.5, "expected an ISO-8601 instant"),
    ],
)
def test_wrong_types_in_after_image(field: str, bad: Any, message_part: str) -> None:
    line = copy.deepcopy(WORKER_LINE)
    line["after"][field] = bad

    with pytest.raises(JsonFormError) as info:
        form("cdc.hr.worker").from_json(line, "value")

    assert info.value.path == f"value.after.{field}"
    assert message_part in info.value.message


@pytest.mark.parametrize(
    ("schema", "bad", "message_part"),
    [
        ("boolean", "true", "expected true or false"),
        ("boolean", 1, "expected true or false"),
        ("int", True, "expected an integer"),
        ("long", 1.0, "expected an integer"),
        ("long", "1767225600000", "expected an integer"),
        ("double", "1.5", "expected a number"),
        ({"type": "array", "items": "string"}, {"a": 1}, "expected a list"),
        ({"type": "map", "values": "string"}, ["a"], "expected an object"),
        ({"type": "record", "name": "R", "fields": []}, "R", "expected an object"),
        ({"type": "enum", "name": "E", "symbols": ["OPEN", "CLOSED"]}, "open", "is not one of"),
        ("null", "x", "expected null"),
    ],
)
def test_primitive_type_mismatches(schema: Any, bad: Any, message_part: str) -> None:
    with pytest.raises(JsonFormError) as info:
        JsonForm(schema).from_json(bad, "x")

    assert info.value.path == "x"
    assert message_part in info.value.message


def test_error_paths_inside_arrays_and_maps() -> None:
    converter = form("sync.drift")
    schema = contract_schema("sync.drift", "value")
    names = names_of(schema)
    alert = sample(schema, names, full=True)
    alert["fields"][0]["values"]["sap"] = 7
    with pytest.raises(JsonFormError) as in_map:
        converter.from_json(alert, "value")
    alert = sample(schema, names, full=True)
    alert["causation"] = [alert["causation"][0], {**alert["causation"][0], "offset": "12"}]
    with pytest.raises(JsonFormError) as in_array:
        converter.from_json(alert, "value")

    assert in_map.value.path == "value.fields[0].values.sap"
    assert in_array.value.path == "value.causation[1].offset"


@pytest.mark.parametrize(
    ("schema", "text", "expected"),
    [
        (MONEY, "142.50", Decimal("142.50")),
        (MONEY, "142.5", Decimal("142.50")),
        (MONEY, "-12.00", Decimal("-12.00")),
        (MONEY, 142, Decimal("142.00")),
        (MONEY, "9999999999.99", Decimal("9999999999.99")),
        (HOURS, "9999.99", Decimal("9999.99")),
        (HOURS, "0", Decimal("0.00")),
    ],
)
def test_decimals_accepted(schema: Any, text: Any, expected: Decimal) -> None:
    value = JsonForm(schema).from_json(text, "rate")

    assert value == expected
    assert value.as_tuple().exponent == -2
    assert JsonForm(schema).to_json(value) == str(expected)


@pytest.mark.parametrize(
    ("schema", "bad", "message_part"),
    [
        (MONEY, "142.505", "more than 2 decimal places"),
        (HOURS, "7.125", "more than 2 decimal places"),
        (MONEY, "10000000000.00", "exceeds precision 12"),
        (HOURS, "10000.00", "exceeds precision 6"),
        (MONEY, 142.5, "as a string"),
        (MONEY, True, "as a string"),
        (MONEY, "12,50", "is not a decimal number"),
        (MONEY, "NaN", "is not a finite decimal"),
        (MONEY, "Infinity", "is not a finite decimal"),
    ],
)
def test_decimals_rejected(schema: Any, bad: Any, message_part: str) -> None:
    with pytest.raises(JsonFormError) as info:
        JsonForm(schema).from_json(bad, "value.after.rate")

    assert info.value.path == "value.after.rate"
    assert message_part in info.value.message


@pytest.mark.parametrize("huge", ["1e30", "9" * 29])
def test_huge_decimal_is_a_precision_error(huge: str) -> None:
    with pytest.raises(JsonFormError, match="exceeds precision 12"):
        JsonForm(MONEY).from_json(huge, "rate")


@pytest.mark.parametrize("loose", ["20260331", "2026-W14-2", "2026-3-31"])
def test_only_the_contract_date_form_is_accepted(loose: str) -> None:
    with pytest.raises(JsonFormError, match="YYYY-MM-DD"):
        JsonForm(DATE).from_json(loose, "work_date")


@pytest.mark.parametrize("loose", ["20260331T091500Z", "2026-03-31 09:15Z", "2026-03-31"])
def test_only_iso_instants_are_accepted(loose: str) -> None:
    with pytest.raises(JsonFormError, match="ISO-8601"):
        JsonForm(INSTANT).from_json(loose, "updated_at")


def test_instants_are_normalised_to_utc_millis() -> None:
    converter = JsonForm(INSTANT)

    offset = converter.from_json("2026-03-31T11:15:00.000+02:00")
    micro = converter.from_json("2026-03-31T09:15:00.123456Z")

    assert offset == dt.datetime(2026, 3, 31, 9, 15, tzinfo=UTC)
    assert converter.to_json(offset) == "2026-03-31T09:15:00.000Z"
    assert converter.to_json(micro) == "2026-03-31T09:15:00.123Z"
    assert converter.from_json(1774948500000) == dt.datetime(2026, 3, 31, 9, 15, tzinfo=UTC)


def test_bytes_are_base64() -> None:
    dlq_key = JsonForm(contract_schema("sync.dlq", "key"))

    assert dlq_key.from_json("AAEC/w==") == b"\x00\x01\x02\xff"
    assert dlq_key.to_json(b"\x00\x01\x02\xff") == "AAEC/w=="
    with pytest.raises(JsonFormError, match="not valid base64"):
        dlq_key.from_json("not base64!", "key")
    with pytest.raises(JsonFormError, match="expected base64 text"):
        dlq_key.from_json([0, 1], "key")


def test_defaults_are_filled_and_not_shared() -> None:
    converter = form("reconciled.worker")
    first = converter.from_json({"worker_id": "W-1", "in_sync": True, "updated_at": 0})
    second = converter.from_json({"worker_id": "W-2", "in_sync": False, "updated_at": 0})

    first["open_alerts"].append("a-1")

    assert second["open_alerts"] == []
    assert first["open_exceptions"] == []
    assert first["erp_is_active"] is None
    assert first["updated_at"] == dt.datetime(1970, 1, 1, tzinfo=UTC)


def test_union_with_several_branches_picks_the_fitting_one() -> None:
    converter = JsonForm(["null", "long", "string", MONEY])

    assert converter.from_json(5) == 5
    assert converter.from_json("x") == "x"
    assert converter.from_json(None) is None
    assert converter.to_json(Decimal("1.50")) == "1.50"
    with pytest.raises(JsonFormError, match="expected an integer"):
        converter.from_json(True, "u")
    with pytest.raises(JsonFormError, match=r"^u: null is not allowed here$"):
        JsonForm(["long", "string"]).from_json(None, "u")


def test_root_error_is_labelled() -> None:
    with pytest.raises(JsonFormError) as info:
        JsonForm("string").from_json(1)

    assert str(info.value).startswith("<root>: expected a string")


def test_compiled_to_json_equals_the_schema_walk_on_a_simulated_firm() -> None:
    """`to_json` is compiled per schema for speed; on every line of a firm with every
    fault kind it must give what walking the schema (`_out`) gives, and the line."""
    from pssync.simulate import Line, SimConfig, simulate

    forms: dict[tuple[str, str], JsonForm] = {}
    seen = 0
    for group in simulate(SimConfig(seed=11, workers=12, customers=3, fault_rates={}), 20):
        for item in group.items:
            if not isinstance(item, Line):
                continue
            obj = json.loads(item.text)
            for part in ("key", "value"):
                data = obj.get(part)
                if not isinstance(data, dict):
                    continue
                form = forms.setdefault(
                    (obj["topic"], part),
                    JsonForm(json.loads(load_schema_text(obj["topic"], part))),
                )
                avro = form.from_json(data)
                compiled = form.to_json(avro)
                assert compiled == form._out(form.schema, avro)
                assert form.from_json(compiled) == avro
                seen += 1
    assert seen > 500
