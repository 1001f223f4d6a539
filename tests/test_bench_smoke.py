"""`./run bench` at CI size: the whole benchmark runs on the real stack and reports.

A smoke run, not a speed test: no figure is compared with a threshold. It checks that
every part the table promises ran and measured something (the raw ceiling, pssync end
to end with its two stages, the Quix Streams peer, latency at an offered rate, restart
after SIGTERM and SIGKILL, a rebuild from changelogs, peak RSS), that the results file
holds the table and the command that made it, and that pssync's outputs equal the
simulator's truth. Run as a subprocess, as `./run bench` runs it (Quix Streams' imports
warn, which this suite turns into errors).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SettingsFactory, settings_env

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[1]


def test_the_small_workload_runs_every_part_and_matches_the_truth(
    settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    env = settings_env(settings_factory())
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "bench.speed", "--workload", "small", "--runs", "1"]
    cmd += ["--rates", "1000", "--latency-s", "3", "--rebuild-keys", "20000"]
    cmd += ["--results", str(results), "--keep", str(tmp_path / "runs")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    (table,) = results.glob("small-*.md")
    text = table.read_text()
    assert "./run bench --workload small" in text
    for row in (
        "raw ceiling",
        "pssync end to end, 1 worker",
        "ingest stage",
        "keyed stage",
        "peak RSS",
        "Quix Streams peer",
        "latency @1,000/s",
        "restart",
        "rebuild",
        "outputs equal the simulator's truth | yes",
    ):
        assert row in text, row

    report = json.loads(table.with_suffix(".json").read_text())
    assert report["ceiling"]["records"] > 5000
    (run,) = report["pssync"]
    assert run["truth_ok"]
    assert run["seconds"] > 0
    assert run["ingest_busy_s"] > 0
    assert run["keyed_busy_s"] > 0
    assert 50 < run["peak_rss_mib"] < 4096
    assert report["peer"]["outputs"]["POST_TIME_ENTRY"] > 0
    latencies = report["latency"]
    assert {lat["tight"] for lat in latencies} == {False, True}
    assert all(lat["outputs"] > 0 and not math.isnan(lat["p99_ms"]) for lat in latencies)
    assert report["rebuild"]
    assert report["restart"]
