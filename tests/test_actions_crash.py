"""An accepted action survives a crash of the worker, and takes effect once.

The API answers 202 once the broker has the action; a worker killed (SIGKILL)
right after that, before or while its flow applies it, restarts from its last
commit and applies the action from `ops.actions` then. A client that did not see
the 202 and sends the same `action_id` again changes nothing more. On the output
topics: one outcome per action (a record re-sent after the crash is the same
record), the exception DISMISSED with its resolution, and exactly one
POST_TIME_ENTRY command (one command_id) into the next open period.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import scenarios
from tests.conftest import SettingsFactory, launch_worker
from tests.kafka_helpers import collect, create_topics
from tests.test_api_e2e import (
    ALICE,
    TOKENS,
    call,
    drained,
    eventually,
    feed_scenario,
    open_exceptions,
    own_api,
)

pytestmark = pytest.mark.kafka


def test_an_accepted_action_survives_a_kill_and_applies_once(
    settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    settings = own_api(settings_factory(api_tokens=TOKENS), instance_id="crash-test")
    create_topics(settings)
    worker = launch_worker(settings, tmp_path / "worker-1.log")
    try:
        feed_scenario(settings, tmp_path)
        expected = set(scenarios.EXPECTED_EXCEPTIONS)
        eventually("the queue", lambda: open_exceptions(worker).keys() == expected)
        queue = open_exceptions(worker)
        missing = queue[("TIME_MISSING_COST_RATE", "T4")]["exception_id"]
        closed = queue[("TIME_IN_CLOSED_PERIOD", "T3")]["exception_id"]
        period = queue[("TIME_IN_CLOSED_PERIOD", "T3")]["context"]["next_open_period"]
        actions = [
            (missing, {"action": "dismiss", "note": "crash", "action_id": "crash-dismiss"}),
            (
                closed,
                {"action": "post_to_next_open_period", "note": "crash", "action_id": "crash-post"},
            ),
        ]
        for exception_id, body in actions:
            reply = call(worker, f"/api/exceptions/{exception_id}/actions", ALICE, "POST", body)
            assert reply.status == 202, reply.body
        worker.proc.kill()  # at once: before or while the flow applies them
        worker.proc.wait(10)
    finally:
        worker.stop()

    worker = launch_worker(settings, tmp_path / "worker-2.log")
    try:
        outcomes_topic = "ops.action_outcomes"

        def outcomes() -> list[dict[str, object]]:
            return [r["value"] for r in collect(settings, [outcomes_topic], idle_s=1.0)]

        eventually(
            "both outcomes",
            lambda: {o["action_id"] for o in outcomes()} == {"crash-dismiss", "crash-post"},
            timeout_s=90,
        )
        # a client that missed the 202 sends the same action again: nothing more happens
        for exception_id, body in actions:
            reply = call(worker, f"/api/exceptions/{exception_id}/actions", ALICE, "POST", body)
            assert reply.status == 202, reply.body
            assert reply.body == {"action_id": body["action_id"]}
        drained(settings)
        records = collect(
            settings,
            [
                outcomes_topic,
                "sync.exceptions",
                "erp.cmd.time_entry",
            ],
            idle_s=3.0,
        )
    finally:
        worker.stop()

    by_action: dict[str, list[dict[str, object]]] = {}
    for record in records:
        if record["topic"] == outcomes_topic:
            by_action.setdefault(str(record["value"]["action_id"]), []).append(record["value"])
    assert set(by_action) == {"crash-dismiss", "crash-post"}
    for action_id, seen in by_action.items():
        assert all(o == seen[0] for o in seen), f"{action_id}: differing outcomes {seen}"
        assert seen[0]["outcome"] == "APPLIED", seen[0]
    dismissed = [
        r["value"]
        for r in records
        if r["topic"] == "sync.exceptions"
        and r["value"]["exception_id"] == missing
        and r["value"]["state"] == "DISMISSED"
    ]
    assert dismissed
    assert all(d == dismissed[0] for d in dismissed)
    assert dismissed[0]["resolution"]["who"] == "ops-alice"
    posts = {
        r["value"]["command_id"]: r["value"]
        for r in records
        if r["topic"] == "erp.cmd.time_entry"
        and r["value"]["type"] == "POST_TIME_ENTRY"
        and r["value"]["entity_id"] == "T3"
    }
    assert [p["payload"]["period_id"] for p in posts.values()] == [period]
