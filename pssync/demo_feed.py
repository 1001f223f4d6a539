"""The demo's data: a seeded consulting firm as its HR and ERP databases hold it, with drift.

`DemoFirm` is the two source databases. Each change made to them returns the
`pssync produce` JSON line a Debezium PostgreSQL connector would capture (the
envelope with before/after/op/ts_ms/source, `lsn` increasing per source
database). `snapshot` is the initial load with a case of every worker rule
planted in it, `script` the timed story events, `next_event` the live stream,
and `apply_command` what the ERP does with an `erp.cmd.employee` command;
`ErpSink` plays the ERP applying each command once, in order, a moment later.
The same seed gives the same firm and the same draws.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pssync.avro.jsonform import format_instant

Record = dict[str, Any]

MIN_WORKERS = 12
SINK_DELAY_S = (1.0, 3.0)  # how long the simulated ERP takes to apply a command
# legal entity -> e-mail domain, and how many of every ten hires it gets
LEGAL_ENTITIES = {"ACME-US": "acme-consulting.com", "ACME-UK": "acme.co.uk", "ACME-DE": "acme.de"}
HIRING_WEIGHTS = (5, 3, 2)
# the ERP's cost centers at snapshot time; the legal entity is in the id (CC-US-* is ACME-US)
COST_CENTERS = "CC-US-100 CC-US-110 CC-US-200 CC-US-900 CC-UK-100 CC-UK-200 CC-DE-100 CC-DE-200"
INACTIVE_CC = "CC-US-900"  # the closed legacy practice
LATE_CC = "CC-UK-300"  # created in the ERP while a worker waits for it (parked)
OVERDUE_CC = "CC-DE-300"  # created only after the dependency timeout
FIRST_NAMES = (
    "Amara Ben Chloé Dmitri Elena Farid Grace Hiroshi Ines Jonas Kavya Liam Maya Noah Olga "
    "Pedro Quinn Rosa Sven Tara Uma Victor Wen Ximena Yusuf Zoe Aiden Bea Carlos Dana"
)
LAST_NAMES = (
    "Okafor Schmidt Dubois Ivanov Rossi Haddad Hopper Tanaka García Berg Iyer Murphy Cohen "
    "Williams Novak Silva Fischer Moreau Lindqvist Kaur Nakamura Adeyemi Chen López Demir Walsh"
)
# job profile -> the next step up (a promotion); repeated ones are hired more often
CAREER = {
    "Analyst": "Consultant",
    "Consultant": "Senior Consultant",
    "Senior Consultant": "Manager",
    "Data Engineer": "Solution Architect",
    "Solution Architect": "Principal",
    "Project Manager": "Senior Manager",
    "Manager": "Senior Manager",
    "Senior Manager": "Principal",
}
HIRED_AS = [*CAREER, "Consultant", "Senior Consultant"]
# table -> (source database, key field)
TABLES = {
    "worker": ("hr", "worker_id"),
    "employee": ("erp", "erp_employee_id"),
    "cost_center": ("erp", "cost_center_id"),
}
# planted cases: role -> what the demo should show for it
PLANTED = {
    "missing_in_erp": "no ERP employee: WORKER_MISSING_IN_ERP + UPSERT_EMPLOYEE",
    "cost_center_drift": "ERP has another cost center: WORKER_FIELD_DRIFT + UPSERT",
    "legal_entity_drift": "ERP has another legal entity: WORKER_FIELD_DRIFT + UPSERT",
    "terminated_active_in_erp": "TERMINATED in HR, active in the ERP: "
    "TERMINATED_WORKER_ACTIVE_IN_ERP + DEACTIVATE_EMPLOYEE",
    "invalid_cost_center": f"cost center {INACTIVE_CC} is inactive: WORKER_INVALID_COST_CENTER "
    "(stays open for an operator)",
    "late_cost_center": f"cost center {LATE_CC} not in the ERP yet: parked, synced when it "
    "arrives (+{late:.0f}s)",
    "overdue_cost_center": f"cost center {OVERDUE_CC} arrives at +{{overdue:.0f}}s: "
    "DEPENDENCY_TIMEOUT at ~+{timeout:.0f}s, then resolved",
    "orphans": "active ERP employees HR does not know: ERP_EMPLOYEE_WITHOUT_HR_WORKER after "
    "{grace:.0f}s (HR back-fills W-9001 at +{backfill:.0f}s)",
}
NO_ERP_EMPLOYEE = {"missing_in_erp", "invalid_cost_center", "late_cost_center"}
NO_ERP_EMPLOYEE |= {"overdue_cost_center"}


def entity_of(cost_center: str) -> str:
    return "ACME-" + cost_center.split("-")[1]


def iso_ms(ms: int) -> str:
    return format_instant(dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC))


@dataclass(frozen=True, slots=True)
class Event:
    """Changes made at the sources, with a one-line description."""

    kind: str
    text: str
    lines: list[str]


@dataclass(frozen=True, slots=True)
class Scripted:
    """A story event due `at_s` seconds after the snapshot."""

    at_s: float
    tag: str
    make: Callable[[], Event]


def _now_ms() -> int:
    return int(time.time() * 1000)


class DemoFirm:
    """The HR and ERP databases of the demo firm; every change returns its CDC lines."""

    def __init__(self, seed: int, workers: int, clock_ms: Callable[[], int] = _now_ms) -> None:
        if workers < MIN_WORKERS:
            raise ValueError(f"--workers {workers}: the demo needs at least {MIN_WORKERS}")
        self.rng = random.Random(seed)
        self._infra = random.Random(seed ^ 0x5EED)  # lsn steps, apart from the story's draws
        self._clock, self.size = clock_ms, workers
        self.tables: dict[str, dict[str, Record]] = {t: {} for t in TABLES}
        self.hr, self.erp = self.tables["worker"], self.tables["employee"]
        self.cost_centers = self.tables["cost_center"]
        # Postgres-like log positions: increasing per source database, and across runs
        self._lsn = {"hr": clock_ms() * 1000, "erp": clock_ms() * 1000}
        self._tx = {"hr": 7000, "erp": 91000}
        self._next = {"worker": 1001, "employee": 20001}
        self.directors: dict[str, str] = {}  # legal entity -> worker_id
        self.roles: dict[str, str] = {}  # worker_id -> planted role
        self.reserved: set[str] = set()  # workers whose story is scripted

    # -- CDC lines ----------------------------------------------------------
    def _line(
        self,
        table: str,
        op: str,
        before: Record | None,
        after: Record | None,
        correlation: str = "",
    ) -> str:
        """A change of one row as Debezium captures it (`op` "r" is a snapshot read)."""
        db, key_field = TABLES[table]
        self._lsn[db] += self._infra.randint(48, 4096)
        self._tx[db] += 1
        now = self._clock()
        source = {"version": "2.7.3.Final", "connector": "postgresql", "name": db, "ts_ms": now}
        source |= {"snapshot": "true" if op == "r" else "false", "db": f"{db}db", "schema": db}
        source |= {"table": table, "txId": self._tx[db], "lsn": self._lsn[db]}
        value: Record = {"before": before, "after": after, "op": op, "source": source}
        value["ts_ms"] = now + self._infra.randint(5, 80)
        key = {key_field: (after or before or {})[key_field]}
        line = {"topic": f"cdc.{db}.{table}", "key": key, "value": value}
        if correlation:  # the produce path adds a fresh one where there is none
            line["headers"] = {"correlation_id": correlation}
        return json.dumps(line)

    def _put(self, table: str, after: Record, snapshot: bool = False, correlation: str = "") -> str:
        rows = self.tables[table]
        key = after[TABLES[table][1]]
        before = rows.get(key)
        if "updated_at" in after:
            after["updated_at"] = iso_ms(self._clock())
        rows[key] = after
        if snapshot:
            return self._line(table, "r", None, after)
        return self._line(table, "c" if before is None else "u", before, after, correlation)

    # -- records ------------------------------------------------------------
    def _day(self, days_from_today: int = 0) -> str:
        today = dt.datetime.fromtimestamp(self._clock() / 1000, tz=dt.UTC).date()
        return (today + dt.timedelta(days=days_from_today)).isoformat()

    def active_centers(self, legal_entity: str) -> list[str]:
        rows = [r for r in self.cost_centers.values() if r["legal_entity"] == legal_entity]
        return sorted(r["cost_center_id"] for r in rows if r["is_active"])

    def _some_center(self, legal_entity: str, but: str | None = None) -> str:
        return self.rng.choice([c for c in self.active_centers(legal_entity) if c != but])

    def _worker(self, cost_center: str, status: str = "ACTIVE", **fields: Any) -> Record:
        worker_id = f"W-{self._next['worker']}"
        self._next["worker"] += 1
        first, last = self.rng.choice(FIRST_NAMES.split()), self.rng.choice(LAST_NAMES.split())
        legal_entity = entity_of(cost_center)
        local = f"{first}.{last}".lower().translate(str.maketrans("éíó", "eio"))
        ago = self.rng.randint(40, 3200)
        terminated = self._day(-self.rng.randint(2, 30)) if status == "TERMINATED" else None
        return {
            "worker_id": worker_id,
            "full_name": f"{first} {last}",
            "email": f"{local}.{worker_id[2:]}@{LEGAL_ENTITIES[legal_entity]}",
            "employment_status": status,
            "hire_date": self._day(-ago),
            "termination_date": terminated,
            "cost_center": cost_center,
            "legal_entity": legal_entity,
            "manager_id": self.directors.get(legal_entity),
            "job_profile": self.rng.choice(HIRED_AS),
            "updated_at": None,
        } | fields

    def _employee(self, worker: Record, active: bool = True, **fields: Any) -> Record:
        erp_id = f"E-{self._next['employee']}"
        self._next["employee"] += 1
        linked = {k: worker.get(k) for k in ("worker_id", "cost_center", "legal_entity")}
        return (
            {"erp_employee_id": erp_id, "is_active": active, "updated_at": None} | linked | fields
        )

    def linked_employee(self, worker_id: str) -> Record | None:
        return next((e for _, e in sorted(self.erp.items()) if e["worker_id"] == worker_id), None)

    # -- the initial load ---------------------------------------------------
    def snapshot(self) -> tuple[list[str], list[str]]:
        """(ERP lines, HR lines) of the initial load; send the ERP side first."""
        erp_lines = [self._cost_center(cc, cc != INACTIVE_CC, True) for cc in COST_CENTERS.split()]
        workers: list[Record] = []
        employees: list[Record] = []
        for le in LEGAL_ENTITIES:
            director = self._worker(self.active_centers(le)[0], job_profile="Practice Director")
            self.directors[le] = director["worker_id"]
            workers.append(director)
            employees.append(self._employee(director))
        n = self.size
        roles = ["terminated_active_in_erp"] * max(1, n // 20) + ["terminated"]
        roles += ["leave"] * max(1, n // 10) + ["missing_in_erp"] * max(1, n // 12)
        roles += ["cost_center_drift"] * max(1, n // 12) + ["legal_entity_drift"]
        roles += ["invalid_cost_center", "late_cost_center", "overdue_cost_center"]
        roles += ["in_sync"] * (n - len(workers) - len(roles))
        self.rng.shuffle(roles)
        special = {"invalid_cost_center": INACTIVE_CC, "late_cost_center": LATE_CC}
        special["overdue_cost_center"] = OVERDUE_CC
        for role in roles:
            le = self.rng.choices(list(LEGAL_ENTITIES), weights=HIRING_WEIGHTS)[0]
            cc = special.get(role) or self._some_center(le)
            status = "LEAVE" if role == "leave" else "ACTIVE"
            worker = self._worker(cc, "TERMINATED" if "terminated" in role else status)
            workers.append(worker)
            self.roles[worker["worker_id"]] = role
            if role in special:
                self.reserved.add(worker["worker_id"])
            if role in NO_ERP_EMPLOYEE:
                continue
            if role == "cost_center_drift":
                drift = {"cost_center": self._some_center(le, but=cc)}
            elif role == "legal_entity_drift":
                other = self.rng.choice([x for x in LEGAL_ENTITIES if x != le])
                drift = {"legal_entity": other, "cost_center": self._some_center(other)}
            else:
                drift = {}
            employees.append(self._employee(worker, active=role != "terminated", **drift))
        # ERP employees HR does not know: two leavers' logins, a contractor, an old account
        for worker_id, cc, active in (
            ("W-9001", "CC-US-200", True),
            ("W-9002", "CC-DE-200", True),
            (None, "CC-UK-200", True),
            ("W-9003", "CC-US-110", False),
        ):
            orphan = {"worker_id": worker_id, "cost_center": cc, "legal_entity": entity_of(cc)}
            employees.append(self._employee(orphan, active=active))
        self.reserved |= {"W-9001", "W-9002", "W-9003"}
        erp_lines += [self._put("employee", e, snapshot=True) for e in employees]
        return erp_lines, [self._put("worker", w, snapshot=True) for w in workers]

    def planted(self, orphan_grace_s: float, dependency_timeout_s: float) -> list[tuple[str, str]]:
        """(worker ids, what to expect) for each case the snapshot plants."""
        by_role: dict[str, list[str]] = {"orphans": ["W-9001", "W-9002", "1 unlinked"]}
        for worker_id, role in sorted(self.roles.items()):
            by_role.setdefault(role, []).append(worker_id)
        at = {s.tag: s.at_s for s in self.script(orphan_grace_s, dependency_timeout_s)}
        facts = {"late": at[LATE_CC], "overdue": at[OVERDUE_CC], "timeout": dependency_timeout_s}
        facts |= {"grace": orphan_grace_s, "backfill": at["W-9001"]}
        out = [(", ".join(by_role[r]), note.format(**facts)) for r, note in PLANTED.items()]
        quiet = {r: len(by_role.get(r, [])) for r in ("in_sync", "leave", "terminated")}
        others = f"{sum(quiet.values()) + len(LEGAL_ENTITIES)} others"
        note = f"in step (incl. {quiet['leave']} on leave, {quiet['terminated']} terminated)"
        return [*out, (others, note)]

    # -- the story ------------------------------------------------------------
    def script(self, orphan_grace_s: float, dependency_timeout_s: float) -> list[Scripted]:
        """Timed story events, relative to the snapshot."""
        story = [
            Scripted(min(10.0, dependency_timeout_s / 3), LATE_CC, self._late_cost_center),
            Scripted(min(20.0, orphan_grace_s + 5), "invalid", self._bad_record),
            Scripted(orphan_grace_s + 10, "W-9001", self._backfill_orphan),
            Scripted(dependency_timeout_s + 15, OVERDUE_CC, self._overdue_cost_center),
        ]
        return sorted(story, key=lambda s: s.at_s)

    def _cost_center(self, cc: str, active: bool = True, snapshot: bool = False) -> str:
        row = {"cost_center_id": cc, "legal_entity": entity_of(cc), "is_active": active}
        return self._put("cost_center", row, snapshot)

    def _create_cost_center(self, cc: str, note: str) -> Event:
        line = self._cost_center(cc)
        waiting = ", ".join(w for w, r in sorted(self.hr.items()) if r["cost_center"] == cc)
        text = f"ERP creates cost center {cc}, {note}; {waiting} can now be synced"
        return Event("cost center created", text, [line])

    def _late_cost_center(self) -> Event:
        return self._create_cost_center(LATE_CC, "its worker was parked")

    def _overdue_cost_center(self) -> Event:
        return self._create_cost_center(OVERDUE_CC, "after the dependency timeout")

    def _backfill_orphan(self) -> Event:
        employee = next(e for e in self.erp.values() if e["worker_id"] == "W-9001")
        worker = self._worker(employee["cost_center"], worker_id="W-9001")
        text = f"HR back-fills W-9001 ({worker['full_name']}): {employee['erp_employee_id']} "
        return Event("HR back-fill", text + "is no orphan now", [self._put("worker", worker)])

    def _bad_record(self) -> Event:
        worker = self.hr[self.rng.choice(self._regular(("ACTIVE",)))]
        bad = worker | {"employment_status": "CONTRACTOR", "updated_at": iso_ms(self._clock())}
        text = f"HR sends {worker['worker_id']} with employment_status 'CONTRACTOR'"
        text += " (not in the contract): expect one sync.dlq record"
        return Event("invalid record", text, [self._line("worker", "u", worker, bad)])

    # -- the live stream ----------------------------------------------------
    def _regular(self, statuses: tuple[str, ...]) -> list[str]:
        """Workers free for random changes: not scripted, in a status, in an active center."""
        centers = {c for c, r in self.cost_centers.items() if r["is_active"]}
        return sorted(
            w
            for w, r in self.hr.items()
            if w not in self.reserved
            and r["employment_status"] in statuses
            and r["cost_center"] in centers
        )

    def _pick(self, *statuses: str) -> Record | None:
        candidates = self._regular(statuses)
        return dict(self.hr[self.rng.choice(candidates)]) if candidates else None

    def next_event(self) -> Event:
        """One live change at the sources, drawn by weight."""
        makers: dict[Callable[[], Event | None], float] = {
            self._transfer: 3.0,
            self._promotion: 2.0,
            self._leave: 1.5,
            self._hire: 1.5,
            self._termination: 1.0,
            self._erp_edit: 1.5,
        }
        while True:
            event = self.rng.choices(list(makers), weights=list(makers.values()))[0]()
            if event is not None:
                return event

    def _transfer(self) -> Event | None:
        worker = self._pick("ACTIVE")
        if worker is None:
            return None
        old = worker["cost_center"]
        le = worker["legal_entity"]
        if self.rng.random() < 0.2:  # a move to another legal entity
            le = self.rng.choice([x for x in LEGAL_ENTITIES if x != le])
        worker |= {"legal_entity": le, "cost_center": self._some_center(le, but=old)}
        text = f"HR transfers {worker['worker_id']} {old} -> {worker['cost_center']}"
        return Event("transfer", text, [self._put("worker", worker)])

    def _promotion(self) -> Event | None:
        worker = self._pick("ACTIVE", "LEAVE")
        if worker is None or worker["job_profile"] not in CAREER:
            return None
        text = f"HR promotes {worker['worker_id']} {worker['job_profile']}"
        worker["job_profile"] = CAREER[worker["job_profile"]]
        text += f" -> {worker['job_profile']}"
        return Event("promotion", text, [self._put("worker", worker)])

    def _leave(self) -> Event | None:
        worker = self._pick("ACTIVE", "LEAVE")
        if worker is None:
            return None
        back = worker["employment_status"] == "LEAVE"
        worker["employment_status"] = "ACTIVE" if back else "LEAVE"
        text = f"HR: {worker['worker_id']} " + ("returns from leave" if back else "goes on leave")
        return Event("leave", text, [self._put("worker", worker)])

    def _hire(self) -> Event | None:
        le = self.rng.choices(list(LEGAL_ENTITIES), weights=HIRING_WEIGHTS)[0]
        worker = self._worker(self._some_center(le), hire_date=self._day())
        text = f"HR hires {worker['worker_id']} {worker['full_name']}, {worker['job_profile']}"
        return Event("hire", text, [self._put("worker", worker)])

    def _termination(self) -> Event | None:
        worker = self._pick("ACTIVE", "LEAVE")
        staffed = sum(r["employment_status"] != "TERMINATED" for r in self.hr.values())
        if (
            worker is None
            or staffed <= self.size * 0.6
            or worker["job_profile"] == "Practice Director"
        ):
            return None
        worker |= {"employment_status": "TERMINATED", "termination_date": self._day()}
        text = f"HR terminates {worker['worker_id']} {worker['full_name']}"
        return Event("termination", text, [self._put("worker", worker)])

    def _erp_edit(self) -> Event | None:
        """Someone in finance re-codes an employee in the ERP: drift HR must win."""
        in_step = []
        for worker_id in self._regular(("ACTIVE",)):
            employee, worker = self.linked_employee(worker_id), self.hr[worker_id]
            fields = ("cost_center", "legal_entity")
            if employee and employee["is_active"] and all(employee[f] == worker[f] for f in fields):
                in_step.append(employee)
        if not in_step:
            return None
        employee = dict(self.rng.choice(in_step))
        old = employee["cost_center"]
        employee["cost_center"] = self._some_center(employee["legal_entity"], but=old)
        text = f"ERP user re-codes {employee['erp_employee_id']} ({employee['worker_id']})"
        text += f" {old} -> {employee['cost_center']}"
        return Event("ERP edit", text, [self._put("employee", employee)])

    # -- the simulated ERP sink -----------------------------------------------
    def apply_command(self, command: Record, correlation: str = "") -> tuple[str, list[str]]:
        """Apply one `erp.cmd.employee` command in the ERP: (outcome, the ERP's CDC lines).

        The lines carry the command's correlation id, so the chain stays traceable."""
        kind, payload = command["type"], command["payload"]
        erp_id = payload.get("erp_employee_id") or command["entity_id"]
        before = self.erp.get(erp_id)
        if kind == "UPSERT_EMPLOYEE":
            worker_id = payload["worker_id"]
            if not payload.get("erp_employee_id"):  # a new hire: the ERP upserts by worker_id
                linked = self.linked_employee(worker_id)
                erp_id = linked["erp_employee_id"] if linked else f"E-{worker_id}"
                before = self.erp.get(erp_id)
            fields = {k: payload.get(k) for k in ("worker_id", "is_active", "cost_center")}
            after = {"erp_employee_id": erp_id, "legal_entity": payload["legal_entity"]} | fields
            if before is not None and all(before[k] == v for k, v in after.items()):
                return "no-op", []
            outcome = "created" if before is None else "updated"
        elif kind == "DEACTIVATE_EMPLOYEE":
            if before is None or not before["is_active"]:
                return "no-op" if before else "unknown employee", []
            after, outcome = dict(before, is_active=False), "deactivated"
        else:
            return f"unknown type {kind}", []
        return outcome, [self._put("employee", after | {"updated_at": None}, False, correlation)]


class ErpSink:
    """The simulated ERP sink: applies each new command_id once, 1-3 s after it is issued."""

    def __init__(self, firm: DemoFirm, commands_from: dict[int, int], seed: int) -> None:
        self.firm, self.commands_from = firm, commands_from
        self.rng = random.Random(seed + 2)
        self.pending: list[tuple[float, Record, str]] = []
        self.seen: set[str] = set()
        self.outcomes: Counter[str] = Counter()
        self.received, self.last_due = 0, 0.0

    def receive(self, record: Record, now: float) -> None:
        command = record["value"]
        if command is None or record["offset"] < self.commands_from.get(record["partition"], 0):
            return
        if command["command_id"] in self.seen:
            self.outcomes["duplicate id, skipped"] += 1
            return
        self.seen.add(command["command_id"])
        self.received += 1
        correlation = record["headers"].get("correlation_id") or command["correlation_id"]
        # in the order issued, as a sink reading the topic would: never a stale one last
        self.last_due = max(now + self.rng.uniform(*SINK_DELAY_S), self.last_due)
        self.pending.append((self.last_due, command, correlation))

    def due(self, now: float) -> list[str]:
        ready = [p for p in self.pending if p[0] <= now]
        self.pending = [p for p in self.pending if p[0] > now]
        lines: list[str] = []
        for _, command, correlation in sorted(ready, key=lambda p: p[0]):
            outcome, changes = self.firm.apply_command(command, correlation)
            self.outcomes[outcome] += 1
            lines += changes
        return lines

    def line(self) -> str:
        done = ", ".join(f"{n} {k}" for k, n in sorted(self.outcomes.items())) or "none yet"
        return (
            f"simulated ERP sink: {self.received} commands received; applied: {done}; "
            f"{len(self.pending)} pending"
        )
