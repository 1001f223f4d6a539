"""A working day at the firm, slot by slot, and the stream of days from the snapshot on.

`simulate` yields closed `Group`s in source-time order: the initial load, then
for every weekday the slots below (weekends are quiet). The firm's own random
stream drives the story; faults draw from theirs (`faults.Faults`), and the
logs' timing from theirs (`feed.ChangeLog`), so one seed gives one stream.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Final

from pssync.simulate import deals, people, timesheets
from pssync.simulate.feed import Group
from pssync.simulate.initial import initial_load
from pssync.simulate.model import DAY, Firm, SimConfig, weekday

Slot = Callable[[Firm, dt.date, int], Iterator[Group]]

# chance per weekday of the events that do not happen every day
HIRE_CHANCE: Final = 0.35
TERMINATION_CHANCE: Final = 0.2
DEAL_CHANCE: Final = 0.3
RATE_CHANGE_CHANCE: Final = 0.3
LATE_ENTRY_CHANCE: Final = 0.35


def _sometimes(chance: float, slot: Slot) -> Slot:
    def maybe(firm: Firm, day: dt.date, at_ms: int) -> Iterator[Group]:
        if firm.rng.random() < chance:
            yield from slot(firm, day, at_ms)

    return maybe


def _on(weekday_no: int, slot: Slot) -> Slot:
    def only(firm: Firm, day: dt.date, at_ms: int) -> Iterator[Group]:
        if day.weekday() == weekday_no:
            yield from slot(firm, day, at_ms)

    return only


# (time of day, what happens); groups within a slot follow each other on the clock
DAY_PLAN: Final[tuple[tuple[str, Slot], ...]] = (
    ("07:30", timesheets.open_periods),
    ("08:00", _sometimes(TERMINATION_CHANCE, people.terminate)),
    ("08:20", _sometimes(HIRE_CHANCE, people.hire)),
    ("08:40", people.leave),
    ("09:00", deals.activations),
    ("09:30", deals.staffing),
    ("10:00", _on(0, timesheets.approvals)),
    ("11:00", _sometimes(DEAL_CHANCE, deals.deal)),
    ("13:00", _sometimes(RATE_CHANGE_CHANCE, people.rate_change)),
    ("14:00", people.erp_employee_edit),
    ("14:30", deals.erp_project_edit),
    ("15:00", _sometimes(LATE_ENTRY_CHANCE, timesheets.late_entry)),
    ("15:30", people.time_after_termination),
    ("17:00", timesheets.drafts),
    ("17:30", _on(4, timesheets.submissions)),
    ("18:00", timesheets.close_periods),
)


def simulate(config: SimConfig, days: int | None = None) -> Iterator[Group]:
    """The firm's changes: the snapshot, then `days` simulated days (None: forever)."""
    yield from run(Firm(config), days)


def run(firm: Firm, days: int | None = None) -> Iterator[Group]:
    yield firm.close(initial_load(firm))
    day = firm.config.start.date()
    end = None if days is None else day + dt.timedelta(days=days)
    while end is None or day < end:
        if weekday(day):
            for hhmm, slot in DAY_PLAN:
                yield from slot(firm, day, firm.at(day, hhmm))
        day += DAY
