"""A real scrape: Prometheus (Debian's package) scrapes a worker while a scenario flows,
and PromQL over its HTTP API returns the drift gauges and counters the scenario implies."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import scenarios
from tests.conftest import SettingsFactory, WorkerFactory, free_port
from tests.kafka_helpers import create_topics
from tests.test_e2e_firm import run_scenario

pytestmark = pytest.mark.kafka

RULES = Path(__file__).parent.parent / "ops" / "prometheus" / "rules.yml"


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> dict[str, object]:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as resp:
            body: dict[str, object] = json.loads(resp.read())
        assert body["status"] == "success", body
        return body

    def value(self, promql: str) -> float | None:
        result = self.get("/api/v1/query", query=promql)["data"]["result"]  # type: ignore[index]
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, promql: str, expected: float, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        got = None
        while time.monotonic() < deadline:
            got = self.value(promql)
            if got == expected:
                return
            time.sleep(1)
        raise AssertionError(f"{promql} = {got}, expected {expected}")


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[object]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is needed (Debian package prometheus; ./run test installs it)"
    started: list[subprocess.Popen[bytes]] = []

    def start(target: str) -> Prometheus:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: ['{RULES}']\n"
            "scrape_configs:\n"
            "  - job_name: pssync\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        with open(tmp_path / "prometheus.log", "wb") as log:
            proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started.append(proc)
        prom = Prometheus(f"http://127.0.0.1:{port}")
        for _ in range(60):
            try:
                prom.get("/api/v1/status/buildinfo")
                return prom
            except OSError:
                time.sleep(0.5)
        raise AssertionError((tmp_path / "prometheus.log").read_text()[-2000:])

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(30)


def test_prometheus_scrapes_drift_gauges_and_counters(
    settings_factory: SettingsFactory,
    worker_factory: WorkerFactory,
    prometheus_factory: object,
    tmp_path: Path,
) -> None:
    settings = settings_factory()
    create_topics(settings)
    worker = worker_factory(settings)
    prom = prometheus_factory(f"127.0.0.1:{worker.settings.web_port}")  # type: ignore[operator]
    prom.wait_for('up{job="pssync"}', 1)
    run_scenario(settings, tmp_path)

    prom.wait_for("sum(pssync_open_alerts)", len(scenarios.EXPECTED_ALERTS))
    prom.wait_for('sum(pssync_open_alerts{rule="PROJECT_MISSING_IN_ERP", severity="INFO"})', 2)
    prom.wait_for('sum(pssync_open_alerts{severity="CRITICAL"})', 1)
    prom.wait_for("sum(pssync_open_exceptions)", len(scenarios.EXPECTED_EXCEPTIONS))
    prom.wait_for('sum(pssync_commands_total{type="POST_TIME_ENTRY"})', 5)
    prom.wait_for('sum(pssync_commands_total{type="REVERSE_TIME_ENTRY"})', 2)
    prom.wait_for(
        'sum(pssync_alerts_total{rule="TERMINATED_WORKER_ACTIVE_IN_ERP", state="OPEN"})', 1
    )
    prom.wait_for("sum(pssync_ready)", 1)
    prom.wait_for('sum(pssync_consumer_lag{topic="cdc.psa.time_entry"})', 0)  # caught up
    prom.wait_for('count(pssync_consumer_lag{topic="cdc.psa.time_entry"})', 1)
    prom.wait_for('count(pssync_table_keys{table="workers"} > 0)', 1)
    # the recording rules evaluate over the scraped series
    prom.wait_for('sum(pssync:open_exceptions:sum{rule="TIME_IN_CLOSED_PERIOD"})', 1)
    rules = prom.get("/api/v1/rules")["data"]["groups"]  # type: ignore[index]
    assert {g["name"] for g in rules} == {"pssync.recording", "pssync.alerts"}
