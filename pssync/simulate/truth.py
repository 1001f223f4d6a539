"""What the simulator injected, and what the worker should make of it.

Every fault kind has an entity (the one the worker's finding names) and one or
more expectations: the rule that should fire, as an alert, an exception or a
DLQ record, or nothing at all for transport faults the worker must absorb.
The truth file is JSON lines: first `{"summary": {...}}` (expected outcome
counts over what was actually sent), then one line per expectation of each
injected fault. Only faults whose changes were sent are recorded.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pssync.avro.jsonform import format_instant

Record = dict[str, Any]

ALERT: Final = "alert"
EXCEPTION: Final = "exception"
DLQ: Final = "dlq"


@dataclass(frozen=True, slots=True)
class Expect:
    """One outcome a fault should produce: `rule` as a finding of `kind` (None: nothing)."""

    rule: str | None
    kind: str | None
    severity: str | None = None


def _alert(rule: str, severity: str | None) -> tuple[Expect, ...]:
    return (Expect(rule, ALERT, severity),)


def _exception(rule: str) -> tuple[Expect, ...]:
    return (Expect(rule, EXCEPTION),)


# fault kind -> (entity type the finding names, expectations: the first is the main one)
FAULTS: Final[dict[str, tuple[str, tuple[Expect, ...]]]] = {
    "WORKER_MISSING_IN_ERP": ("worker", _alert("WORKER_MISSING_IN_ERP", "INFO")),
    "WORKER_INVALID_COST_CENTER": (
        "worker",
        (
            Expect("WORKER_INVALID_COST_CENTER", EXCEPTION),
            Expect("WORKER_MISSING_IN_ERP", ALERT, "INFO"),
        ),
    ),
    "WORKER_FIELD_DRIFT": ("worker", _alert("WORKER_FIELD_DRIFT", "WARNING")),
    "TERMINATED_WORKER_ACTIVE_IN_ERP": (
        "worker",
        _alert("TERMINATED_WORKER_ACTIVE_IN_ERP", "CRITICAL"),
    ),
    "ERP_EMPLOYEE_WITHOUT_HR_WORKER": (
        "erp_employee",
        _alert("ERP_EMPLOYEE_WITHOUT_HR_WORKER", "WARNING"),
    ),
    # the contract names no severity for the project alerts
    "PROJECT_MISSING_IN_ERP": ("project", _alert("PROJECT_MISSING_IN_ERP", None)),
    "PROJECT_GATE_FAILED": ("project", _exception("PROJECT_GATE_FAILED")),
    "PROJECT_FIELD_DRIFT": ("project", _alert("PROJECT_FIELD_DRIFT", None)),
    "SOW_SIGNED_WITHOUT_PROJECT": ("sow", _alert("SOW_SIGNED_WITHOUT_PROJECT", "WARNING")),
    "ASSIGNMENT_WORKER_INELIGIBLE": ("assignment", _exception("ASSIGNMENT_WORKER_INELIGIBLE")),
    "ASSIGNMENT_INVALID_COST_CENTER": (
        "assignment",
        _exception("ASSIGNMENT_INVALID_COST_CENTER"),
    ),
    "ASSIGNMENT_RATE_BELOW_COST": ("assignment", _alert("ASSIGNMENT_RATE_BELOW_COST", "WARNING")),
    "TIME_FOR_INACTIVE_WORKER": ("time_entry", _exception("TIME_FOR_INACTIVE_WORKER")),
    "TIME_IN_CLOSED_PERIOD": ("time_entry", _exception("TIME_IN_CLOSED_PERIOD")),
    "TIME_MISSING_COST_RATE": ("time_entry", _exception("TIME_MISSING_COST_RATE")),
    "DEPENDENCY_TIMEOUT": ("time_entry", _exception("DEPENDENCY_TIMEOUT")),
    # transport faults: the worker must absorb them
    "OUT_OF_ORDER": ("worker", (Expect(None, None),)),
    "DUPLICATE": ("change", (Expect(None, None),)),
    "UNDECODABLE": ("change", (Expect(None, DLQ),)),
}
KINDS: Final[tuple[str, ...]] = tuple(FAULTS)
TRANSPORT_KINDS: Final = frozenset({"OUT_OF_ORDER", "DUPLICATE", "UNDECODABLE"})
# the faults a rule detects (the others the worker must absorb)
RULE_KINDS: Final[tuple[str, ...]] = tuple(k for k in KINDS if k not in TRANSPORT_KINDS)

# findings allowed on a fault's entity, not required: the contract leaves the first open;
# an unposted entry's period closes later on, which may add the second
ALSO_ALLOWED: Final[dict[str, tuple[str, ...]]] = {
    "PROJECT_GATE_FAILED": ("PROJECT_MISSING_IN_ERP",),
    "TIME_FOR_INACTIVE_WORKER": ("TIME_IN_CLOSED_PERIOD",),
    "TIME_MISSING_COST_RATE": ("TIME_IN_CLOSED_PERIOD",),
}


def iso(ms: int) -> str:
    return format_instant(dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC))


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault: its kind, the entity it is on, when it became visible, the facts."""

    fault_id: str
    kind: str
    entity_type: str
    entity_id: str
    at_ms: int
    detail: Mapping[str, Any] = field(default_factory=dict)

    def records(self) -> list[Record]:
        """One truth line per expectation (WORKER_INVALID_COST_CENTER has two)."""
        out = []
        for n, expect in enumerate(FAULTS[self.kind][1]):
            record: Record = {
                "fault_id": self.fault_id,
                "fault": self.kind,
                "expect_rule": expect.rule,
                "kind": expect.kind,
                "severity": expect.severity,
                "entity_type": self.entity_type,
                "entity_id": self.entity_id,
                "at": iso(self.at_ms),
                "detail": dict(self.detail) | ({"companion": True} if n else {}),
            }
            if self.kind in ALSO_ALLOWED and n == 0:
                record["also_allowed"] = list(ALSO_ALLOWED[self.kind])
            out.append(record)
        return out


@dataclass(slots=True)
class TruthLog:
    """Faults and expected outcomes of the groups actually sent."""

    faults: list[Fault] = field(default_factory=list)
    posts: int = 0
    approved: int = 0
    changes: int = 0
    by_topic: Counter[str] = field(default_factory=Counter)
    first_ms: int | None = None
    last_ms: int | None = None

    def add(self, faults: Iterable[Fault], posts: int, approved: int) -> None:
        self.faults.extend(faults)
        self.posts += posts
        self.approved += approved

    def count(self, topic: str, ts_ms: int | None) -> None:
        self.changes += 1
        self.by_topic[topic] += 1
        if ts_ms is not None:
            self.first_ms = ts_ms if self.first_ms is None else min(self.first_ms, ts_ms)
            self.last_ms = ts_ms if self.last_ms is None else max(self.last_ms, ts_ms)

    def by_kind(self) -> Counter[str]:
        return Counter(f.kind for f in self.faults)

    def summary(self, **facts: Any) -> Record:
        findings: dict[str, Counter[str]] = {ALERT: Counter(), EXCEPTION: Counter()}
        dlq = 0
        for fault in self.faults:
            for expect in FAULTS[fault.kind][1]:
                if expect.kind == DLQ:
                    dlq += 1
                elif expect.kind is not None and expect.rule is not None:
                    findings[expect.kind][expect.rule] += 1
        return {
            **facts,
            "changes": self.changes,
            "by_topic": dict(sorted(self.by_topic.items())),
            "source_time": {
                "first": iso(self.first_ms) if self.first_ms is not None else None,
                "last": iso(self.last_ms) if self.last_ms is not None else None,
            },
            "faults": dict(sorted(self.by_kind().items())),
            "expected": {
                "POST_TIME_ENTRY": self.posts,
                "approved_time_entries": self.approved,
                "alerts": dict(sorted(findings[ALERT].items())),
                "exceptions": dict(sorted(findings[EXCEPTION].items())),
                "dlq": dlq,
            },
        }

    def lines(self, **facts: Any) -> list[str]:
        out = [json.dumps({"summary": self.summary(**facts)}, separators=(",", ":"))]
        for fault in self.faults:
            out += [json.dumps(r, separators=(",", ":")) for r in fault.records()]
        return out

    def write(self, path: Path, **facts: Any) -> None:
        path.write_text("".join(line + "\n" for line in self.lines(**facts)), encoding="utf-8")
