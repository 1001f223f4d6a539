"""Time posted exactly once: every posting path, the exceptions, parking, and a property."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pssync.streams.findings import Trigger, issue_commands
from pssync.streams.rules import time_entries
from pssync.streams.rules.common import Timing
from pssync.streams.rules.time_entries import TimeFacts, net_posted_hours
from tests.worker_harness import (
    ERP_PROJECT,
    HR,
    NOW,
    PERIOD,
    RATE,
    TIME,
    TIMEOUT_MS,
    Harness,
    change,
    erp_project,
    hr,
    of_kind,
    period,
    rate,
    staffed_firm,
    summary,
    time_entry,
)


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    harness = Harness(tmp_path / "store")
    staffed_firm(harness)
    return harness


def commands(emits: list[Any]) -> list[tuple[str, str]]:
    return [(c["type"], c["payload"]["hours"]) for c in of_kind(emits, "command")]


def test_approved_entry_posts_once_with_cost_at_the_effective_rate(h: Harness) -> None:
    emits = h.send(change(TIME, time_entry(hours="7.50"), lsn=100))
    (post,) = of_kind(emits, "command")
    assert post["type"] == "POST_TIME_ENTRY"
    assert post["rule"] == "TIME_ENTRY_POSTED"
    payload = post["payload"]
    assert payload["erp_employee_id"] == "E1"
    assert payload["erp_project_id"] == "EP1"
    assert payload["cost_rate"] == "80.00"
    assert payload["cost_amount"] == "600.00"
    assert payload["currency"] == "USD"
    assert payload["period_id"] == "LE1:2026-03"
    assert payload["version"] == 1


def test_draft_and_submitted_post_nothing(h: Harness) -> None:
    assert of_kind(h.send(change(TIME, time_entry(status="DRAFT"), lsn=100)), "command") == []
    assert of_kind(h.send(change(TIME, time_entry(status="SUBMITTED"), lsn=101)), "command") == []


def test_unchanged_reapproval_and_redelivery_post_nothing_new(h: Harness) -> None:
    h.send(change(TIME, time_entry(), lsn=100))
    assert h.send(change(TIME, time_entry(), lsn=100, offset=999)) == []  # redelivered
    again = h.send(change(TIME, time_entry(), lsn=101, before=time_entry()))  # re-approved
    assert of_kind(again, "command") == []


def test_edit_after_posting_reverses_then_posts_the_new_version(h: Harness) -> None:
    first = of_kind(h.send(change(TIME, time_entry(hours="7.50"), lsn=100)), "command")[0]
    emits = h.send(change(TIME, time_entry(hours="6.00"), lsn=101, before=time_entry()))
    reverse, post = of_kind(emits, "command")
    assert reverse["type"] == "REVERSE_TIME_ENTRY"
    assert reverse["payload"]["reverses_command_id"] == first["command_id"]
    assert reverse["payload"]["hours"] == "7.50"
    assert post["type"] == "POST_TIME_ENTRY"
    assert post["payload"]["hours"] == "6.00"
    assert post["payload"]["version"] == 2
    assert post["command_id"] != first["command_id"]


@pytest.mark.parametrize(
    "edit",
    [{"work_date": "2026-03-17"}, {"project_id": "P2"}, {"billable": False}],
)
def test_any_essential_edit_reposts(h: Harness, edit: dict[str, Any]) -> None:
    h.send(change(ERP_PROJECT, erp_project("EP2", "P2"), lsn=50))
    h.send(change(TIME, time_entry(), lsn=100))
    emits = h.send(change(TIME, time_entry() | edit, lsn=101, before=time_entry()))
    assert [c["type"] for c in of_kind(emits, "command")] == [
        "REVERSE_TIME_ENTRY",
        "POST_TIME_ENTRY",
    ]


def test_rejected_after_posting_is_reversed(h: Harness) -> None:
    h.send(change(TIME, time_entry(), lsn=100))
    emits = h.send(change(TIME, time_entry(status="REJECTED"), lsn=101, before=time_entry()))
    assert commands(emits) == [("REVERSE_TIME_ENTRY", "7.50")]


def test_deleted_after_posting_is_reversed_even_without_a_before_image(h: Harness) -> None:
    h.send(change(TIME, time_entry(), lsn=100))
    emits = h.send(change(TIME, None, lsn=101, entity_id="T1"))
    assert commands(emits) == [("REVERSE_TIME_ENTRY", "7.50")]


def test_period_closing_after_posting_changes_nothing(h: Harness) -> None:
    h.send(change(TIME, time_entry(), lsn=100))
    closed = h.send(change(PERIOD, period("2026-03", status="CLOSED"), lsn=60))
    assert of_kind(closed, "command") == []
    assert of_kind(closed, "exception") == []


def test_time_in_closed_period_offers_the_next_open_one(h: Harness) -> None:
    h.send(change(PERIOD, period("2026-03", status="CLOSED"), lsn=60))
    emits = h.send(change(TIME, time_entry(), lsn=100))
    (exc,) = of_kind(emits, "exception")
    assert exc["rule"] == "TIME_IN_CLOSED_PERIOD"
    assert exc["context"]["next_open_period"] == "LE1:2026-04"
    assert "LE1:2026-04" in exc["remediation"]
    assert of_kind(emits, "command") == []
    reopened = h.send(change(PERIOD, period("2026-03"), lsn=61))
    assert summary(reopened)[:2] == [
        ("exception", "TIME_IN_CLOSED_PERIOD", "RESOLVED"),
        ("command", "POST_TIME_ENTRY", "T1"),
    ]


@pytest.mark.parametrize("day", ["2024-01-31", "2026-05-02"])
def test_time_for_inactive_worker(h: Harness, day: str) -> None:
    h.send(change(HR, hr(status="TERMINATED"), lsn=20, before=hr()))  # left 2026-04-30
    h.send(change(PERIOD, period(day[:7]), lsn=61))
    h.send(change(RATE, rate("R0", start="2020-01-01", end="2025-12-31"), lsn=62))
    emits = h.send(change(TIME, time_entry(day=day), lsn=100))
    assert [e["rule"] for e in of_kind(emits, "exception")] == ["TIME_FOR_INACTIVE_WORKER"]
    assert of_kind(emits, "command") == []


def test_time_missing_cost_rate_in_a_gap_then_posted_when_the_rate_arrives(h: Harness) -> None:
    h.send(change(RATE, rate(end="2026-03-10"), lsn=20, before=rate()))
    emits = h.send(change(TIME, time_entry(day="2026-03-16"), lsn=100))
    assert [e["rule"] for e in of_kind(emits, "exception")] == ["TIME_MISSING_COST_RATE"]
    fixed = h.send(change(RATE, rate("R2", start="2026-03-11", amount="90.00"), lsn=21))
    assert summary(fixed)[:2] == [
        ("exception", "TIME_MISSING_COST_RATE", "RESOLVED"),
        ("command", "POST_TIME_ENTRY", "T1"),
    ]
    assert of_kind(fixed, "command")[0]["payload"]["cost_amount"] == "675.00"


def test_rate_change_mid_month_costs_each_day_at_its_own_rate(h: Harness) -> None:
    h.send(change(RATE, rate(end="2026-03-15"), lsn=20, before=rate()))
    h.send(change(RATE, rate("R2", start="2026-03-16", amount="100.00"), lsn=21))
    before = of_kind(h.send(change(TIME, time_entry("T1", day="2026-03-15"), lsn=100)), "command")
    after = of_kind(h.send(change(TIME, time_entry("T2", day="2026-03-16"), lsn=101)), "command")
    assert before[0]["payload"]["cost_rate"] == "80.00"
    assert after[0]["payload"]["cost_rate"] == "100.00"


def test_time_before_its_worker_and_project_is_parked_then_posted(tmp_path: Path) -> None:
    h = Harness(tmp_path / "s")
    assert h.send(change(TIME, time_entry(), lsn=100)) == []  # nothing known yet: parked
    staffed_firm(h)
    posts = [c for c in of_kind(h.emitted, "command") if c["type"] == "POST_TIME_ENTRY"]
    assert len(posts) == 1


def test_dependency_timeout_names_what_is_missing_and_resolves_later(tmp_path: Path) -> None:
    h = Harness(tmp_path / "s")
    staffed_firm(h)
    h.send(change(TIME, time_entry(project_id="P9"), lsn=100))
    assert of_kind(h.tick(NOW + TIMEOUT_MS - 1), "exception") == []
    (exc,) = of_kind(h.tick(NOW + TIMEOUT_MS), "exception")
    assert exc["rule"] == "DEPENDENCY_TIMEOUT"
    assert exc["entity_type"] == "time_entry"
    assert exc["context"]["missing"] == "erp_project:P9"
    late = h.send(change(ERP_PROJECT, erp_project("EP9", "P9"), lsn=70), now=NOW + TIMEOUT_MS + 1)
    assert summary(late)[:2] == [
        ("exception", "DEPENDENCY_TIMEOUT", "RESOLVED"),
        ("command", "POST_TIME_ENTRY", "T1"),
    ]


def test_parked_entries_survive_a_restart(tmp_path: Path) -> None:
    h = Harness(tmp_path / "s")
    h.send(change(TIME, time_entry(), lsn=100))
    h.close()
    again = Harness(tmp_path / "s")
    staffed_firm(again)
    assert ("command", "POST_TIME_ENTRY", "T1") in summary(again.emitted)


# -- the property: net posted hours equal the last approved version's ---------------------
FACTS = TimeFacts(
    worker=hr(),
    erp_employee_id="E1",
    rates=[rate()],
    erp_project=erp_project(),
    period=period("2026-03"),
)
EDIT = st.fixed_dictionaries(
    {
        "hours": st.sampled_from(["0.25", "1.00", "4.50", "7.50", "8.00"]),
        # weighted towards approvals, so that edits of approved entries are common
        "status": st.sampled_from(["APPROVED"] * 4 + ["DRAFT", "SUBMITTED", "REJECTED"]),
        "billable": st.sampled_from([True, True, True, False]),
        "work_date": st.sampled_from(["2026-03-16", "2026-03-16", "2026-03-31"]),
        "deleted": st.sampled_from([False] * 7 + [True]),
        "redeliver": st.sampled_from([False] * 3 + [True]),
    }
)


@settings(max_examples=300, deadline=None)
@given(st.lists(EDIT, min_size=1, max_size=12))
def test_net_posted_hours_equal_the_last_approved_version(edits: list[dict[str, Any]]) -> None:
    state = time_entries.new_state("T1")
    issued: list[str] = []
    ledger: list[dict[str, Any]] = []
    timing = Timing(NOW, 1, 1)
    last: dict[str, Any] | None = None
    lsn = 0
    for edit in edits:
        if not (edit["redeliver"] and last is not None):
            lsn += 1
            last = (
                None
                if edit["deleted"]
                else time_entry(
                    hours=edit["hours"],
                    status=edit["status"],
                    billable=edit["billable"],
                    day=edit["work_date"],
                )
            )
        ch = change(TIME, last, lsn=lsn, entity_id="T1")
        if ch.source.lsn == state.get("lsn"):
            continue  # a redelivery: the flow drops it before the rules
        state["lsn"] = ch.source.lsn
        state["rec"], state["src"] = last, ch.source.to_json()
        evaluation = time_entries.evaluate(state, FACTS, timing)
        emits = issue_commands(issued, evaluation.commands, Trigger("c", at_ms=NOW))
        ledger += [e.value for e in emits if e.value is not None]
    expected = (
        Decimal(last["hours"]) if last is not None and last["status"] == "APPROVED" else Decimal(0)
    )
    assert net_posted_hours(ledger) == expected
    posts = sum(1 for c in ledger if c["type"] == "POST_TIME_ENTRY")
    reversals = sum(1 for c in ledger if c["type"] == "REVERSE_TIME_ENTRY")
    assert posts - reversals == (1 if expected else 0)
