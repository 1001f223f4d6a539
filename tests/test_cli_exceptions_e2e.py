"""`pssync exceptions` against a real worker: the CLI over the real API, end to end.

The CLI's own logic (parsing, paging, exit codes) is tested against a fake of the
API in `test_cli_exceptions.py`; here the same commands run as a user runs them,
against a worker reconciling the scenario firm: the table lists the queue, `show`
prints an exception, refusals give their exit codes, and `act --wait` returns once
the owning flow has applied the action (APPLIED), which then shows on the queue.
The token never appears in anything the CLI prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import scenarios
from tests.conftest import SettingsFactory, launch_worker
from tests.kafka_helpers import create_topics
from tests.test_api_e2e import (
    ALICE,
    DASH,
    TOKENS,
    eventually,
    feed_scenario,
    open_exceptions,
    own_api,
)

pytestmark = pytest.mark.kafka


def test_the_cli_works_the_queue_of_a_real_worker(
    settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    settings = own_api(settings_factory(api_tokens=TOKENS))
    create_topics(settings)
    worker = launch_worker(settings, tmp_path / "worker.log")
    try:
        eventually("ready", lambda: worker.get("/ready")[0] == 200)
        feed_scenario(settings, tmp_path)
        expected = set(scenarios.EXPECTED_EXCEPTIONS)
        eventually("the queue", lambda: set(open_exceptions(worker)) == expected)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PSSYNC_")}
        env |= {"PSSYNC_API_URL": worker.url, "PSSYNC_API_TOKEN": ALICE}

        def cli(*argv: str) -> subprocess.CompletedProcess[str]:
            done = subprocess.run(
                [sys.executable, "-m", "pssync", "exceptions", *argv],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
            )
            assert ALICE not in done.stdout + done.stderr
            assert DASH not in done.stdout + done.stderr
            return done

        table = cli("list", "--state", "OPEN")
        assert table.returncode == 0, table.stderr
        assert len(table.stdout.splitlines()) == len(expected) + 1  # a header, a row each
        listed = cli("list", "--all", "--limit", "2", "--json")
        assert listed.returncode == 0, listed.stderr
        items = [json.loads(line) for line in listed.stdout.splitlines()]
        queue = {(r["rule"], r["entity_id"]): r for r in items if r["state"] == "OPEN"}
        assert set(queue) == expected
        missing = queue[("TIME_MISSING_COST_RATE", "T4")]["exception_id"]
        closed = queue[("TIME_IN_CLOSED_PERIOD", "T3")]["exception_id"]
        gate = queue[("PROJECT_GATE_FAILED", "P4")]["exception_id"]

        shown = cli("show", closed)
        assert shown.returncode == 0
        assert "TIME_IN_CLOSED_PERIOD" in shown.stdout
        assert "next_open_period" in shown.stdout
        assert cli("act", gate, "post_to_next_open_period").returncode == 5  # 409
        assert cli("act", missing, "dismiss", "--token", DASH).returncode == 3  # 403
        assert cli("act", "no-such-exception", "dismiss").returncode == 4  # 404

        dismissed = cli("act", missing, "dismiss", "--note", "rate next month", "--wait", "90")
        assert dismissed.returncode == 0, dismissed.stdout + dismissed.stderr
        assert "APPLIED" in dismissed.stdout
        posted = cli("act", closed, "post_to_next_open_period", "--note", "late", "--wait", "90")
        assert posted.returncode == 0, posted.stdout + posted.stderr
        assert "APPLIED" in posted.stdout
        assert "posted to" in posted.stdout

        after = json.loads(cli("show", missing, "--json").stdout)
        assert after["state"] == "DISMISSED"
        assert after["resolution"]["who"] == "ops-alice"
        assert after["resolution"]["note"] == "rate next month"
        assert cli("act", missing, "dismiss").returncode == 5  # no longer open
    finally:
        worker.stop()
