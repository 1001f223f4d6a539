"""Staffing to costing: is a PSA assignment's worker eligible, costed, and priced above cost?

Pure. Rules (shared/domain.md):
- ASSIGNMENT_WORKER_INELIGIBLE: a CONFIRMED assignment whose worker is TERMINATED
  before the assignment ends, or unknown to HR (after the dependency timeout:
  until then the assignment is parked, the worker may still arrive): exception.
- ASSIGNMENT_INVALID_COST_CENTER: a CONFIRMED assignment whose worker's cost center
  is not active in the ERP for the worker's legal entity: exception.
- ASSIGNMENT_RATE_BELOW_COST: bill_rate below the worker's cost rate effective at
  start_date: alert (WARNING, margin risk).
An assignment whose project the PSA has not sent yet is parked on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pssync.streams.findings import FieldDiff, Finding
from pssync.streams.rules.common import Evaluation, Parking, Timing, dependency_timeout
from pssync.streams.rules.money import money, rate_on
from pssync.streams.rules.workers import cost_center_check

Record = dict[str, Any]

TOPIC = "cdc.psa.assignment"


def new_state(assignment_id: str) -> Record:
    return {
        "id": assignment_id,
        "rec": None,
        "src": None,
        "seen": {},
        "open": {},
        "issued": [],
        "since": {},
    }


@dataclass(slots=True)
class AssignmentFacts:
    worker: Record | None = None
    cost_centers: dict[str, Record] = field(default_factory=dict)
    rates: list[Record] = field(default_factory=list)
    project_known: bool = False


def evaluate(state: Record, facts: AssignmentFacts, timing: Timing) -> Evaluation:
    out = Evaluation()
    parking = Parking(state, out, timing)
    rec: Record | None = state["rec"]
    if rec is None or rec["status"] == "CANCELLED":
        parking.done()
        return out
    aid = rec["assignment_id"]
    worker = facts.worker
    confirmed = rec["status"] == "CONFIRMED"

    def exception(rule: str, reason: str, remediation: str, **context: str | None) -> Finding:
        return Finding(
            kind="exception",
            rule=rule,
            entity_type="assignment",
            entity_id=aid,
            reason=reason,
            remediation=remediation,
            context=tuple(
                sorted(
                    {
                        "worker_id": rec["worker_id"],
                        "project_id": rec["project_id"],
                        **context,
                    }.items()
                )
            ),
        )

    if worker is None:
        if parking.wait(f"worker:{rec['worker_id']}", f"assignment {aid}") and confirmed:
            out.findings.append(
                exception(
                    "ASSIGNMENT_WORKER_INELIGIBLE",
                    f"worker {rec['worker_id']} is unknown to HR",
                    "Provision the worker in HR, or re-staff the assignment in the PSA.",
                    missing=f"worker:{rec['worker_id']}",
                )
            )
    elif confirmed:
        ends = rec["end_date"]
        left = worker.get("termination_date")
        if worker["employment_status"] == "TERMINATED" and (left is None or left < ends):
            out.findings.append(
                exception(
                    "ASSIGNMENT_WORKER_INELIGIBLE",
                    f"worker is terminated ({left or 'date unknown'}) before the assignment ends "
                    f"({ends})",
                    "Re-staff the assignment or shorten it to the worker's last day.",
                    termination_date=left,
                    end_date=ends,
                )
            )
        verdict, reason = cost_center_check(worker, facts.cost_centers)
        if verdict == "unknown":
            if parking.wait(f"cost_center:{worker['cost_center']}", f"assignment {aid}"):
                out.findings.append(
                    dependency_timeout(
                        "assignment",
                        aid,
                        [f"cost_center:{worker['cost_center']}"],
                        f"assignment {aid}",
                        parking.started(f"cost_center:{worker['cost_center']}"),
                    )
                )
        elif verdict == "invalid":
            out.findings.append(
                exception(
                    "ASSIGNMENT_INVALID_COST_CENTER",
                    reason or "invalid cost center",
                    "Fix the worker's cost center in HR or activate it in the ERP; time on this "
                    "assignment cannot be costed until then.",
                    cost_center=worker.get("cost_center"),
                    legal_entity=worker.get("legal_entity"),
                )
            )
    if not facts.project_known:
        dep = f"project:{rec['project_id']}"
        if parking.wait(dep, f"assignment {aid}"):
            out.findings.append(
                dependency_timeout(
                    "assignment", aid, [dep], f"assignment {aid}", parking.started(dep)
                )
            )
    rate = rate_on(facts.rates, rec["start_date"])
    if rate is not None and Decimal(rec["bill_rate"]) < Decimal(rate["rate"]):
        out.findings.append(
            Finding(
                kind="alert",
                rule="ASSIGNMENT_RATE_BELOW_COST",
                severity="WARNING",
                entity_type="assignment",
                entity_id=aid,
                fields=(
                    FieldDiff(
                        "bill_rate",
                        "PSA",
                        {"PSA": money(rec["bill_rate"]), "ERP": money(rate["rate"])},
                    ),
                ),
                remediation=(
                    "The bill rate is below the worker's cost rate at the start date: review "
                    "pricing or staffing with the engagement manager."
                ),
            )
        )
    parking.done()
    return out


def golden(state: Record, facts: AssignmentFacts) -> Record | None:
    rec = state["rec"]
    if rec is None:
        return None
    rate = rate_on(facts.rates, rec["start_date"])
    alerts = sorted({s.split("|")[1] for s in state["open"] if s.startswith("alert|")})
    exceptions = sorted({s.split("|")[1] for s in state["open"] if s.startswith("exception|")})
    return {
        "assignment_id": rec["assignment_id"],
        "project_id": rec["project_id"],
        "worker_id": rec["worker_id"],
        "role": rec["role"],
        "start_date": rec["start_date"],
        "end_date": rec["end_date"],
        "allocation_pct": rec["allocation_pct"],
        "bill_rate": money(rec["bill_rate"]),
        "cost_rate": money(rate["rate"]) if rate else None,
        "status": rec["status"],
        "in_sync": not alerts and not exceptions,
        "open_alerts": alerts,
        "open_exceptions": exceptions,
    }
