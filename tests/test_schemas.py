"""The committed .avsc files are the contract: every topic has them, they parse,
and they are exactly what `python -m pssync.avro.generate` writes."""

from __future__ import annotations

import json

import pytest
from fastavro import parse_schema

from pssync.avro.contract import ALL_TOPICS, schema_file
from pssync.avro.generate import SCHEMA_DIR, all_schemas, render


def test_every_contract_topic_has_a_key_and_value_schema() -> None:
    on_disk = {p.name for p in SCHEMA_DIR.glob("*.avsc")}
    wanted = {schema_file(t, part) for t in ALL_TOPICS for part in ("key", "value")}
    assert on_disk == wanted


@pytest.mark.parametrize("name", sorted(all_schemas()))
def test_committed_schema_matches_generator(name: str) -> None:
    assert (SCHEMA_DIR / name).read_text() == render(all_schemas()[name])


@pytest.mark.parametrize("name", sorted(all_schemas()))
def test_schema_parses(name: str) -> None:
    parse_schema(json.loads((SCHEMA_DIR / name).read_text()))


def test_cdc_records_use_debezium_names() -> None:
    envelope = json.loads((SCHEMA_DIR / "cdc.hr.worker-value.avsc").read_text())
    assert envelope["name"] == "cdc.hr.worker.Envelope"
    fields = {f["name"]: f for f in envelope["fields"]}
    assert fields["before"]["type"][1]["name"] == "cdc.hr.worker.Value"
    assert fields["source"]["type"]["name"] == "io.debezium.connector.postgresql.Source"


def test_money_and_hours_are_decimals_with_contract_precision() -> None:
    value = json.loads((SCHEMA_DIR / "cdc.psa.time_entry-value.avsc").read_text())
    after = {f["name"]: f["type"] for f in value["fields"][0]["type"][1]["fields"]}
    assert after["hours"] == {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}
    rate = json.loads((SCHEMA_DIR / "cdc.erp.cost_rate-value.avsc").read_text())
    rate_after = {f["name"]: f["type"] for f in rate["fields"][0]["type"][1]["fields"]}
    assert rate_after["rate"]["precision"] == 12
    assert rate_after["effective_to"] == ["null", {"type": "int", "logicalType": "date"}]
