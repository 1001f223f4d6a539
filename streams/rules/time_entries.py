"""Time to ledger: when an approved time entry is posted, reversed, or held for a human.

Pure. `evaluate` looks at one time entry's state and the facts about its
worker, project, period and rates, and decides:
- TIME_ENTRY_POSTED: one POST_TIME_ENTRY per approved version whose worker was
  employed on work_date, has an ERP employee, whose project has an ACTIVE ERP
  project, whose period is OPEN and that has a cost rate effective on work_date.
- An entry changed after posting (hours, date, project, billable) gets
  REVERSE_TIME_ENTRY and a new POST; rejected or deleted after posting gets
  REVERSE_TIME_ENTRY. An unchanged re-approval, a redelivery, or a change of
  reference data (a period closing, a rate corrected) posts nothing new.
- Exceptions TIME_FOR_INACTIVE_WORKER, TIME_IN_CLOSED_PERIOD, TIME_MISSING_COST_RATE;
  a missing worker, ERP employee, ERP project or period parks the entry until it
  arrives, and DEPENDENCY_TIMEOUT after the timeout.

The period is the ERP project's legal entity's (`<legal_entity>:<YYYY-MM>` of
work_date): the books the time is posted to. `state["posted"]` is what the
ledger holds now; net posted hours always equal the last approved version's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pssync.streams.findings import CommandDraft, Finding
from pssync.streams.rules.common import Evaluation, Parking, Timing, dependency_timeout, identity
from pssync.streams.rules.money import cost_amount, money, rate_on

Record = dict[str, Any]

TOPIC = "cdc.psa.time_entry"
COMMAND_TOPIC = "erp.cmd.time_entry"


def new_state(time_entry_id: str) -> Record:
    return {
        "id": time_entry_id,
        "rec": None,
        "src": None,
        "seen": {},
        "posted": None,
        "posts": 0,
        "open": {},
        "issued": [],
        "since": {},
    }


@dataclass(slots=True)
class TimeFacts:
    """What the flow looked up for this entry (None = not known yet)."""

    worker: Record | None = None
    erp_employee_id: str | None = None
    rates: list[Record] = field(default_factory=list)
    erp_project: Record | None = None
    period: Record | None = None
    next_open_period: str | None = None
    # the period an operator chose for an entry whose own period is closed (the
    # post_to_next_open_period action), as it stands now
    post_to: Record | None = None


def essentials(rec: Record) -> list[Any]:
    """The fields whose change after posting means reverse and post again."""
    return [
        rec["worker_id"],
        rec["project_id"],
        rec["work_date"],
        str(Decimal(rec["hours"]).normalize()),
        bool(rec["billable"]),
    ]


def period_id(legal_entity: str, work_date: str) -> str:
    return f"{legal_entity}:{work_date[:7]}"


def evaluate(state: Record, facts: TimeFacts, timing: Timing) -> Evaluation:
    out = Evaluation()
    parking = Parking(state, out, timing)
    rec: Record | None = state["rec"]
    posted: Record | None = state["posted"]
    approved = rec is not None and rec["status"] == "APPROVED"

    if (
        posted is not None
        and approved
        and rec is not None
        and posted["essentials"] == essentials(rec)
    ):
        parking.done()
        return out  # already in the ledger as it stands
    if posted is not None:
        out.commands.append(_reverse(state, posted))
        state["posted"] = None

    if approved and rec is not None:
        payload = _postable(rec, facts, out, parking)
        if payload is not None:
            state["posts"] += 1
            payload["version"] = state["posts"]
            draft = CommandDraft(
                topic=COMMAND_TOPIC,
                type="POST_TIME_ENTRY",
                entity_id=rec["time_entry_id"],
                key=rec["time_entry_id"],
                payload=payload,
                basis=(identity(state["src"]),),
                rule="TIME_ENTRY_POSTED",
                sources=(state["src"],),
                sla_start=rec.get("approved_at"),
            )
            out.commands.append(draft)
            state["posted"] = {
                "command_id": draft.command_id,
                "payload": payload,
                "essentials": essentials(rec),
            }
    parking.done()
    return out


def _reverse(state: Record, posted: Record) -> CommandDraft:
    payload = dict(posted["payload"]) | {"reverses_command_id": posted["command_id"]}
    return CommandDraft(
        topic=COMMAND_TOPIC,
        type="REVERSE_TIME_ENTRY",
        entity_id=payload["time_entry_id"],
        key=payload["time_entry_id"],
        payload=payload,
        basis=(posted["command_id"],),
        rule="TIME_ENTRY_POSTED",
        sources=(state["src"],) if state["src"] else (),
    )


def _exception(
    rule: str, rec: Record, reason: str, remediation: str, **context: str | None
) -> Finding:
    return Finding(
        kind="exception",
        rule=rule,
        entity_type="time_entry",
        entity_id=rec["time_entry_id"],
        reason=reason,
        remediation=remediation,
        context=tuple(
            sorted(
                {
                    "worker_id": rec["worker_id"],
                    "project_id": rec["project_id"],
                    "work_date": rec["work_date"],
                    **context,
                }.items()
            )
        ),
    )


def _postable(rec: Record, facts: TimeFacts, out: Evaluation, parking: Parking) -> Record | None:
    """The POST payload if every check passes; otherwise records findings or waits."""
    day, te_id = rec["work_date"], rec["time_entry_id"]
    missing = []
    worker = facts.worker
    if worker is None:
        missing.append(f"worker:{rec['worker_id']}")
    elif day < worker["hire_date"] or (
        worker.get("termination_date") and day > worker["termination_date"]
    ):
        out.findings.append(
            _exception(
                "TIME_FOR_INACTIVE_WORKER",
                rec,
                f"work date {day} is outside the worker's employment "
                f"({worker['hire_date']} to {worker.get('termination_date') or 'open'})",
                "Correct the work date or the worker in the PSA, or reject the entry; "
                "nothing was posted.",
                hire_date=worker["hire_date"],
                termination_date=worker.get("termination_date"),
            )
        )
        return None
    elif facts.erp_employee_id is None:
        missing.append(f"erp_employee:{rec['worker_id']}")
    erp_project = facts.erp_project
    if erp_project is None or erp_project.get("status") != "ACTIVE":
        missing.append(f"erp_project:{rec['project_id']}")
    period = facts.period
    if erp_project is not None and period is None:
        missing.append(f"period:{period_id(erp_project['legal_entity'], day)}")
    if missing:
        timed_out = [m for m in missing if parking.wait(m, f"POST_TIME_ENTRY {te_id}")]
        if timed_out:
            since = min(parking.started(m) for m in timed_out)
            out.findings.append(
                dependency_timeout(
                    "time_entry", te_id, timed_out, f"POST_TIME_ENTRY {te_id}", since
                )
            )
        return None
    assert erp_project is not None
    assert period is not None
    assert worker is not None
    target = facts.post_to
    if (
        period["status"] != "OPEN"
        and target is not None
        and target["status"] == "OPEN"
        and target["legal_entity"] == period["legal_entity"]
        and target["period"] > period["period"]
    ):
        period = target  # an operator's choice: posted there instead (payload.period_id)
    if period["status"] != "OPEN":
        out.findings.append(
            _exception(
                "TIME_IN_CLOSED_PERIOD",
                rec,
                f"period {period['period_id']} is closed",
                (
                    f"Post it to the next open period, {facts.next_open_period}, with an ERP "
                    "adjustment, or reopen the period; pssync posts it once the period is open."
                    if facts.next_open_period
                    else "Reopen the period or choose an open one with an ERP adjustment; "
                    "pssync posts it once the period is open."
                ),
                period_id=period["period_id"],
                next_open_period=facts.next_open_period,
            )
        )
        return None
    rate = rate_on(facts.rates, day)
    if rate is None:
        out.findings.append(
            _exception(
                "TIME_MISSING_COST_RATE",
                rec,
                f"no cost rate is effective on {day}",
                "Add the worker's cost rate covering this date in the ERP; the entry is posted "
                "once it arrives.",
                rates=";".join(
                    sorted(
                        f"{r['effective_from']}..{r.get('effective_to') or ''}" for r in facts.rates
                    )
                )
                or None,
            )
        )
        return None
    return {
        "time_entry_id": te_id,
        "version": 0,
        "worker_id": rec["worker_id"],
        "project_id": rec["project_id"],
        "erp_employee_id": facts.erp_employee_id,
        "erp_project_id": erp_project["erp_project_id"],
        "work_date": day,
        "hours": money(rec["hours"]),
        "billable": bool(rec["billable"]),
        "cost_rate": money(rate["rate"]),
        "currency": rate["currency"],
        "cost_amount": str(cost_amount(rec["hours"], rate["rate"])),
        "period_id": period["period_id"],
        "reverses_command_id": None,
    }


def net_posted_hours(commands: list[Record]) -> Decimal:
    """Sum of POST hours minus REVERSE hours (for checks and tests)."""
    total = Decimal(0)
    for c in commands:
        hours = Decimal(c["payload"]["hours"])
        total += hours if c["type"] == "POST_TIME_ENTRY" else -hours
    return total
