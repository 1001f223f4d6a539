"""The firm as it stands at the start: a Debezium snapshot (op "r") of all four platforms.

Sent as one group in dependency order, so every reference a rule follows is
already there when it is read: cost centers, periods and customers before
projects; ERP employees and cost rates before HR workers; ERP projects before
the PSA projects they link, and those before the signed SOWs they reference.
Last week's time is in it as SUBMITTED, for Monday's approvals.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from pssync.simulate.deals import new_customer, new_project, new_sow
from pssync.simulate.feed import Group, mark_snapshot_ends
from pssync.simulate.model import (
    CENT,
    DAY,
    DIRECTOR,
    ENTITIES,
    Entry,
    Firm,
    Rate,
    Worker,
    month_of,
    weekday,
)
from pssync.simulate.people import make_worker, new_assignment, pick_entity, provision
from pssync.simulate.timesheets import new_entry

STAFFED_SHARE = 0.85
FORMER_EMPLOYEES = 2


def initial_load(firm: Firm) -> Group:
    config, rng = firm.config, firm.rng
    today = config.start.date()
    start_ms = int(config.start.timestamp() * 1000)
    for entity in ENTITIES.values():
        for cc in entity.cost_centers:
            firm.cost_centers[cc] = (entity.code, True)
        firm.cost_centers[entity.legacy_cost_center] = (entity.code, False)
    first = today.replace(day=1)
    previous = (first - DAY).replace(day=1)
    months = [((previous - DAY).replace(day=1), "CLOSED"), (previous, "OPEN"), (first, "OPEN")]
    if today.day >= 20:
        months.append(((first + dt.timedelta(days=32)).replace(day=1), "OPEN"))
    for entity in ENTITIES.values():
        for month, status in months:
            firm.periods[f"{entity.code}:{month_of(month)}"] = status

    customers = [new_customer(firm, code) for code in ENTITIES]
    customers += [new_customer(firm, pick_entity(rng)) for _ in range(config.customers - 3)]
    for customer in customers:
        for _ in range(rng.choice((1, 1, 2))):
            template = rng.choice(("TM-ADVISORY", "TM-DATA-PLATFORM", "FF-IMPLEMENTATION"))
            signed = start_ms - rng.randint(20, 150) * 86_400_000
            sow_id = new_sow(firm, customer, template, signed)
            begun = today - dt.timedelta(days=rng.randint(10, 120))
            project = new_project(firm, customer, sow_id, template, begun)
            project.end_date = today + dt.timedelta(days=rng.randint(30, 200))
            project.status, project.erp_status = "ACTIVE", "ACTIVE"
            project.erp_project_id = firm.next_id("EP")

    workers: list[Worker] = []
    for code in ENTITIES:
        hired = today - dt.timedelta(days=rng.randint(1500, 3000))
        director = make_worker(firm, code, hired, profile=DIRECTOR)
        firm.directors[code] = director.worker_id
        workers.append(director)
    for _ in range(config.workers - len(workers)):
        workers.append(_veteran(firm, pick_entity(rng), today))
    for worker in workers:
        if worker.erp_employee_id is None:
            _rate_history(firm, worker, today)
    for _ in range(FORMER_EMPLOYEES):
        former = _veteran(firm, pick_entity(rng), today)
        _rate_history(firm, former, today)
        former.termination_date = today - dt.timedelta(days=rng.randint(20, 200))
        former.status, former.erp_active, former.used = "TERMINATED", False, "terminated"
        former.rates[-1].end = former.termination_date
    _staff(firm, today)
    regular = [w for w in workers if w.job_profile != DIRECTOR]
    on_leave = rng.choice(regular)
    on_leave.status, on_leave.leave_until = "LEAVE", today + dt.timedelta(days=rng.randint(3, 8))

    group = firm.begin("initial load", start_ms)
    for cc in sorted(firm.cost_centers):
        firm.put_cost_center(group, cc, snapshot=True)
    for pid in sorted(firm.periods):
        firm.put_period(group, pid, snapshot=True)
    for customer in firm.customers.values():
        firm.put_customer(group, customer, snapshot=True)
    people = list(firm.workers.values())
    for worker in people:
        for rate in worker.rates:
            firm.put_rate(group, worker, rate, snapshot=True)
    for worker in people:
        firm.put_employee(group, worker, snapshot=True)
    for project in firm.projects.values():
        firm.put_erp_project(group, project, snapshot=True)
    for project in firm.projects.values():
        firm.put_project(group, project, snapshot=True)
    for sow_id in firm.sows:
        firm.put_sow(group, sow_id, snapshot=True)
    for worker in people:
        firm.put_worker(group, worker, snapshot=True)
    for assignment in firm.assignments.values():
        firm.put_assignment(group, assignment, snapshot=True)
    for entry in _last_week(firm, today):
        firm.put_entry(group, entry, snapshot=True)
    mark_snapshot_ends(group)
    return group


def _veteran(firm: Firm, legal_entity: str, today: dt.date) -> Worker:
    hired = today - dt.timedelta(days=firm.rng.randint(90, 2500))
    return make_worker(firm, legal_entity, hired)


def _rate_history(firm: Firm, worker: Worker, today: dt.date) -> None:
    """An ERP employee and contiguous cost rates since hire (a raise for those here > 1 year)."""
    provision(firm, worker)
    if (today - worker.hire_date).days > 365:
        raised = today - dt.timedelta(days=firm.rng.randint(30, 300))
        first = worker.rates[-1]
        first.end = raised - DAY
        amount = (first.amount * Decimal(firm.rng.randint(104, 110)) / 100).quantize(CENT)
        worker.rates.append(Rate(firm.next_id("R"), raised, None, amount))


def _staff(firm: Firm, today: dt.date) -> None:
    """Most workers are on a project of their entity; bill rates well above today's cost."""
    for _, worker in sorted(firm.workers.items()):
        if worker.job_profile == DIRECTOR or worker.status != "ACTIVE":
            continue
        projects = [
            p
            for p in firm.projects.values()
            if p.legal_entity == worker.legal_entity and p.end_date > today
        ]
        rate = worker.rate_on(today)
        if not projects or rate is None or firm.rng.random() > STAFFED_SHARE:
            continue
        project = firm.rng.choice(projects)
        began = max(project.start_date, worker.hire_date, today - dt.timedelta(days=60))
        bill = firm.bill_rate(rate.amount)
        assignment = new_assignment(firm, worker, project.project_id, began, bill)
        ends = today + dt.timedelta(days=firm.rng.randint(14, 90))
        assignment.end_date = min(project.end_date, ends)


def _last_week(firm: Firm, today: dt.date) -> list[Entry]:
    """Last week's time (SUBMITTED) and this week's so far (DRAFT), for staffed workers."""
    monday = today - dt.timedelta(days=today.weekday())
    out = []
    day = monday - dt.timedelta(days=7)
    while day < today:
        for _, worker in sorted(firm.workers.items()) if weekday(day) else ():
            if worker.status != "ACTIVE" or worker.job_profile == DIRECTOR:
                continue
            booked = [
                a
                for _, a in sorted(firm.assignments.items())
                if a.worker_id == worker.worker_id and a.covers(day)
            ]
            if booked:
                entry = new_entry(firm, worker, booked[0], day)
                entry.status = "SUBMITTED" if day < monday else "DRAFT"
                out.append(entry)
        day += DAY
    return out
