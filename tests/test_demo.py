"""The main job, briefly, on the real stack: it runs, feeds, and reports what came out."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import SettingsFactory, free_port, settings_env

pytestmark = pytest.mark.kafka


def test_demo_runs_and_reports_commands_alerts_and_where_to_look(
    settings_factory: SettingsFactory,
) -> None:
    settings = settings_factory(web_port=free_port())
    env = settings_env(settings)
    proc = subprocess.run(
        [sys.executable, "-m", "pssync", "demo", "--no-stack", "--duration", "25"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    final = out[out.rindex("=== final") :]
    for expected in (
        "UPSERT_EMPLOYEE",
        "DEACTIVATE_EMPLOYEE",
        "TERMINATED_WORKER_ACTIVE_IN_ERP",
        "WORKER_FIELD_DRIFT",
        "WORKER_MISSING_IN_ERP",
        "WORKER_INVALID_COST_CENTER",
        "golden records (reconciled.worker)",
        "dead letters (sync.dlq): 1",
    ):
        assert expected in final, expected
    assert f"http://127.0.0.1:{settings.web_port}/ready" in out
    assert "pssync consume erp.cmd.employee --from-beginning" in out
