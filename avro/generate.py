"""Generates the `.avsc` files in `schemas/` from `contract.py`.

The files are committed (they are the contract a reader opens); a test checks
that they equal what this module generates. Run `python -m pssync.avro.generate`
after changing the contract. CDC records follow Debezium's naming
(`cdc.hr.worker.Envelope`, `.Value`, `.Key`, `io.debezium.connector.postgresql.Source`)
so that schema resolution against what Debezium really writes matches names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pssync.avro.contract import (
    ACTIONS_TOPIC,
    COMMAND_TOPICS,
    DLQ_TOPIC,
    DRIFT_TOPIC,
    EXCEPTIONS_TOPIC,
    OUTCOMES_TOPIC,
    TABLES,
    Table,
    schema_file,
)

SCHEMA_DIR = Path(__file__).parent / "schemas"

Schema = Any

_PRIMITIVES: dict[str, Schema] = {
    "string": "string",
    "boolean": "boolean",
    "int": "int",
    "long": "long",
    "date": {"type": "int", "logicalType": "date"},
    "timestamp": {"type": "long", "logicalType": "timestamp-millis"},
    "money": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2},
    "hours": {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2},
}


def field(name: str, kind: str, doc: str | None = None) -> dict[str, Any]:
    """An Avro field from the contract's shorthand (`?` = nullable, default null)."""
    nullable = kind.endswith("?")
    base = _PRIMITIVES.get(kind.rstrip("?"), kind.rstrip("?"))
    out: dict[str, Any] = {"name": name}
    if nullable:
        out["type"] = ["null", base]
        out["default"] = None
    else:
        out["type"] = base
    if doc:
        out["doc"] = doc
    return out


def record(name: str, fields: list[dict[str, Any]], doc: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "record", "name": name, "fields": fields}
    if doc:
        out["doc"] = doc
    return out


def source_block() -> dict[str, Any]:
    return record(
        "io.debezium.connector.postgresql.Source",
        [
            field("version", "string"),
            field("connector", "string"),
            field("name", "string"),
            field("ts_ms", "long", "commit time at the source"),
            field("snapshot", "string?"),
            field("db", "string"),
            field("schema", "string"),
            field("table", "string"),
            field("txId", "long?"),
            field("lsn", "long?", "source log position, increasing per source"),
        ],
    )


def cdc_key(table: Table) -> dict[str, Any]:
    types = dict(table.fields)
    return record(f"{table.topic}.Key", [field(k, types[k]) for k in table.key])


def cdc_value(table: Table) -> dict[str, Any]:
    value = record(f"{table.topic}.Value", [field(n, k) for n, k in table.fields])
    return record(
        f"{table.topic}.Envelope",
        [
            {"name": "before", "type": ["null", value], "default": None},
            {"name": "after", "type": ["null", f"{table.topic}.Value"], "default": None},
            {"name": "source", "type": source_block()},
            field("op", "string"),
            field("ts_ms", "long?"),
        ],
        doc=f"Debezium change event of {table.platform}.{table.name}",
    )


def _source_ref() -> dict[str, Any]:
    return record(
        "pssync.common.SourceRef",
        [
            field("topic", "string"),
            field("partition", "int"),
            field("offset", "long"),
            field("key", "string"),
            field("lsn", "long?"),
            field("ts_ms", "long?"),
        ],
        doc="A source change that caused an output (its position and identity).",
    )


def _causation(first: bool) -> dict[str, Any]:
    item: Any = _source_ref() if first else "pssync.common.SourceRef"
    return {"name": "causation", "type": {"type": "array", "items": item}, "default": []}


_EMPLOYEE_PAYLOAD = [
    ("worker_id", "string"),
    ("erp_employee_id", "string?"),
    ("is_active", "boolean"),
    ("cost_center", "string?"),
    ("legal_entity", "string"),
    ("full_name", "string?"),
    ("email", "string?"),
    ("employment_status", "string?"),
    ("hire_date", "date?"),
    ("termination_date", "date?"),
    ("manager_id", "string?"),
    ("job_profile", "string?"),
]
_PROJECT_PAYLOAD = [
    ("project_id", "string"),
    ("erp_project_id", "string?"),
    ("customer_id", "string?"),
    ("crm_account_id", "string"),
    ("sow_id", "string?"),
    ("name", "string"),
    ("legal_entity", "string"),
    ("currency", "string"),
    ("status", "string"),
    ("billing_type", "string?"),
    ("project_template", "string?"),
    ("start_date", "date?"),
    ("end_date", "date?"),
]
_TIME_PAYLOAD = [
    ("time_entry_id", "string"),
    ("version", "int"),
    ("worker_id", "string"),
    ("project_id", "string"),
    ("erp_employee_id", "string"),
    ("erp_project_id", "string"),
    ("work_date", "date"),
    ("hours", "hours"),
    ("billable", "boolean"),
    ("cost_rate", "money"),
    ("currency", "string"),
    ("cost_amount", "money"),
    ("period_id", "string?"),
    ("reverses_command_id", "string?"),
]


def command(topic: str, payload: list[tuple[str, str]]) -> dict[str, Any]:
    name = COMMAND_TOPICS[topic]
    short = name.rsplit(".", 1)[1]
    return record(
        name,
        [
            field("command_id", "string", "deterministic: same input, same id"),
            field("type", "string"),
            field("entity_id", "string"),
            {
                "name": "payload",
                "type": record(f"pssync.cmd.{short}Payload", [field(n, k) for n, k in payload]),
            },
            field("correlation_id", "string"),
            _causation(True),
            field("issued_at", "timestamp"),
            field("rule", "string?"),
        ],
        doc=f"A command on {topic} for the ERP sink; apply each command_id once.",
    )


def drift_alert() -> dict[str, Any]:
    diff = record(
        "pssync.drift.FieldDiff",
        [
            field("field", "string"),
            field("owner", "string", "the system of record for the field"),
            {
                "name": "values",
                "type": {"type": "map", "values": ["null", "string"]},
                "doc": "each system's value, by system name",
            },
        ],
    )
    return record(
        "pssync.drift.DriftAlert",
        [
            field("alert_id", "string"),
            field("rule", "string"),
            field("severity", "string"),
            field("state", "string"),
            field("entity_type", "string"),
            field("entity_id", "string"),
            {"name": "fields", "type": {"type": "array", "items": diff}, "default": []},
            field("detected_at", "timestamp"),
            field("resolved_at", "timestamp?"),
            field("remediation", "string"),
            field("correlation_id", "string"),
            _causation(True),
        ],
    )


def exception() -> dict[str, Any]:
    resolution = record(
        "pssync.exceptions.Resolution",
        [
            field("who", "string"),
            field("action", "string"),
            field("note", "string?"),
            field("when", "timestamp"),
        ],
    )
    return record(
        "pssync.exceptions.Exception",
        [
            field("exception_id", "string"),
            field("rule", "string"),
            field("state", "string"),
            field("entity_type", "string"),
            field("entity_id", "string"),
            field("reason", "string"),
            {"name": "context", "type": {"type": "map", "values": ["null", "string"]}},
            field("remediation", "string"),
            field("created_at", "timestamp"),
            {"name": "resolution", "type": ["null", resolution], "default": None},
            field("correlation_id", "string"),
            _causation(True),
            field(
                "owner",
                "string?",
                "where the entity's state lives: `worker:<worker key>` or `project:<project "
                "key>` (the key ops.actions records for it are keyed by)",
            ),
            field("assignee", "string?", "who works on it (the `assign` action)"),
        ],
    )


def action() -> dict[str, Any]:
    return record(
        "pssync.ops.Action",
        [
            field("action_id", "string", "idempotency: an action id takes effect once"),
            field("action", "string", "dismiss, retry, post_to_next_open_period or assign"),
            field("exception_id", "string"),
            field("rule", "string"),
            field("entity_type", "string"),
            field("entity_id", "string"),
            field("owner", "string", "the exception's owner (`worker:<key>`, `project:<key>`)"),
            field("who", "string", "the actor: the API token's name"),
            field("note", "string?"),
            field("assignee", "string?", "for assign: who (null: unassign)"),
            field("requested_at", "timestamp", "wall clock when the API accepted it"),
            field(
                "at",
                "timestamp",
                "its place in event time: the stream time the operator's view had reached",
            ),
        ],
        doc="An operator's action on an exception, applied by the flow that owns the entity.",
    )


def outcome() -> dict[str, Any]:
    return record(
        "pssync.ops.ActionOutcome",
        [
            field("action_id", "string"),
            field("action", "string"),
            field("exception_id", "string"),
            field("outcome", "string", "APPLIED or NOT_APPLICABLE"),
            field("detail", "string", "what it did, or why it did not apply"),
            field("who", "string"),
            field("note", "string?"),
            field("at", "timestamp", "the stream time it was applied at"),
            field("correlation_id", "string"),
        ],
        doc="What an action on ops.actions did, written by the flow that applied it.",
    )


def dlq() -> dict[str, Any]:
    header = record("pssync.dlq.Header", [field("key", "string"), field("value", "bytes?")])
    return record(
        "pssync.dlq.DeadLetter",
        [
            field("original_topic", "string"),
            field("partition", "int"),
            field("offset", "long"),
            field("key", "bytes?"),
            field("value", "bytes?"),
            {"name": "headers", "type": {"type": "array", "items": header}, "default": []},
            field("error_class", "string"),
            field("error_message", "string"),
            field("stage", "string", "decode, validate or process"),
            field("failed_at", "timestamp"),
        ],
    )


def golden(topic: str) -> dict[str, Any]:
    common = [
        field("in_sync", "boolean"),
        {"name": "open_alerts", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "open_exceptions", "type": {"type": "array", "items": "string"}, "default": []},
        field("updated_at", "timestamp"),
    ]
    if topic == "reconciled.worker":
        fields = [
            field("worker_id", "string"),
            field("full_name", "string?"),
            field("email", "string?"),
            field("employment_status", "string?"),
            field("hire_date", "date?"),
            field("termination_date", "date?"),
            field("cost_center", "string?"),
            field("legal_entity", "string?"),
            field("manager_id", "string?"),
            field("job_profile", "string?"),
            field("erp_employee_id", "string?"),
            field("erp_is_active", "boolean?"),
            field("erp_cost_center", "string?"),
            field("erp_legal_entity", "string?"),
        ]
        name = "pssync.reconciled.Worker"
    elif topic == "reconciled.project":
        fields = [
            field("project_id", "string"),
            field("name", "string?"),
            field("sow_id", "string?"),
            field("crm_account_id", "string?"),
            field("customer_id", "string?"),
            field("legal_entity", "string?"),
            field("currency", "string?"),
            field("status", "string?"),
            field("billing_type", "string?"),
            field("start_date", "date?"),
            field("end_date", "date?"),
            field("erp_project_id", "string?"),
            field("erp_status", "string?"),
        ]
        name = "pssync.reconciled.Project"
    else:
        fields = [
            field("assignment_id", "string"),
            field("project_id", "string?"),
            field("worker_id", "string?"),
            field("role", "string?"),
            field("start_date", "date?"),
            field("end_date", "date?"),
            field("allocation_pct", "int?"),
            field("bill_rate", "money?"),
            field("cost_rate", "money?"),
            field("status", "string?"),
        ]
        name = "pssync.reconciled.Assignment"
    return record(name, fields + common, doc=f"Golden record on {topic} (compacted).")


def all_schemas() -> dict[str, Any]:
    """File name -> schema, for every topic in the contract."""
    out: dict[str, Any] = {}
    for table in TABLES:
        out[schema_file(table.topic, "key")] = cdc_key(table)
        out[schema_file(table.topic, "value")] = cdc_value(table)
    payloads = {
        "erp.cmd.employee": _EMPLOYEE_PAYLOAD,
        "erp.cmd.project": _PROJECT_PAYLOAD,
        "erp.cmd.time_entry": _TIME_PAYLOAD,
    }
    for topic, payload in payloads.items():
        out[schema_file(topic, "key")] = "string"
        out[schema_file(topic, "value")] = command(topic, payload)
    out[schema_file(DRIFT_TOPIC, "key")] = "string"
    out[schema_file(DRIFT_TOPIC, "value")] = drift_alert()
    out[schema_file(EXCEPTIONS_TOPIC, "key")] = "string"
    out[schema_file(EXCEPTIONS_TOPIC, "value")] = exception()
    out[schema_file(ACTIONS_TOPIC, "key")] = "string"
    out[schema_file(ACTIONS_TOPIC, "value")] = action()
    out[schema_file(OUTCOMES_TOPIC, "key")] = "string"
    out[schema_file(OUTCOMES_TOPIC, "value")] = outcome()
    out[schema_file(DLQ_TOPIC, "key")] = "bytes"
    out[schema_file(DLQ_TOPIC, "value")] = dlq()
    for topic in ("reconciled.worker", "reconciled.project", "reconciled.assignment"):
        out[schema_file(topic, "key")] = "string"
        out[schema_file(topic, "value")] = golden(topic)
    return out


def render(schema: Any) -> str:
    return json.dumps(schema, indent=2) + "\n"


def main() -> None:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for name, schema in sorted(all_schemas().items()):
        (SCHEMA_DIR / name).write_text(render(schema))
    print(f"wrote {len(all_schemas())} schemas to {SCHEMA_DIR}")


if __name__ == "__main__":
    main()
