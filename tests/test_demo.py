"""The main job, briefly, on the real stack: it runs the simulator's stream through a
worker and reports what came out, detected versus injected, and where to look."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import SettingsFactory, free_port, settings_env

pytestmark = pytest.mark.kafka

DURATION_S = 55  # the 35 days stream in ~20s at 100/s; the 20s dependency timeout then fires


def test_demo_streams_the_simulator_and_reports_detected_versus_injected(
    settings_factory: SettingsFactory,
) -> None:
    # the demo's own timings (its defaults apply only where PSSYNC_* is unset)
    settings = settings_factory(
        web_port=free_port(),
        orphan_grace_s=10,
        project_setup_sla_s=10,
        dependency_timeout_s=20,
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pssync", "demo", "--no-stack", "--duration", str(DURATION_S)],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=DURATION_S + 240,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    final = out[out.rindex("=== final") :]
    commands = final[final.index("commands (") : final.index("drift alerts (")]
    for kind in ("UPSERT_EMPLOYEE", "CREATE_PROJECT", "UPDATE_PROJECT", "POST_TIME_ENTRY"):
        assert kind in commands, f"{kind}\n{final}"
    findings = final[final.index("drift alerts (") : final.index("golden records")]
    for rule in (
        "WORKER_MISSING_IN_ERP",
        "WORKER_FIELD_DRIFT",
        "PROJECT_FIELD_DRIFT",
        "SOW_SIGNED_WITHOUT_PROJECT",
        "ASSIGNMENT_RATE_BELOW_COST",
        "TIME_IN_CLOSED_PERIOD",
        "ERP_EMPLOYEE_WITHOUT_HR_WORKER",
    ):
        assert rule in findings, f"{rule}\n{final}"
    assert "reconciled.project" in final
    assert re.search(r"dead letters \(sync\.dlq\): [1-9]", final), final
    verdict = final[final.index("detected versus injected") :]
    assert re.search(r"rule\s+injected\s+detected", verdict), final
    assert re.search(r"POST_TIME_ENTRY\s+[1-9]\d*\s+[1-9]", verdict), final
    assert "without an injected cause" not in final, final
    url = f"http://127.0.0.1:{settings.web_port}"
    console = re.search(rf"console: {re.escape(url)}/console .*\n.*log in with token (\S+) ", out)
    assert console, out[:3000]
    assert f"PSSYNC_API_TOKEN={console.group(1)} pssync exceptions list --api-url {url}" in out
    assert f"{url}/metrics" in out
    assert f"{url}/ready" in out
    for topic in ("erp.cmd.project", "erp.cmd.time_entry", "reconciled.assignment"):
        assert f"pssync consume {topic} --from-beginning" in out, topic
