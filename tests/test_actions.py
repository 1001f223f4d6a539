"""People's actions on exceptions, applied by the owning flow (no Kafka).

A seeded firm (every fault kind) runs through the in-process pipeline
(`streams.offline`) with operators' actions on `ops.actions` among its sources:
dismiss, retry, assign and post_to_next_open_period, one placed in the middle of
the stream, one sent twice, one on an exception that is no longer open. Each
must take effect as the contract says (DISMISSED / RESOLVED with `resolution`
{who, action, note, when}, a POST_TIME_ENTRY into the next open period, one
outcome per action id), and the outputs must be the same read as a trickle, as a
backlog topic by topic and in random interleavings.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pssync.avro.contract import ACTIONS_TOPIC, OUTCOMES_TOPIC
from pssync.streams.actions import to_action_change
from pssync.streams.changes import Change, ValidationError
from tests.test_equivalence import firm, run, shuffled, topic_by_topic, trickle

Record = dict[str, Any]


def instant(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat().replace("+00:00", "Z")


def ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def action(
    n: int, exception: Record, kind: str, at_ms: int, action_id: str | None = None, **extra: Any
) -> Change:
    value = {
        "action_id": action_id or f"act-{n}",
        "action": kind,
        "exception_id": exception["exception_id"],
        "rule": exception["rule"],
        "entity_type": exception["entity_type"],
        "entity_id": exception["entity_id"],
        "owner": exception["owner"],
        "who": "ops-alice",
        "note": f"note {n}",
        "assignee": None,
        "requested_at": instant(at_ms),
        "at": instant(at_ms),
    } | extra
    return to_action_change(exception["owner"].split(":", 1)[1], value, 0, n, None)


def final_exceptions(outputs: Sequence[Record]) -> dict[str, Record]:
    return {o["key"]: o["value"] for o in outputs if o["topic"] == "sync.exceptions"}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Record:
    """The firm, the exceptions still open at its end without actions, and the actions."""
    changes, _ = firm("every-rule")
    _, outputs, _ = run(changes, trickle(changes), tmp_path_factory.mktemp("plain"))
    still_open = [e for e in final_exceptions(outputs).values() if e["state"] == "OPEN"]
    assert all(e["owner"] for e in still_open), "every exception says where it lives"
    closed = [e for e in still_open if e["rule"] == "TIME_IN_CLOSED_PERIOD"]
    closed = [e for e in closed if e["context"].get("next_open_period")]
    others = [e for e in still_open if e["rule"] != "TIME_IN_CLOSED_PERIOD"]
    assert len(closed) >= 1
    assert len(others) >= 3
    end = max(c.source.ts_ms or 0 for c in changes) + 1
    early = others[2]
    actions = [
        action(1, closed[0], "post_to_next_open_period", end),
        action(2, others[0], "dismiss", end),
        action(3, others[1], "assign", end, assignee="ops-bob"),
        action(4, others[1], "retry", end + 1),
        # in the middle of the stream: it must stay dismissed through what follows
        action(5, early, "dismiss", ms(early["created_at"]) + 1),
        # sent twice (a client retry): one effect, one outcome
        action(6, others[0], "retry", end + 2, action_id="act-same"),
        action(7, others[0], "retry", end + 2, action_id="act-same"),
    ]
    return {
        "changes": changes,
        "actions": actions,
        "closed": closed[0],
        "others": others,
        "early": early,
    }


def with_actions(scenario: Record) -> list[Change]:
    merged = list(scenario["changes"]) + list(scenario["actions"])
    return sorted(merged, key=lambda c: c.source.ts_ms or 0)


def test_actions_take_effect_as_the_contract_says(scenario: Record, tmp_path: Path) -> None:
    changes = with_actions(scenario)
    _, outputs, counters = run(changes, trickle(changes), tmp_path / "trickle")
    exceptions = final_exceptions(outputs)
    outcomes = [o["value"] for o in outputs if o["topic"] == OUTCOMES_TOPIC]
    by_action = {o["action_id"]: o for o in outcomes}
    assert len(outcomes) == len(by_action) == 6, outcomes  # act-same: one outcome

    posted = scenario["closed"]
    record = exceptions[posted["exception_id"]]
    assert record["state"] == "RESOLVED"
    resolution = record["resolution"]
    assert resolution["who"] == "ops-alice"
    assert resolution["action"] == "post_to_next_open_period"
    assert resolution["note"] == "note 1"
    assert resolution["when"]
    period = posted["context"]["next_open_period"]
    posts = [
        o["value"]
        for o in outputs
        if o["topic"] == "erp.cmd.time_entry"
        and o["value"]["type"] == "POST_TIME_ENTRY"
        and o["value"]["entity_id"] == posted["entity_id"]
    ]
    assert [p["payload"]["period_id"] for p in posts] == [period]
    assert by_action["act-1"]["outcome"] == "APPLIED"
    assert period in by_action["act-1"]["detail"]

    dismissed = exceptions[scenario["others"][0]["exception_id"]]
    assert dismissed["state"] == "DISMISSED"
    assert dismissed["resolution"]["action"] == "dismiss"
    assert dismissed["resolution"]["who"] == "ops-alice"
    assert by_action["act-2"]["outcome"] == "APPLIED"
    # a retry of a dismissed exception finds it no longer open
    assert by_action["act-same"]["outcome"] == "NOT_APPLICABLE"

    assigned = exceptions[scenario["others"][1]["exception_id"]]
    assert assigned["state"] == "OPEN"
    assert assigned["assignee"] == "ops-bob"
    assert by_action["act-3"]["outcome"] == by_action["act-4"]["outcome"] == "APPLIED"
    assert "still holds" in by_action["act-4"]["detail"]

    early = exceptions[scenario["early"]["exception_id"]]
    assert early["state"] == "DISMISSED", "a dismissal outlives later evaluations"
    reopened = [
        e
        for e in exceptions.values()
        if e["entity_id"] == scenario["early"]["entity_id"]
        and e["rule"] == scenario["early"]["rule"]
        and e["state"] == "OPEN"
    ]
    assert reopened == []
    assert sum(r.late for r in counters.results) == 0


@pytest.mark.parametrize("schedule", ["topic-by-topic", "shuffled-1", "shuffled-2"])
def test_actions_give_the_same_outputs_in_any_reading_order(
    scenario: Record, tmp_path: Path, schedule: str
) -> None:
    changes = with_actions(scenario)
    expected, expected_outputs, _ = run(changes, trickle(changes), tmp_path / "trickle")
    if schedule == "topic-by-topic":
        got, outputs, counters = run(changes, topic_by_topic(changes), tmp_path / schedule, 5)
    else:
        seed = int(schedule.rsplit("-", 1)[1])
        got, outputs, counters = run(changes, shuffled(changes, seed), tmp_path / schedule, 3)
    assert got == expected
    outcomes = [o for o in outputs if o["topic"] == OUTCOMES_TOPIC]
    assert outcomes == [o for o in expected_outputs if o["topic"] == OUTCOMES_TOPIC]
    assert sum(r.late for r in counters.results) == 0


def test_an_action_on_an_exception_no_longer_open_changes_nothing(
    scenario: Record, tmp_path: Path
) -> None:
    changes = list(scenario["changes"])
    end = max(c.source.ts_ms or 0 for c in changes) + 1
    target = scenario["others"][2]
    first = action(8, target, "dismiss", end)
    once = [*changes, first]
    expected, _, _ = run(once, trickle(once), tmp_path / "once")
    again = action(9, target, "assign", end + 5, assignee="ops-bob")
    twice = [*once, again]
    got, outputs, _ = run(twice, trickle(twice), tmp_path / "twice")
    assert got == expected  # no command, finding or golden record changed
    outcomes = [o["value"] for o in outputs if o["topic"] == OUTCOMES_TOPIC]
    assert [(o["action_id"], o["outcome"]) for o in outcomes] == [
        ("act-8", "APPLIED"),
        ("act-9", "NOT_APPLICABLE"),
    ]
    assert outcomes[1]["detail"] == "the exception is no longer open"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"action": "delete"}, "action"),
        ({"owner": "nobody"}, "owner"),
        ({"at": "yesterday"}, "at"),
        ({"who": ""}, "who"),
    ],
)
def test_a_malformed_action_is_refused_with_the_field_named(patch: Record, message: str) -> None:
    value = {
        "action_id": "a",
        "action": "dismiss",
        "exception_id": "e",
        "rule": "R",
        "entity_type": "worker",
        "entity_id": "W1",
        "owner": "worker:W1",
        "who": "ops",
        "note": None,
        "assignee": None,
        "requested_at": "2026-01-01T00:00:00.000Z",
        "at": "2026-01-01T00:00:00.000Z",
    } | patch
    with pytest.raises(ValidationError, match=message):
        to_action_change(None, value, 0, 0, None)
    assert ACTIONS_TOPIC == "ops.actions"
