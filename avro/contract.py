"""The domain contract as data: every topic, its key and its record fields.

This module is the single source the `.avsc` files in `schemas/` are generated
from (`python -m pssync.avro.generate`), and the one place topic names are
spelled. Names here are relied on by tests outside this repo: extend, never
rename (see `shared/domain.md`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# Field type shorthands: "string", "boolean", "int", "long", "date",
# "timestamp" (timestamp-millis, UTC), "money" (decimal 12,2),
# "hours" (decimal 6,2). A trailing "?" makes the field nullable (default null).


@dataclass(frozen=True, slots=True)
class Table:
    """One platform table, captured by Debezium into `cdc.<platform>.<table>`."""

    platform: str
    name: str
    key: tuple[str, ...]
    fields: tuple[tuple[str, str], ...]

    @property
    def topic(self) -> str:
        return f"cdc.{self.platform}.{self.name}"


def _t(platform: str, name: str, key: str, fields: str) -> Table:
    pairs = tuple(
        (f.split(":")[0].strip(), f.split(":")[1].strip()) for f in fields.split(",") if f.strip()
    )
    return Table(platform, name, (key,), pairs)


TABLES: Final[tuple[Table, ...]] = (
    _t(
        "hr",
        "worker",
        "worker_id",
        "worker_id:string, full_name:string, email:string, employment_status:string,"
        " hire_date:date, termination_date:date?, cost_center:string?, legal_entity:string,"
        " manager_id:string?, job_profile:string, updated_at:timestamp",
    ),
    _t(
        "erp",
        "employee",
        "erp_employee_id",
        "erp_employee_id:string, worker_id:string?, is_active:boolean, cost_center:string?,"
        " legal_entity:string, updated_at:timestamp",
    ),
    _t(
        "erp",
        "cost_rate",
        "rate_id",
        "rate_id:string, worker_id:string, effective_from:date, effective_to:date?,"
        " rate:money, currency:string",
    ),
    _t(
        "erp",
        "cost_center",
        "cost_center_id",
        "cost_center_id:string, legal_entity:string, is_active:boolean",
    ),
    _t(
        "erp",
        "customer",
        "customer_id",
        "customer_id:string, crm_account_id:string, name:string, status:string,"
        " legal_entity:string, tax_profile:string?, currency:string",
    ),
    _t(
        "erp",
        "project",
        "erp_project_id",
        "erp_project_id:string, project_id:string?, customer_id:string, legal_entity:string,"
        " currency:string, status:string",
    ),
    _t(
        "erp",
        "period",
        "period_id",
        "period_id:string, legal_entity:string, period:string, status:string",
    ),
    _t(
        "crm",
        "sow",
        "sow_id",
        "sow_id:string, crm_account_id:string, legal_entity:string, currency:string,"
        " project_template:string, status:string, signed_at:timestamp?, total_value:money",
    ),
    _t(
        "psa",
        "project",
        "project_id",
        "project_id:string, sow_id:string?, crm_account_id:string, name:string,"
        " legal_entity:string, currency:string, status:string, billing_type:string,"
        " start_date:date, end_date:date?",
    ),
    _t(
        "psa",
        "assignment",
        "assignment_id",
        "assignment_id:string, project_id:string, worker_id:string, role:string,"
        " start_date:date, end_date:date, allocation_pct:int, bill_rate:money, status:string",
    ),
    _t(
        "psa",
        "time_entry",
        "time_entry_id",
        "time_entry_id:string, worker_id:string, project_id:string, assignment_id:string?,"
        " work_date:date, hours:hours, billable:boolean, status:string, approved_at:timestamp?",
    ),
)

TABLES_BY_TOPIC: Final[dict[str, Table]] = {t.topic: t for t in TABLES}

# Enumerations the contract names. Avro carries them as strings (as Debezium
# does for varchar columns); validation after decoding enforces the sets.
ENUMS: Final[dict[tuple[str, str], frozenset[str]]] = {
    ("cdc.hr.worker", "employment_status"): frozenset({"ACTIVE", "LEAVE", "TERMINATED"}),
    ("cdc.erp.customer", "status"): frozenset(
        {"PENDING_APPROVAL", "APPROVED", "ON_HOLD", "INACTIVE"}
    ),
    ("cdc.erp.project", "status"): frozenset({"PENDING", "ACTIVE", "CLOSED"}),
    ("cdc.erp.period", "status"): frozenset({"OPEN", "CLOSED"}),
    ("cdc.crm.sow", "status"): frozenset({"DRAFT", "SIGNED", "CANCELLED"}),
    ("cdc.psa.project", "status"): frozenset({"PLANNED", "ACTIVE", "ON_HOLD", "CLOSED"}),
    ("cdc.psa.project", "billing_type"): frozenset({"TIME_AND_MATERIALS", "FIXED_FEE"}),
    ("cdc.psa.assignment", "status"): frozenset({"PROPOSED", "CONFIRMED", "CANCELLED"}),
    ("cdc.psa.time_entry", "status"): frozenset({"DRAFT", "SUBMITTED", "APPROVED", "REJECTED"}),
}

CDC_OPS: Final[frozenset[str]] = frozenset({"c", "u", "d", "r"})

# Output topics and the schema (in schemas/) each one's value uses.
COMMAND_TOPICS: Final[dict[str, str]] = {
    "erp.cmd.employee": "pssync.cmd.EmployeeCommand",
    "erp.cmd.project": "pssync.cmd.ProjectCommand",
    "erp.cmd.time_entry": "pssync.cmd.TimeEntryCommand",
}
DRIFT_TOPIC: Final = "sync.drift"
EXCEPTIONS_TOPIC: Final = "sync.exceptions"
DLQ_TOPIC: Final = "sync.dlq"
RECONCILED_TOPICS: Final[tuple[str, ...]] = (
    "reconciled.worker",
    "reconciled.project",
    "reconciled.assignment",
)

# Operations: what people do to exceptions (`POST /api/exceptions/{id}/actions`), keyed
# like the data it acts on (the owning flow's join key), and what each action did.
ACTIONS_TOPIC: Final = "ops.actions"
OUTCOMES_TOPIC: Final = "ops.action_outcomes"
ACTIONS: Final[tuple[str, ...]] = ("dismiss", "retry", "post_to_next_open_period", "assign")
# an action's outcome on ops.action_outcomes
OUTCOMES: Final[frozenset[str]] = frozenset({"APPLIED", "NOT_APPLICABLE"})

CDC_TOPICS: Final[tuple[str, ...]] = tuple(t.topic for t in TABLES)
OUTPUT_TOPICS: Final[tuple[str, ...]] = (
    *COMMAND_TOPICS,
    DRIFT_TOPIC,
    EXCEPTIONS_TOPIC,
    DLQ_TOPIC,
    *RECONCILED_TOPICS,
    OUTCOMES_TOPIC,
)
OPS_TOPICS: Final[tuple[str, ...]] = (ACTIONS_TOPIC,)
ALL_TOPICS: Final[tuple[str, ...]] = (*CDC_TOPICS, *OUTPUT_TOPICS, *OPS_TOPICS)
COMPACTED_TOPICS: Final[frozenset[str]] = frozenset(RECONCILED_TOPICS)


def schema_file(topic: str, part: str) -> str:
    """The file name in `schemas/` of a topic's key or value schema."""
    return f"{topic}-{part}.avsc"
