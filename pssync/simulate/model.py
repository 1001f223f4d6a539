"""The simulated firm: its legal entities, people, customers, projects and time, as state.

`Firm` holds what the four platforms hold, plus what only the simulator knows
(which entity carries a fault, who is frozen). Its `put_*` methods commit a row
to the source databases through the `ChangeLog`; `time_failures` is the
oracle: the contract's posting conditions for an approved time entry, checked
against the sources' state, so the truth says what the worker should do.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final

from pssync.simulate.faults import Faults
from pssync.simulate.feed import ChangeLog, Group
from pssync.simulate.truth import iso

DEFAULT_START: Final = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)
CENT: Final = Decimal("0.01")
DAY: Final = dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class LegalEntity:
    code: str
    currency: str
    tax_profile: str
    rate_factor: Decimal  # local cost rates relative to the US's
    hiring_weight: int
    domain: str
    cost_centers: tuple[str, ...]  # active in the ERP
    legacy_cost_center: str  # inactive in the ERP: a closed practice


ENTITIES: Final[dict[str, LegalEntity]] = {
    le.code: le
    for le in (
        LegalEntity(
            "LE-US",
            "USD",
            "US-SALES-TAX",
            Decimal("1.00"),
            5,
            "us.meridian-advisory.com",
            ("CC-US-100", "CC-US-200", "CC-US-300"),
            "CC-US-900",
        ),
        LegalEntity(
            "LE-UK",
            "GBP",
            "UK-VAT-STANDARD",
            Decimal("0.80"),
            3,
            "uk.meridian-advisory.com",
            ("CC-UK-100", "CC-UK-200"),
            "CC-UK-900",
        ),
        LegalEntity(
            "LE-DE",
            "EUR",
            "DE-UST-19",
            Decimal("0.92"),
            2,
            "de.meridian-advisory.com",
            ("CC-DE-100", "CC-DE-200"),
            "CC-DE-900",
        ),
    )
}
# job profile -> (US cost rate per hour, hiring weight)
PROFILES: Final[dict[str, tuple[Decimal, int]]] = {
    "Analyst": (Decimal("48"), 4),
    "Consultant": (Decimal("62"), 6),
    "Senior Consultant": (Decimal("78"), 5),
    "Data Engineer": (Decimal("72"), 3),
    "Project Manager": (Decimal("88"), 2),
    "Manager": (Decimal("95"), 2),
    "Solution Architect": (Decimal("105"), 2),
    "Senior Manager": (Decimal("115"), 1),
    "Principal": (Decimal("140"), 1),
}
DIRECTOR: Final = "Practice Director"
TEMPLATES: Final[dict[str, str]] = {
    "TM-ADVISORY": "TIME_AND_MATERIALS",
    "TM-DATA-PLATFORM": "TIME_AND_MATERIALS",
    "TM-CLOUD-MIGRATION": "TIME_AND_MATERIALS",
    "FF-IMPLEMENTATION": "FIXED_FEE",
    "FF-ASSESSMENT": "FIXED_FEE",
}


def money(value: Decimal) -> str:
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


def weekday(day: dt.date) -> bool:
    return day.weekday() < 5


def month_of(day: dt.date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def period_id(legal_entity: str, day: dt.date) -> str:
    return f"{legal_entity}:{month_of(day)}"


@dataclass(frozen=True, slots=True)
class SimConfig:
    seed: int = 7
    start: dt.datetime = DEFAULT_START
    workers: int = 30
    customers: int = 6
    fault_rates: Mapping[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Rate:
    rate_id: str
    start: dt.date
    end: dt.date | None
    amount: Decimal


@dataclass(slots=True)
class Worker:
    worker_id: str
    full_name: str
    email: str
    legal_entity: str
    cost_center: str
    job_profile: str
    hire_date: dt.date
    manager_id: str | None
    status: str = "ACTIVE"
    termination_date: dt.date | None = None
    erp_employee_id: str | None = None
    erp_active: bool = True
    erp_cost_center: str | None = None
    rates: list[Rate] = field(default_factory=list)
    leave_until: dt.date | None = None
    used: str | None = None  # the fault it carries: never picked for another
    frozen: bool = False  # no staffing, no time
    in_hr: bool = True  # False: HR never sends it (an orphan ERP employee)

    def employed_on(self, day: dt.date) -> bool:
        ended = self.termination_date is not None and day > self.termination_date
        return self.hire_date <= day and not ended

    def rate_on(self, day: dt.date) -> Rate | None:
        for rate in self.rates:
            if rate.start <= day and (rate.end is None or day <= rate.end):
                return rate
        return None

    @property
    def free(self) -> bool:
        """Free for random events and faults: active, at work, no fault, not a director."""
        return (
            self.status == "ACTIVE"
            and self.used is None
            and not self.frozen
            and self.job_profile != DIRECTOR
            and self.erp_employee_id is not None
        )


@dataclass(slots=True)
class Customer:
    customer_id: str
    crm_account_id: str
    name: str
    legal_entity: str
    currency: str
    status: str
    tax_profile: str | None
    dedicated: bool = False  # created for one faulty project only


@dataclass(slots=True)
class Project:
    project_id: str
    sow_id: str
    customer_id: str
    crm_account_id: str
    name: str
    legal_entity: str
    currency: str
    billing_type: str
    start_date: dt.date
    end_date: dt.date
    status: str = "PLANNED"
    erp_project_id: str | None = None
    erp_status: str | None = None
    frozen: bool = False  # no staffing, no time
    used: str | None = None
    gate_failed: list[str] = field(default_factory=list)  # planned PROJECT_GATE_FAILED checks

    @property
    def bookable(self) -> bool:
        return (
            self.status == "ACTIVE"
            and self.erp_status == "ACTIVE"
            and not self.frozen
            and self.used is None
        )


@dataclass(slots=True)
class Assignment:
    assignment_id: str
    project_id: str
    worker_id: str
    role: str
    start_date: dt.date
    end_date: dt.date
    allocation_pct: int
    bill_rate: Decimal
    status: str = "CONFIRMED"
    frozen: bool = False

    def covers(self, day: dt.date) -> bool:
        return self.status == "CONFIRMED" and self.start_date <= day <= self.end_date


@dataclass(slots=True)
class Entry:
    time_entry_id: str
    worker_id: str
    project_id: str
    assignment_id: str | None
    work_date: dt.date
    hours: Decimal
    billable: bool
    status: str = "DRAFT"
    approved_at: str | None = None


class Firm:
    """The platforms' state and the simulator's knowledge of it."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(f"{config.seed}:firm")
        start_ms = int(config.start.timestamp() * 1000)
        self.log = ChangeLog(config.seed, start_ms)
        self.faults = Faults(config.seed, config.fault_rates)
        self.cost_centers: dict[str, tuple[str, bool]] = {}
        self.periods: dict[str, str] = {}
        self.workers: dict[str, Worker] = {}
        self.directors: dict[str, str] = {}
        self.customers: dict[str, Customer] = {}
        self.sows: dict[str, dict[str, Any]] = {}
        self.projects: dict[str, Project] = {}
        self.assignments: dict[str, Assignment] = {}
        self.entries: dict[str, Entry] = {}
        self.stats: Counter[str] = Counter()
        # projects an unposted faulty entry books to: never edited again, so its facts hold
        self.pinned_projects: set[str] = set()
        # (due day, worker_id, assignment_id, work_date): a leaver's late timesheet
        self.after_termination: list[tuple[dt.date, str, str, dt.date]] = []
        self._ids = {"W": 1000, "E": 20000, "R": 50000, "C": 1000, "ACC": 5000}
        self._ids |= {"SOW": 7000, "P": 3000, "EP": 8000, "A": 60000, "T": 1_000_000, "X": 9000}

    # -- ids and helpers --------------------------------------------------
    def next_id(self, prefix: str) -> str:
        self._ids[prefix] += 1
        return f"{prefix}-{self._ids[prefix]}"

    def ghost_project_id(self) -> str:
        """A project id no platform will ever send."""
        self._ids["X"] += 1
        return f"P-{self._ids['X']}"

    def at(self, day: dt.date, hhmm: str, jitter_min: int = 20) -> int:
        hours, minutes = (int(x) for x in hhmm.split(":"))
        moment = dt.datetime(day.year, day.month, day.day, hours, minutes, tzinfo=dt.UTC)
        return int(moment.timestamp() * 1000) + self.rng.randint(0, jitter_min * 60_000)

    def begin(self, label: str, at_ms: int) -> Group:
        return self.log.begin(label, at_ms)

    def close(self, group: Group) -> Group:
        self.faults.transport(group, self.log.correlation())
        return group

    def cost_rate(self, profile: str, legal_entity: str) -> Decimal:
        base = PROFILES[profile][0] if profile in PROFILES else Decimal("160")
        jitter = Decimal(self.rng.randint(92, 108)) / 100
        return (base * ENTITIES[legal_entity].rate_factor * jitter).quantize(CENT)

    def bill_rate(self, cost: Decimal) -> Decimal:
        """Well above cost (x1.7 to x2.3), rounded to 5."""
        raw = cost * Decimal(self.rng.randint(170, 230)) / 100
        return (raw / 5).quantize(Decimal(1), rounding=ROUND_HALF_UP) * 5

    # -- the oracle -------------------------------------------------------
    def time_failures(self, entry: Entry) -> list[str]:
        """The contract's posting conditions an approved entry fails (empty: POST_TIME_ENTRY)."""
        failures = []
        worker = self.workers.get(entry.worker_id)
        project = self.projects.get(entry.project_id)
        day = entry.work_date
        if worker is None or not worker.in_hr:
            failures.append("worker_unknown")
        elif not worker.employed_on(day):
            failures.append("worker_not_employed")
        if worker is None or worker.erp_employee_id is None:
            failures.append("no_erp_employee")
        if project is None or project.erp_status is None:
            failures.append("no_erp_project")
        elif project.erp_status != "ACTIVE":
            failures.append("erp_project_not_active")
        if project is not None and self.periods.get(period_id(project.legal_entity, day)) != "OPEN":
            failures.append("period_not_open")
        if worker is not None and worker.rate_on(day) is None:
            failures.append("no_cost_rate")
        return failures

    def bookable_assignments(self, worker: Worker, day: dt.date) -> list[Assignment]:
        return [
            a
            for a in self.assignments.values()
            if a.worker_id == worker.worker_id
            and a.covers(day)
            and not a.frozen
            and self.projects[a.project_id].bookable
        ]

    def staffable_projects(self, legal_entity: str, day: dt.date) -> list[Project]:
        soon = day + dt.timedelta(days=10)
        return [
            p
            for p in self.projects.values()
            if p.legal_entity == legal_entity and p.bookable and p.end_date >= soon
        ]

    def entries_of(self, worker_id: str, *statuses: str) -> list[Entry]:
        return [
            e for e in self.entries.values() if e.worker_id == worker_id and e.status in statuses
        ]

    def entry_frozen(self, entry: Entry) -> bool:
        """Time on a frozen project or assignment is never approved (it would not post)."""
        project = self.projects.get(entry.project_id)
        assignment = self.assignments.get(entry.assignment_id or "")
        return (
            project is None
            or not project.bookable
            or (assignment is not None and assignment.frozen)
        )

    # -- committing rows ----------------------------------------------------
    def put_cost_center(self, group: Group, cc: str, snapshot: bool = False) -> None:
        legal_entity, active = self.cost_centers[cc]
        row = {"cost_center_id": cc, "legal_entity": legal_entity, "is_active": active}
        self.log.put(group, "cdc.erp.cost_center", row, snapshot)

    def put_period(self, group: Group, pid: str, snapshot: bool = False) -> None:
        legal_entity, month = pid.split(":")
        row = {"period_id": pid, "legal_entity": legal_entity, "period": month}
        self.log.put(group, "cdc.erp.period", row | {"status": self.periods[pid]}, snapshot)

    def put_customer(self, group: Group, c: Customer, snapshot: bool = False) -> None:
        row = {
            "customer_id": c.customer_id,
            "crm_account_id": c.crm_account_id,
            "name": c.name,
            "status": c.status,
            "legal_entity": c.legal_entity,
            "tax_profile": c.tax_profile,
            "currency": c.currency,
        }
        self.log.put(group, "cdc.erp.customer", row, snapshot)

    def put_rate(self, group: Group, w: Worker, rate: Rate, snapshot: bool = False) -> None:
        row = {
            "rate_id": rate.rate_id,
            "worker_id": w.worker_id,
            "effective_from": rate.start.isoformat(),
            "effective_to": rate.end.isoformat() if rate.end else None,
            "rate": money(rate.amount),
            "currency": ENTITIES[w.legal_entity].currency,
        }
        self.log.put(group, "cdc.erp.cost_rate", row, snapshot)

    def put_employee(self, group: Group, w: Worker, snapshot: bool = False) -> None:
        row = {
            "erp_employee_id": w.erp_employee_id,
            "worker_id": w.worker_id,
            "is_active": w.erp_active,
            "cost_center": w.erp_cost_center,
            "legal_entity": w.legal_entity,
        }
        self.log.put(group, "cdc.erp.employee", row, snapshot)

    def put_worker(self, group: Group, w: Worker, snapshot: bool = False) -> None:
        row = {
            "worker_id": w.worker_id,
            "full_name": w.full_name,
            "email": w.email,
            "employment_status": w.status,
            "hire_date": w.hire_date.isoformat(),
            "termination_date": w.termination_date.isoformat() if w.termination_date else None,
            "cost_center": w.cost_center,
            "legal_entity": w.legal_entity,
            "manager_id": w.manager_id,
            "job_profile": w.job_profile,
        }
        self.log.put(group, "cdc.hr.worker", row, snapshot)

    def put_sow(self, group: Group, sow_id: str, snapshot: bool = False) -> None:
        self.log.put(group, "cdc.crm.sow", self.sows[sow_id], snapshot)

    def put_project(self, group: Group, p: Project, snapshot: bool = False) -> None:
        row = {
            "project_id": p.project_id,
            "sow_id": p.sow_id,
            "crm_account_id": p.crm_account_id,
            "name": p.name,
            "legal_entity": p.legal_entity,
            "currency": p.currency,
            "status": p.status,
            "billing_type": p.billing_type,
            "start_date": p.start_date.isoformat(),
            "end_date": p.end_date.isoformat(),
        }
        self.log.put(group, "cdc.psa.project", row, snapshot)

    def put_erp_project(self, group: Group, p: Project, snapshot: bool = False) -> None:
        row = {
            "erp_project_id": p.erp_project_id,
            "project_id": p.project_id,
            "customer_id": p.customer_id,
            "legal_entity": p.legal_entity,
            "currency": p.currency,
            "status": p.erp_status,
        }
        self.log.put(group, "cdc.erp.project", row, snapshot)

    def put_assignment(self, group: Group, a: Assignment, snapshot: bool = False) -> None:
        row = {
            "assignment_id": a.assignment_id,
            "project_id": a.project_id,
            "worker_id": a.worker_id,
            "role": a.role,
            "start_date": a.start_date.isoformat(),
            "end_date": a.end_date.isoformat(),
            "allocation_pct": a.allocation_pct,
            "bill_rate": money(a.bill_rate),
            "status": a.status,
        }
        self.log.put(group, "cdc.psa.assignment", row, snapshot)

    def put_entry(self, group: Group, e: Entry, snapshot: bool = False) -> None:
        if e.status == "APPROVED" and e.approved_at is None:
            e.approved_at = iso(self.log.now_ms)
        row = {
            "time_entry_id": e.time_entry_id,
            "worker_id": e.worker_id,
            "project_id": e.project_id,
            "assignment_id": e.assignment_id,
            "work_date": e.work_date.isoformat(),
            "hours": money(e.hours),
            "billable": e.billable,
            "status": e.status,
            "approved_at": e.approved_at,
        }
        self.log.put(group, "cdc.psa.time_entry", row, snapshot)
