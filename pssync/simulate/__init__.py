"""`pssync simulate`: a seeded professional-services firm that knows the truth.

The firm (`model`) lives day by day (`story`: people, deals, timesheets) on a
simulated clock; every change at its HR, ERP, CRM and PSA databases becomes a
Debezium CDC line in the contract's JSON form (`feed`), sent in source-time
order. Faults (`faults`) are injected at configurable rates, each recorded
with the outcome the worker should produce (`truth`). `cli` streams it all
to Kafka through the produce path, or to a file.
"""

from __future__ import annotations

from pssync.simulate.faults import DEFAULT_RATE, parse_fault_rates
from pssync.simulate.feed import Group, Item, Line, Raw, limit_count
from pssync.simulate.model import DEFAULT_START, Firm, SimConfig
from pssync.simulate.story import run, simulate
from pssync.simulate.truth import FAULTS, KINDS, RULE_KINDS, Fault, TruthLog

__all__ = [
    "DEFAULT_RATE",
    "DEFAULT_START",
    "FAULTS",
    "KINDS",
    "RULE_KINDS",
    "Fault",
    "Firm",
    "Group",
    "Item",
    "Line",
    "Raw",
    "SimConfig",
    "TruthLog",
    "limit_count",
    "parse_fault_rates",
    "run",
    "simulate",
]
