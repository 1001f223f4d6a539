"""Weekly time and the ERP's periods: drafts each evening, submitted on Friday, approved on
Monday; late entries; periods opened ahead and closed once their time is approved.

`approve` is where the truth about time is decided: the oracle
(`Firm.time_failures`) says whether the approved entry should post, and an
entry that would fail is approved only when a fault planned exactly that
failure; anything else is withheld (left SUBMITTED) and counted, never sent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, Final

from pssync.simulate.feed import Group
from pssync.simulate.model import (
    DAY,
    DIRECTOR,
    ENTITIES,
    Assignment,
    Entry,
    Firm,
    Worker,
    month_of,
    period_id,
    weekday,
)

# the oracle's failure each time fault is made of
PLANNED_FAILURE: Final[dict[str, str]] = {
    "TIME_FOR_INACTIVE_WORKER": "worker_not_employed",
    "TIME_IN_CLOSED_PERIOD": "period_not_open",
    "TIME_MISSING_COST_RATE": "no_cost_rate",
    "DEPENDENCY_TIMEOUT": "no_erp_project",
}
HOURS: Final = ("8.00", "8.00", "8.00", "8.00", "7.50", "7.50", "7.00", "8.50", "6.00", "4.00")
REJECT_SHARE: Final = 0.02
OPEN_AHEAD_FROM_DAY: Final = 20  # the ERP opens next month's period from the 20th
CLOSE_FROM_DAY: Final = 8  # and closes last month's from the 8th, once its time is approved


def new_entry(
    firm: Firm,
    worker: Worker,
    assignment: Assignment | None,
    work_date: dt.date,
    project_id: str | None = None,
    hours: str | None = None,
) -> Entry:
    project = firm.projects.get(project_id or (assignment.project_id if assignment else ""))
    billable = project is None or project.billing_type == "TIME_AND_MATERIALS"
    entry = Entry(
        firm.next_id("T"),
        worker.worker_id,
        project_id or (assignment.project_id if assignment else ""),
        assignment.assignment_id if assignment else None,
        work_date,
        Decimal(hours or firm.rng.choice(HOURS)),
        billable or firm.rng.random() < 0.3,
    )
    firm.entries[entry.time_entry_id] = entry
    return entry


def approve(firm: Firm, group: Group, entry: Entry, planned: str | None = None) -> bool:
    """Approve `entry` if the truth allows it; record its fault, or count it to post."""
    failures = firm.time_failures(entry)
    worker = firm.workers.get(entry.worker_id)
    gap = PLANNED_FAILURE["TIME_MISSING_COST_RATE"]
    if planned is None and worker is not None and worker.used == "TIME_MISSING_COST_RATE":
        planned = "TIME_MISSING_COST_RATE" if failures == [gap] else None
    if failures and (planned is None or failures != [PLANNED_FAILURE[planned]]):
        firm.stats["time entries withheld (would not post)"] += 1
        return False
    entry.status = "APPROVED"
    firm.put_entry(group, entry)
    group.approved += 1
    if not failures:
        group.posts += 1
        return True
    assert planned is not None
    project = firm.projects.get(entry.project_id)
    detail: dict[str, Any] = {
        "worker_id": entry.worker_id,
        "project_id": entry.project_id,
        "work_date": entry.work_date.isoformat(),
        "failure": failures[0],
    }
    if planned == "TIME_IN_CLOSED_PERIOD" and project is not None:
        detail["period_id"] = period_id(project.legal_entity, entry.work_date)
    elif planned == "TIME_FOR_INACTIVE_WORKER" and worker is not None:
        detail["termination_date"] = str(worker.termination_date)
    elif planned == "DEPENDENCY_TIMEOUT":
        detail["missing"] = f"project:{entry.project_id}"
    firm.faults.record(group, planned, entry.time_entry_id, **detail)
    firm.pinned_projects.add(entry.project_id)
    return True


def _at_work(firm: Firm) -> list[Worker]:
    return [
        w
        for _, w in sorted(firm.workers.items())
        if w.in_hr and w.status == "ACTIVE" and not w.frozen and w.job_profile != DIRECTOR
    ]


def drafts(firm: Firm, day: dt.date, at_ms: int) -> Iterator[Group]:
    """Each evening, everyone staffed books the day to one of their assignments."""
    for worker in _at_work(firm):
        assignments = firm.bookable_assignments(worker, day)
        if not assignments:
            continue
        group = firm.begin("time entry", at_ms)
        entry = new_entry(firm, worker, firm.rng.choice(assignments), day)
        firm.put_entry(group, entry)
        if firm.rng.random() < 0.04:  # corrected before submitting
            entry.hours = Decimal(firm.rng.choice(HOURS))
            firm.put_entry(group, entry)
        yield firm.close(group)


def submissions(firm: Firm, day: dt.date, at_ms: int) -> Iterator[Group]:
    """Friday: every worker submits the week's drafts."""
    for worker_id in sorted({e.worker_id for e in firm.entries.values() if e.status == "DRAFT"}):
        group = firm.begin("timesheet submitted", at_ms)
        for entry in _sorted(firm.entries_of(worker_id, "DRAFT")):
            entry.status = "SUBMITTED"
            firm.put_entry(group, entry)
        yield firm.close(group)


def approvals(firm: Firm, day: dt.date, at_ms: int) -> Iterator[Group]:
    """Monday: managers approve last week's submitted time (and reject the odd entry)."""
    for worker_id in sorted(
        {e.worker_id for e in firm.entries.values() if e.status == "SUBMITTED"}
    ):
        due = [
            e
            for e in _sorted(firm.entries_of(worker_id, "SUBMITTED"))
            if e.work_date < day and not firm.entry_frozen(e)
        ]
        if not due:
            continue
        group = firm.begin("timesheet approved", at_ms)
        for entry in due:
            if firm.rng.random() < REJECT_SHARE:
                entry.status = "REJECTED"
                firm.put_entry(group, entry)
            else:
                approve(firm, group, entry)
        if group.lines:
            yield firm.close(group)


def late_entry(firm: Firm, day: dt.date, at_ms: int) -> Iterator[Group]:
    """Someone books a forgotten day; faults date it in a closed period or to a ghost project."""
    rng = firm.rng
    candidates = [w for w in _at_work(firm) if w.used is None and firm.bookable_assignments(w, day)]
    if not candidates:
        return
    worker = rng.choice(candidates)
    assignment = rng.choice(firm.bookable_assignments(worker, day))
    closed_day = _closed_day(firm, worker)
    recent = [
        d
        for d in (day - dt.timedelta(days=n) for n in range(1, 11))
        if weekday(d)
        and d >= max(assignment.start_date, worker.hire_date)
        and firm.periods.get(period_id(worker.legal_entity, d)) == "OPEN"
        and worker.rate_on(d) is not None
    ]
    fault = firm.faults.pick(
        "TIME_IN_CLOSED_PERIOD" if closed_day else None,
        "DEPENDENCY_TIMEOUT" if recent else None,
    )
    if fault is None and not recent:
        return
    group = firm.begin("late time entry", at_ms)
    hours = rng.choice(("1.00", "1.50", "2.00", "2.50", "3.00"))
    if fault == "TIME_IN_CLOSED_PERIOD":
        assert closed_day is not None
        entry = new_entry(firm, worker, None, closed_day, assignment.project_id, hours)
    elif fault == "DEPENDENCY_TIMEOUT":
        entry = new_entry(firm, worker, None, rng.choice(recent), firm.ghost_project_id(), hours)
    else:
        entry = new_entry(firm, worker, assignment, rng.choice(recent), hours=hours)
    if fault:
        worker.used = fault
    firm.put_entry(group, entry)
    entry.status = "SUBMITTED"
    firm.put_entry(group, entry)
    approve(firm, group, entry, planned=fault)
    yield firm.close(group)


def _closed_day(firm: Firm, worker: Worker) -> dt.date | None:
    """A weekday in the latest CLOSED period of the worker's entity they could have worked."""
    closed = sorted(
        pid.split(":")[1]
        for pid, status in firm.periods.items()
        if status == "CLOSED" and pid.startswith(worker.legal_entity + ":")
    )
    if not closed:
        return None
    year, month = (int(x) for x in closed[-1].split("-"))
    day = dt.date(year, month, 1)
    days = []
    while day.month == month:
        if weekday(day) and worker.employed_on(day) and worker.rate_on(day) is not None:
            days.append(day)
        day += DAY
    return firm.rng.choice(days) if days else None


def open_periods(firm: Firm, day: dt.date, at_ms: int) -> Iterator[Group]:
    if day.day < OPEN_AHEAD_FROM_DAY:
        return
    ahead = (day.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
    new = [period_id(le, ahead) for le in ENTITIES if period_id(le, ahead) not in firm.periods]
    if new:
        group = firm.begin("ERP opens periods", at_ms)
        for pid in new:
            firm.periods[pid] = "OPEN"
            firm.put_period(group, pid)
        yield firm.close(group)


def close_periods(firm: Firm, day: dt.date, at_ms: int) -> Iterator[Group]:
    """Last month closes once none of its time is still waiting for approval."""
    if day.day < CLOSE_FROM_DAY:
        return
    last_month = month_of(day.replace(day=1) - DAY)
    pending = {
        firm.workers[e.worker_id].legal_entity
        for e in firm.entries.values()
        if e.status in ("DRAFT", "SUBMITTED")
        and month_of(e.work_date) == last_month
        and not firm.entry_frozen(e)
    }
    closing = [
        f"{le}:{last_month}"
        for le in ENTITIES
        if firm.periods.get(f"{le}:{last_month}") == "OPEN" and le not in pending
    ]
    if closing:
        group = firm.begin("ERP closes periods", at_ms)
        for pid in closing:
            firm.periods[pid] = "CLOSED"
            firm.put_period(group, pid)
        yield firm.close(group)


def _sorted(entries: list[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: (e.work_date, e.time_entry_id))
