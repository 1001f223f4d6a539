"""People events: hires, leave, cost-rate changes, ERP employee edits and terminations.

Each function makes the changes of one business event at the sources and
returns them as closed `Group`s. In a clean event the ERP side is committed
first (employee and cost rate before the HR worker; deactivation before the
termination), so no rule sees a half-done event.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from pssync.simulate.feed import Group
from pssync.simulate.model import (
    CENT,
    DAY,
    DIRECTOR,
    ENTITIES,
    PROFILES,
    Assignment,
    Entry,
    Firm,
    Rate,
    Worker,
    period_id,
    weekday,
)
from pssync.simulate.names import FIRST_NAMES, LAST_NAMES
from pssync.simulate.timesheets import approve, new_entry

PROMOTION = {
    "Analyst": "Consultant",
    "Consultant": "Senior Consultant",
    "Senior Consultant": "Manager",
    "Manager": "Senior Manager",
    "Senior Manager": "Principal",
    "Data Engineer": "Solution Architect",
    "Project Manager": "Senior Manager",
}
HIRE_FAULTS = (
    "WORKER_MISSING_IN_ERP",
    "WORKER_INVALID_COST_CENTER",
    "ERP_EMPLOYEE_WITHOUT_HR_WORKER",
)
LATE_HIRE_SHARE = 0.3  # hires registered days late, with time already approved


def pick_entity(rng: random.Random) -> str:
    codes = list(ENTITIES)
    return rng.choices(codes, weights=[ENTITIES[c].hiring_weight for c in codes])[0]


def make_worker(
    firm: Firm,
    legal_entity: str,
    hire_date: dt.date,
    cost_center: str | None = None,
    profile: str | None = None,
) -> Worker:
    rng = firm.rng
    worker_id = firm.next_id("W")
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    if profile is None:
        names = list(PROFILES)
        profile = rng.choices(names, weights=[PROFILES[n][1] for n in names])[0]
    entity = ENTITIES[legal_entity]
    worker = Worker(
        worker_id=worker_id,
        full_name=f"{first} {last}",
        email=f"{first}.{last}.{worker_id[2:]}@{entity.domain}".lower(),
        legal_entity=legal_entity,
        cost_center=cost_center or rng.choice(entity.cost_centers),
        job_profile=profile,
        hire_date=hire_date,
        manager_id=firm.directors.get(legal_entity),
    )
    firm.workers[worker_id] = worker
    return worker


def provision(firm: Firm, worker: Worker, rate_from: dt.date | None = None) -> None:
    """The ERP side of a hire: an employee in the worker's cost center and a cost rate."""
    worker.erp_employee_id = firm.next_id("E")
    worker.erp_cost_center = worker.cost_center
    worker.erp_active = True
    amount = firm.cost_rate(worker.job_profile, worker.legal_entity)
    worker.rates.append(Rate(firm.next_id("R"), rate_from or worker.hire_date, None, amount))


def role_of(profile: str) -> str:
    if profile in ("Manager", "Senior Manager", "Principal", "Project Manager"):
        return "Engagement Lead"
    return profile


def new_assignment(
    firm: Firm, worker: Worker, project_id: str, start: dt.date, bill_rate: Decimal
) -> Assignment:
    project = firm.projects[project_id]
    end = min(project.end_date, start + dt.timedelta(days=firm.rng.randint(28, 84)))
    assignment = Assignment(
        firm.next_id("A"),
        project_id,
        worker.worker_id,
        role_of(worker.job_profile),
        start,
        end,
        100,
        bill_rate,
    )
    firm.assignments[assignment.assignment_id] = assignment
    return assignment


def weekdays(first: dt.date, last: dt.date) -> list[dt.date]:
    out, day = [], first
    while day <= last:
        if weekday(day):
            out.append(day)
        day += DAY
    return out


def hire(firm: Firm, day: dt.date, at_ms: int) -> Iterator[Group]:
    rng = firm.rng
    legal_entity = pick_entity(rng)
    projects = firm.staffable_projects(legal_entity, day)
    late = bool(projects) and rng.random() < LATE_HIRE_SHARE
    fault = firm.faults.pick(
        *HIRE_FAULTS,
        "ASSIGNMENT_INVALID_COST_CENTER" if projects else None,
        "OUT_OF_ORDER" if late else None,
    )
    if fault is not None and fault != "OUT_OF_ORDER":
        late = False
    group = firm.begin("hire", at_ms)
    legacy = ENTITIES[legal_entity].legacy_cost_center
    if fault in ("WORKER_MISSING_IN_ERP", "WORKER_INVALID_COST_CENTER"):
        cc = legacy if fault == "WORKER_INVALID_COST_CENTER" else None
        worker = make_worker(firm, legal_entity, day, cost_center=cc)
        worker.used, worker.frozen = fault, True
        firm.put_worker(group, worker)
        detail: dict[str, Any] = {"cost_center": worker.cost_center, "legal_entity": legal_entity}
        if cc:
            detail["cost_center_is_active_in_erp"] = False
        firm.faults.record(group, fault, worker.worker_id, **detail)
    elif fault == "ERP_EMPLOYEE_WITHOUT_HR_WORKER":
        worker = make_worker(firm, legal_entity, day)
        worker.used, worker.frozen, worker.in_hr = fault, True, False
        provision(firm, worker)
        firm.put_employee(group, worker)
        firm.put_rate(group, worker, worker.rates[-1])
        assert worker.erp_employee_id is not None
        firm.faults.record(
            group,
            fault,
            worker.erp_employee_id,
            worker_id=worker.worker_id,
            note="HR never sends this worker (offer withdrawn)",
        )
    elif fault == "ASSIGNMENT_INVALID_COST_CENTER":
        worker = make_worker(firm, legal_entity, day, cost_center=legacy)
        worker.used, worker.frozen = fault, True
        provision(firm, worker)
        firm.put_employee(group, worker)
        firm.put_rate(group, worker, worker.rates[-1])
        firm.put_worker(group, worker)
        project = rng.choice(projects)
        bill = firm.bill_rate(worker.rates[-1].amount)
        assignment = new_assignment(firm, worker, project.project_id, day, bill)
        assignment.frozen = True
        firm.put_assignment(group, assignment)
        firm.faults.record(
            group,
            fault,
            assignment.assignment_id,
            worker_id=worker.worker_id,
            cost_center=legacy,
            cost_center_is_active_in_erp=False,
            project_id=project.project_id,
        )
    else:
        yield from _clean_hire(firm, group, day, legal_entity, late, fault)
        return
    yield firm.close(group)


def _clean_hire(
    firm: Firm, group: Group, day: dt.date, legal_entity: str, late: bool, fault: str | None
) -> Iterator[Group]:
    """A hire, ERP first; a late one also brings its assignment and approved time."""
    rng = firm.rng
    hire_date = day
    dates: list[dt.date] = []
    project = None
    if late:
        project = rng.choice(firm.staffable_projects(legal_entity, day))
        back = weekdays(day - dt.timedelta(days=rng.randint(4, 10)), day - DAY)
        dates = [
            d
            for d in back
            if d >= project.start_date and firm.periods.get(period_id(legal_entity, d)) == "OPEN"
        ]
        hire_date = dates[0] if dates else day
    worker = make_worker(firm, legal_entity, hire_date)
    provision(firm, worker)
    firm.put_employee(group, worker)
    firm.put_rate(group, worker, worker.rates[-1])
    firm.put_worker(group, worker)
    if project is not None and dates:
        bill = firm.bill_rate(worker.rates[-1].amount)
        assignment = new_assignment(firm, worker, project.project_id, hire_date, bill)
        firm.put_assignment(group, assignment)
        entries = []
        for d in dates:
            entry = new_entry(firm, worker, assignment, d)
            firm.put_entry(group, entry)
            entry.status = "SUBMITTED"
            firm.put_entry(group, entry)
            approve(firm, group, entry)
            entries.append(entry.time_entry_id)
        if fault == "OUT_OF_ORDER":
            group.send_first("psa")
            worker.used = fault
            firm.faults.record(
                group,
                fault,
                worker.worker_id,
                sent_first=[assignment.assignment_id, *entries],
                dependencies=[
                    f"erp_employee:{worker.erp_employee_id}",
                    f"worker:{worker.worker_id}",
                ],
                note="approved time and its assignment arrive before the worker and ERP employee",
            )
    yield firm.close(group)


def leave(firm: Firm, day: dt.date, at_ms: int) -> Iterator[Group]:
    for worker in sorted(firm.workers.values(), key=lambda w: w.worker_id):
        if worker.status == "LEAVE" and worker.leave_until and worker.leave_until <= day:
            group = firm.begin("return from leave", at_ms)
            worker.status, worker.leave_until = "ACTIVE", None
            firm.put_worker(group, worker)
            yield firm.close(group)
    if firm.rng.random() < 0.1:
        candidates = [w for w in _free(firm) if firm.bookable_assignments(w, day)]
        if candidates:
            worker = firm.rng.choice(candidates)
            group = firm.begin("leave", at_ms)
            worker.status = "LEAVE"
            worker.leave_until = day + dt.timedelta(days=firm.rng.randint(5, 14))
            firm.put_worker(group, worker)
            yield firm.close(group)


def _free(firm: Firm) -> list[Worker]:
    return [w for _, w in sorted(firm.workers.items()) if w.free and w.in_hr]


def rate_change(firm: Firm, day: dt.date, at_ms: int) -> Iterator[Group]:
    """A raise from a mid-month date: the old rate ends the day before the new one starts."""
    rng = firm.rng
    candidates = [w for w in _free(firm) if w.rates and w.rates[-1].start < day]
    if not candidates:
        return
    worker = rng.choice(candidates)
    starts = day + dt.timedelta(days=rng.randint(2, 8))
    while not weekday(starts - DAY):
        starts += DAY
    gap_day = starts - DAY
    fault = firm.faults.pick(
        "TIME_MISSING_COST_RATE" if firm.bookable_assignments(worker, gap_day) else None
    )
    old = worker.rates[-1]
    old.end = starts - dt.timedelta(days=2 if fault else 1)
    raise_pct = Decimal(rng.randint(103, 108)) / 100
    new = Rate(firm.next_id("R"), starts, None, (old.amount * raise_pct).quantize(CENT))
    worker.rates.append(new)
    group = firm.begin("cost rate change", at_ms)
    firm.put_rate(group, worker, old)
    firm.put_rate(group, worker, new)
    if worker.job_profile in PROMOTION and rng.random() < 0.3:
        worker.job_profile = PROMOTION[worker.job_profile]
        firm.put_worker(group, worker)
    if fault:
        # the truth is recorded when the gap day's entry is approved (timesheets.approve)
        worker.used = fault
    yield firm.close(group)


def erp_employee_edit(firm: Firm, day: dt.date, at_ms: int) -> Iterator[Group]:
    """Someone in finance edits an employee; a fault re-codes its cost center."""
    candidates = [w for w in _free(firm) if w.erp_active and w.erp_cost_center == w.cost_center]
    if not candidates:
        return
    worker = firm.rng.choice(candidates)
    fault = firm.faults.pick("WORKER_FIELD_DRIFT")
    group = firm.begin("ERP employee edit", at_ms)
    if fault:
        others = [c for c in ENTITIES[worker.legal_entity].cost_centers if c != worker.cost_center]
        worker.erp_cost_center = firm.rng.choice(others)
        worker.used = fault
    firm.put_employee(group, worker)
    if fault:
        firm.faults.record(
            group,
            fault,
            worker.worker_id,
            field="cost_center",
            hr=worker.cost_center,
            erp=worker.erp_cost_center,
            erp_employee_id=worker.erp_employee_id,
        )
    yield firm.close(group)


def terminate(firm: Firm, day: dt.date, at_ms: int) -> Iterator[Group]:
    """A leaver: final timesheet approved, assignments ended, ERP deactivated, then HR."""
    rng = firm.rng
    staffed = sum(1 for w in firm.workers.values() if w.in_hr and w.status != "TERMINATED")
    if staffed <= firm.config.workers * 0.7:
        return
    month_ago = day - dt.timedelta(days=30)
    candidates = [w for w in _free(firm) if w.hire_date < month_ago]
    if not candidates:
        return
    worker = rng.choice(candidates)
    mine = [a for _, a in sorted(firm.assignments.items()) if a.worker_id == worker.worker_id]
    live = [a for a in mine if a.status == "CONFIRMED" and a.end_date >= day]
    overrun = [a for a in live if a.end_date > day and not a.frozen]
    book_to = firm.bookable_assignments(worker, day)
    fault = firm.faults.pick(
        "TERMINATED_WORKER_ACTIVE_IN_ERP",
        "ASSIGNMENT_WORKER_INELIGIBLE" if overrun else None,
        "TIME_FOR_INACTIVE_WORKER" if book_to else None,
    )
    group = firm.begin("termination", at_ms)
    for entry in sorted(firm.entries_of(worker.worker_id, "DRAFT", "SUBMITTED"), key=_entry_key):
        if entry.work_date < day and not firm.entry_frozen(entry):
            if entry.status == "DRAFT":
                entry.status = "SUBMITTED"
                firm.put_entry(group, entry)
            approve(firm, group, entry)
    left = overrun if fault == "ASSIGNMENT_WORKER_INELIGIBLE" else []
    for a in live:
        if a in left:
            continue
        if a.start_date >= day:
            a.status = "CANCELLED"
        else:
            a.end_date = day - DAY
        firm.put_assignment(group, a)
    if fault != "TERMINATED_WORKER_ACTIVE_IN_ERP":
        worker.erp_active = False
        firm.put_employee(group, worker)
    worker.status, worker.termination_date = "TERMINATED", day
    worker.used = fault or "terminated"
    firm.put_worker(group, worker)
    if fault == "TERMINATED_WORKER_ACTIVE_IN_ERP":
        firm.faults.record(
            group,
            fault,
            worker.worker_id,
            termination_date=day.isoformat(),
            erp_employee_id=worker.erp_employee_id,
        )
    for a in left:
        firm.faults.record(
            group,
            "ASSIGNMENT_WORKER_INELIGIBLE",
            a.assignment_id,
            worker_id=worker.worker_id,
            termination_date=day.isoformat(),
            assignment_end_date=a.end_date.isoformat(),
        )
    if fault == "TIME_FOR_INACTIVE_WORKER":
        work_date = day + DAY
        while not weekday(work_date):
            work_date += DAY
        due = work_date + DAY
        while not weekday(due):
            due += DAY
        firm.after_termination.append((due, worker.worker_id, book_to[0].assignment_id, work_date))
    yield firm.close(group)


def time_after_termination(firm: Firm, day: dt.date, at_ms: int) -> Iterator[Group]:
    """A leaver's late timesheet, dated after termination_date, approved anyway."""
    due = [item for item in firm.after_termination if item[0] <= day]
    firm.after_termination = [item for item in firm.after_termination if item[0] > day]
    for _, worker_id, assignment_id, work_date in due:
        worker = firm.workers[worker_id]
        assignment = firm.assignments[assignment_id]
        project = firm.projects[assignment.project_id]
        if not project.bookable or firm.periods.get(period_id(project.legal_entity, work_date)) != (
            "OPEN"
        ):
            firm.stats["fault not injected: project or period changed"] += 1
            continue
        group = firm.begin("late timesheet of a leaver", at_ms)
        entry = new_entry(firm, worker, assignment, work_date)
        firm.put_entry(group, entry)
        entry.status = "SUBMITTED"
        firm.put_entry(group, entry)
        approve(firm, group, entry, planned="TIME_FOR_INACTIVE_WORKER")
        yield firm.close(group)


def _entry_key(entry: Entry) -> tuple[dt.date, str]:
    return (entry.work_date, entry.time_entry_id)


__all__ = ["DIRECTOR", "hire", "leave", "make_worker", "provision", "rate_change", "terminate"]
