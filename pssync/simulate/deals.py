"""Client work: deals signed in the CRM, projects set up in the PSA and the ERP, staffing,
and the ERP's edits to projects.

Clean order: the ERP customer is APPROVED (with a tax profile, in the entity's
currency) before its SOW is signed; the PSA project (PLANNED) is set up from
the DRAFT SOW just before the SOW is SIGNED, so no signed SOW is ever seen
without its project; on the start date the ERP project is created ACTIVE just
before the PSA project goes ACTIVE.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Final

from pssync.simulate.feed import Group
from pssync.simulate.model import (
    CENT,
    DIRECTOR,
    ENTITIES,
    TEMPLATES,
    Customer,
    Firm,
    Project,
    money,
    weekday,
)
from pssync.simulate.names import CUSTOMER_NAMES
from pssync.simulate.people import new_assignment, pick_entity
from pssync.simulate.truth import iso

GATE_CHECKS: Final = ("customer_not_approved", "customer_without_tax_profile", "currency_mismatch")
NEW_CUSTOMER_SHARE: Final = 0.3
STAFFING_SHARE: Final = 0.5  # chance a benched worker is staffed on a given morning


def new_customer(firm: Firm, legal_entity: str, dedicated: bool = False) -> Customer:
    entity = ENTITIES[legal_entity]
    used = {c.name for c in firm.customers.values()}
    names = [n for n in CUSTOMER_NAMES if n not in used] or list(CUSTOMER_NAMES)
    name = firm.rng.choice(names)
    if name in used:
        name = f"{name} {legal_entity[3:]}"
    customer = Customer(
        firm.next_id("C"),
        firm.next_id("ACC"),
        name,
        legal_entity,
        entity.currency,
        "APPROVED",
        entity.tax_profile,
        dedicated,
    )
    firm.customers[customer.customer_id] = customer
    return customer


def new_project(
    firm: Firm, customer: Customer, sow_id: str, template: str, start: dt.date
) -> Project:
    label = template.split("-", 1)[1].replace("-", " ").title()
    end = start + dt.timedelta(days=firm.rng.randint(60, 180))
    project = Project(
        firm.next_id("P"),
        sow_id,
        customer.customer_id,
        customer.crm_account_id,
        f"{customer.name} {label}",
        customer.legal_entity,
        ENTITIES[customer.legal_entity].currency,
        TEMPLATES[template],
        start,
        end,
    )
    firm.projects[project.project_id] = project
    return project


def new_sow(firm: Firm, customer: Customer, template: str, signed_ms: int | None) -> str:
    sow_id = firm.next_id("SOW")
    value = Decimal(firm.rng.randint(60, 900)) * 1000
    firm.sows[sow_id] = {
        "sow_id": sow_id,
        "crm_account_id": customer.crm_account_id,
        "legal_entity": customer.legal_entity,
        "currency": ENTITIES[customer.legal_entity].currency,
        "project_template": template,
        "status": "SIGNED" if signed_ms is not None else "DRAFT",
        "signed_at": iso(signed_ms) if signed_ms is not None else None,
        "total_value": money(value),
    }
    return sow_id


def deal(firm: Firm, day: dt.date, at_ms: int) -> Iterator[Group]:
    """A deal: customer (new or known), SOW DRAFT, PSA project PLANNED, SOW SIGNED."""
    rng = firm.rng
    fault = firm.faults.pick("SOW_SIGNED_WITHOUT_PROJECT", "PROJECT_GATE_FAILED")
    legal_entity = pick_entity(rng)
    group = firm.begin("deal signed", at_ms)
    known = [
        c
        for _, c in sorted(firm.customers.items())
        if c.legal_entity == legal_entity and c.status == "APPROVED" and not c.dedicated
    ]
    check = None
    if fault == "PROJECT_GATE_FAILED":
        check = rng.choice(GATE_CHECKS)
        customer = new_customer(firm, legal_entity, dedicated=True)
        _onboard(firm, group, customer, check)
    elif known and rng.random() > NEW_CUSTOMER_SHARE:
        customer = rng.choice(known)
    else:
        customer = new_customer(firm, legal_entity)
        _onboard(firm, group, customer, None)
    template = rng.choice(list(TEMPLATES))
    sow_id = new_sow(firm, customer, template, None)
    firm.put_sow(group, sow_id)
    if fault != "SOW_SIGNED_WITHOUT_PROJECT":  # set up from the draft, before signature
        start = day + dt.timedelta(days=rng.randint(3, 9))
        while not weekday(start):
            start += dt.timedelta(days=1)
        project = new_project(firm, customer, sow_id, template, start)
        if check is not None:
            project.gate_failed, project.used = [check], "PROJECT_GATE_FAILED"
        firm.put_project(group, project)
    firm.sows[sow_id] |= {"status": "SIGNED", "signed_at": iso(firm.log.now_ms)}
    firm.put_sow(group, sow_id)
    if fault == "SOW_SIGNED_WITHOUT_PROJECT":
        firm.faults.record(group, fault, sow_id, crm_account_id=customer.crm_account_id)
    yield firm.close(group)


def _onboard(firm: Firm, group: Group, customer: Customer, failing: str | None) -> None:
    """The ERP onboards a customer: PENDING_APPROVAL, then (unless a gate fault) APPROVED."""
    entity = ENTITIES[customer.legal_entity]
    customer.status, customer.tax_profile = "PENDING_APPROVAL", None
    firm.put_customer(group, customer)
    if failing == "customer_not_approved":
        customer.tax_profile = entity.tax_profile
        firm.put_customer(group, customer)
        return
    customer.status = "APPROVED"
    customer.tax_profile = None if failing == "customer_without_tax_profile" else entity.tax_profile
    if failing == "currency_mismatch":
        others = sorted({e.currency for e in ENTITIES.values()} - {entity.currency})
        customer.currency = firm.rng.choice(others)
    firm.put_customer(group, customer)


def activations(firm: Firm, day: dt.date, at_ms: int) -> Iterator[Group]:
    """Projects due to start go ACTIVE: ERP project first, then PSA."""
    due = [p for _, p in sorted(firm.projects.items()) if p.status == "PLANNED"]
    for project in (p for p in due if p.start_date <= day):
        group = firm.begin("project activated", at_ms)
        if project.gate_failed:
            project.status, project.frozen = "ACTIVE", True
            firm.put_project(group, project)
            customer = firm.customers[project.customer_id]
            firm.faults.record(
                group,
                "PROJECT_GATE_FAILED",
                project.project_id,
                failed_checks=project.gate_failed,
                customer_id=customer.customer_id,
                crm_account_id=customer.crm_account_id,
                customer_status=customer.status,
                tax_profile=customer.tax_profile,
                customer_currency=customer.currency,
                project_currency=project.currency,
            )
        elif fault := firm.faults.pick("PROJECT_MISSING_IN_ERP"):
            project.status, project.frozen, project.used = "ACTIVE", True, fault
            firm.put_project(group, project)
            firm.faults.record(group, fault, project.project_id, customer_id=project.customer_id)
        else:
            project.erp_project_id, project.erp_status = firm.next_id("EP"), "ACTIVE"
            firm.put_erp_project(group, project)
            project.status = "ACTIVE"
            firm.put_project(group, project)
        yield firm.close(group)


def staffing(firm: Firm, day: dt.date, at_ms: int) -> Iterator[Group]:
    """Benched workers are staffed on a project of their entity, billed well above cost."""
    rng = firm.rng
    for _, worker in sorted(firm.workers.items()):
        if (
            not worker.in_hr
            or worker.status != "ACTIVE"
            or worker.frozen
            or worker.job_profile == DIRECTOR
            or worker.erp_employee_id is None
            or firm.bookable_assignments(worker, day)
            or any(
                a.worker_id == worker.worker_id and a.status == "CONFIRMED" and a.start_date > day
                for a in firm.assignments.values()
            )
        ):
            continue
        cost = worker.rate_on(day)
        projects = firm.staffable_projects(worker.legal_entity, day)
        if cost is None or not projects or rng.random() > STAFFING_SHARE:
            continue
        project = rng.choice(projects)
        fault = firm.faults.pick("ASSIGNMENT_RATE_BELOW_COST" if worker.used is None else None)
        bill = (cost.amount * Decimal("0.85")).quantize(CENT) if fault else None
        group = firm.begin("assignment", at_ms)
        assignment = new_assignment(
            firm, worker, project.project_id, day, bill or firm.bill_rate(cost.amount)
        )
        firm.put_assignment(group, assignment)
        if fault:
            assignment.frozen, worker.used = True, fault
            firm.faults.record(
                group,
                fault,
                assignment.assignment_id,
                worker_id=worker.worker_id,
                bill_rate=money(assignment.bill_rate),
                cost_rate=money(cost.amount),
                rate_id=cost.rate_id,
                start_date=day.isoformat(),
            )
        yield firm.close(group)


def erp_project_edit(firm: Firm, day: dt.date, at_ms: int) -> Iterator[Group]:
    """Finance touches an ERP project; a fault closes it while the PSA delivers."""
    candidates = [
        p
        for _, p in sorted(firm.projects.items())
        if p.bookable and p.project_id not in firm.pinned_projects
    ]
    if not candidates:
        return
    project = firm.rng.choice(candidates)
    fault = firm.faults.pick("PROJECT_FIELD_DRIFT")
    group = firm.begin("ERP project edit", at_ms)
    if fault:
        project.erp_status, project.frozen, project.used = "CLOSED", True, fault
    firm.put_erp_project(group, project)
    if fault:
        firm.faults.record(
            group,
            fault,
            project.project_id,
            field="status",
            psa="ACTIVE",
            erp="CLOSED",
            erp_project_id=project.erp_project_id,
        )
    yield firm.close(group)
