"""What is finished leaves state (with tombstones), and a year keeps state near what is live."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.retention import run
from tests.worker_harness import (
    ASSIGNMENT,
    HR,
    NOW,
    PERIOD,
    RETENTION_MS,
    TIME,
    Harness,
    assignment,
    change,
    hr,
    of_kind,
    period,
    staffed_firm,
    time_entry,
)

DAY = 86_400_000


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    harness = Harness(tmp_path / "store")
    staffed_firm(harness)
    return harness


def keys(h: Harness, prefix: str) -> list[str]:
    return list(h.store.keys(prefix))


def test_posted_time_leaves_state_once_its_period_is_closed_past_the_retention(
    h: Harness,
) -> None:
    h.send(change(TIME, time_entry("T1"), lsn=100))
    h.send(change(TIME, time_entry("T2", day="2026-03-17"), lsn=101))
    closed_at = NOW + DAY
    h.send(change(PERIOD, period("2026-03", status="CLOSED"), lsn=102), now=closed_at)
    assert keys(h, "te/") == ["te/T1", "te/T2"]
    h.tick(closed_at + RETENTION_MS - 1)
    assert keys(h, "te/") == ["te/T1", "te/T2"]
    h.tick(closed_at + RETENTION_MS)
    assert keys(h, "te/") == []
    tombstones = {k for batch in h.changelog[-2:] for k, v in batch.items() if v is None}
    assert {"te/T1", "te/T2", "pe/LE1:2026-03"} <= tombstones  # compaction frees them
    assert [k for k in keys(h, "dep/") if "/te/" in k] == []
    assert keys(h, "pe/LE1:2026-03") == []  # nothing reads the closed period any more
    assert h.store.get("pe-closed/LE1") == "2026-03"


def test_a_late_entry_in_a_retired_period_is_still_held_as_closed(h: Harness) -> None:
    h.send(change(TIME, time_entry("T1"), lsn=100))
    closed_at = NOW + DAY
    h.send(change(PERIOD, period("2026-03", status="CLOSED"), lsn=102), now=closed_at)
    h.tick(closed_at + RETENTION_MS)
    late = h.send(
        change(TIME, time_entry("T9", day="2026-03-20"), lsn=103), now=closed_at + RETENTION_MS + 5
    )
    (exception,) = of_kind(late, "exception")
    assert exception["rule"] == "TIME_IN_CLOSED_PERIOD"
    assert exception["context"]["period_id"] == "LE1:2026-03"
    assert exception["context"]["next_open_period"] == "LE1:2026-04"
    assert of_kind(late, "command") == []


def test_an_entry_with_something_open_stays(h: Harness) -> None:
    h.send(change(PERIOD, period("2026-02", status="CLOSED"), lsn=99), now=NOW)
    h.send(change(TIME, time_entry("T1", day="2026-02-20"), lsn=100))  # TIME_IN_CLOSED_PERIOD
    h.tick(NOW + 3 * RETENTION_MS)
    assert keys(h, "te/") == ["te/T1"]


def test_a_deleted_worker_and_assignment_leave_after_the_retention(h: Harness) -> None:
    h.send(change(HR, hr("W7", cc="CC1"), lsn=200))
    h.send(change(ASSIGNMENT, assignment("A7", "W7", "P1"), lsn=201))
    assert "l/A7" in list(h.link_store.keys("l/"))
    h.send(change(ASSIGNMENT, None, before=None, lsn=202, entity_id="A7"), now=NOW + DAY)
    h.send(change(HR, None, before=None, lsn=203, entity_id="W7"), now=NOW + DAY)
    assert "l/A7" not in list(h.link_store.keys("l/"))  # the link went with the delete
    assert (keys(h, "as/A7"), keys(h, "w/W7")) == (["as/A7"], ["w/W7"])  # kept a while
    h.tick(NOW + DAY + RETENTION_MS - 1)
    assert (keys(h, "as/A7"), keys(h, "w/W7")) == (["as/A7"], ["w/W7"])
    h.tick(NOW + DAY + RETENTION_MS)
    assert (keys(h, "as/A7"), keys(h, "w/W7")) == ([], [])


def test_links_of_deleted_records_go_with_the_delete(h: Harness) -> None:
    h.send(change(TIME, time_entry("T1"), lsn=100))
    assert "l/T1" in list(h.link_store.keys("l/"))
    emits = h.send(change(TIME, None, before=None, lsn=101, entity_id="T1"), now=NOW + 10)
    assert [c["type"] for c in of_kind(emits, "command")] == ["REVERSE_TIME_ENTRY"]
    assert "l/T1" not in list(h.link_store.keys("l/"))


def test_a_simulated_stretch_keeps_state_near_what_is_live(tmp_path: Path) -> None:
    """120 simulated days with a 10-day retention: time entries in state stay near two
    months' worth per worker while the time ever entered keeps growing."""
    rows = run(120, [60], 10, tmp_path)
    middle, end = rows
    assert end["ever"]["te"] > 1.8 * middle["ever"]["te"]
    per_worker = [r["state"]["te"] / r["live"]["workers"] for r in rows]
    assert per_worker[1] < 1.25 * per_worker[0], per_worker
    assert end["state"]["te"] < 0.6 * end["ever"]["te"]
    assert end["state"]["links"] <= 2 * end["state"]["te"] + 2 * end["ever"]["as"] + 500
