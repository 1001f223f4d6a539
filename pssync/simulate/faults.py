"""Fault kinds, where each can be injected, and the draws that decide it.

A fault is drawn per *eligible event* with the kind's probability (`--fault
KIND=P`, else `--fault-rate`). Where a kind is eligible:

- WORKER_MISSING_IN_ERP (per a hire): HR sends the worker; the ERP never provisions an
  employee.
- WORKER_INVALID_COST_CENTER (per a hire): HR hires into the entity's inactive legacy
  cost center; no ERP employee.
- ERP_EMPLOYEE_WITHOUT_HR_WORKER (per a hire): the ERP provisions the employee; HR never
  sends the worker (offer withdrawn).
- ASSIGNMENT_INVALID_COST_CENTER (per hire, given a staffable project in the entity): hired
  into the inactive legacy cost center in HR *and* ERP (no worker rule), staffed at
  once: CONFIRMED assignment.
- OUT_OF_ORDER (per late-registered hire: hired days ago, time already approved): the
  PSA changes (assignment, approved time) arrive before the ERP employee, cost rate and
  HR worker.
- TERMINATED_WORKER_ACTIVE_IN_ERP (per a termination): HR terminates; the ERP employee
  is never deactivated.
- ASSIGNMENT_WORKER_INELIGIBLE (per a termination with an assignment ending after it):
  the assignment is left CONFIRMED with end_date > termination_date.
- TIME_FOR_INACTIVE_WORKER (per a termination with a project to book to): a time entry
  dated after termination_date is approved days later.
- WORKER_FIELD_DRIFT (per the daily ERP employee edit): the edit moves the employee to
  another active cost center.
- PROJECT_FIELD_DRIFT (per the daily ERP project edit): the edit sets the ERP project
  CLOSED (PSA stays ACTIVE).
- SOW_SIGNED_WITHOUT_PROJECT (per a signed deal): no PSA project ever references the
  SOW.
- PROJECT_GATE_FAILED (per a signed deal): a new customer failing one gate check; the
  project goes ACTIVE with no ERP project.
- PROJECT_MISSING_IN_ERP (per a project activation): PSA goes ACTIVE, customer fine, no
  ERP project.
- ASSIGNMENT_RATE_BELOW_COST (per a new assignment): bill_rate below the cost rate
  effective at start_date.
- TIME_MISSING_COST_RATE (per a cost-rate change): the old rate ends two days before the
  new one starts; the gap weekday's entry is approved.
- TIME_IN_CLOSED_PERIOD (per the daily late time entry, once a period is closed): dated
  in the latest CLOSED period.
- DEPENDENCY_TIMEOUT (per the daily late time entry): books to a project id that never
  arrives.
- DUPLICATE (per each change of a group without a fault): re-sent at the end of its
  group: same line, same lsn.
- UNDECODABLE (per each group without a fault): garbage bytes with a valid key, straight
  to a CDC topic.

An entity that carries a fault is never picked for another, and time is only
booked where the contract says it posts (see `model.Firm.time_failures`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pssync.simulate.feed import ENTITY_OF_TOPIC, Group, Line, Raw
from pssync.simulate.truth import FAULTS, KINDS, Fault

DEFAULT_RATE: Final = 0.05


def parse_fault_rates(items: Sequence[str], default: float) -> dict[str, float]:
    """`--fault KIND=P` items over `--fault-rate` default: a probability for every kind."""
    if not 0.0 <= default <= 1.0:
        raise ValueError(f"--fault-rate {default}: expected a probability in [0, 1]")
    rates = dict.fromkeys(KINDS, default)
    for item in items:
        name, sep, value = item.partition("=")
        kind = name.strip().upper()
        if not sep or kind not in FAULTS:
            raise ValueError(
                f"--fault {item!r}: expected KIND=P with KIND one of {', '.join(KINDS)}"
            )
        try:
            p = float(value)
        except ValueError:
            raise ValueError(f"--fault {item!r}: {value!r} is not a number") from None
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"--fault {item!r}: expected a probability in [0, 1]")
        rates[kind] = p
    return rates


class Faults:
    """Draws faults for eligible events (its own random stream) and mints their records."""

    def __init__(self, seed: int, rates: Mapping[str, float]) -> None:
        self.rng = random.Random(f"{seed}:faults")
        self.rates = {kind: float(rates.get(kind, 0.0)) for kind in KINDS}
        self._next = 0

    def pick(self, *kinds: str | None) -> str | None:
        """The first of `kinds` (None entries: not eligible this time) whose draw hits."""
        for kind in kinds:
            if kind is not None and self.roll(kind):
                return kind
        return None

    def roll(self, kind: str) -> bool:
        rate = self.rates[kind]
        return rate > 0.0 and self.rng.random() < rate

    def record(
        self,
        group: Group,
        kind: str,
        entity_id: str,
        entity_type: str | None = None,
        **detail: Any,
    ) -> Fault:
        """Record `kind` on `group`, visible at the group's latest change."""
        self._next += 1
        at_ms = group.lines[-1].ts_ms if group.lines else group.at_ms
        fault = Fault(
            f"F-{self._next:05d}",
            kind,
            entity_type or FAULTS[kind][0],
            entity_id,
            at_ms,
            detail,
        )
        group.faults.append(fault)
        return fault

    def transport(self, group: Group, correlation: str) -> None:
        """Redeliveries and garbage after a clean group (a group with a fault gets none)."""
        if group.faults:
            return
        originals = list(group.lines)
        for line in originals:
            if self.roll("DUPLICATE"):
                group.after.append(line)
                self._record_change(group, "DUPLICATE", line, "redelivered at the end of its group")
        if originals and self.roll("UNDECODABLE"):
            line = originals[self.rng.randrange(len(originals))]
            garbage = b"\xde\xad" + bytes(self.rng.randrange(256) for _ in range(14))
            raw = Raw(line.topic, _key_of(line), garbage, correlation)
            group.after.append(raw)
            self._record_change(group, "UNDECODABLE", line, "garbage value, no wire-format header")

    def _record_change(self, group: Group, kind: str, line: Line, what: str) -> None:
        self._next += 1
        detail = {"topic": line.topic, "db": line.db, "lsn": line.lsn, "what": what}
        group.faults.append(
            Fault(
                f"F-{self._next:05d}",
                kind,
                ENTITY_OF_TOPIC[line.topic],
                line.key,
                line.ts_ms,
                detail,
            )
        )


def _key_of(line: Line) -> dict[str, Any]:
    key: dict[str, Any] = json.loads(line.text)["key"]
    return key
