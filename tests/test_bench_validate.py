"""`python -m bench.validate` at CI size: validation on demand under concurrent load.

A smoke run, not a speed test: no latency is compared with a threshold. It checks
that the benchmark runs on the real stack, that every one of the concurrent
requests was answered 200 with every gate check (the benchmark fails otherwise),
and that the results file holds both rows and the ratio.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SettingsFactory, settings_env

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[1]


def test_concurrent_validations_are_all_answered_and_reported(
    settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    env = settings_env(settings_factory())
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "bench.validate", "--requests", "200", "--rounds", "2"]
    cmd += ["--count", "1500", "--results", str(results)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    (table,) = results.glob("validate-*.md")
    text = table.read_text()
    assert "| POST /api/validate/project |" in text
    assert "| GET /health (the floor) |" in text
    (raw,) = results.glob("validate-*.json")
    result = json.loads(raw.read_text())
    assert result["requests"] == 200
    assert len(result["rounds"]) == 2
    for row in result["rounds"]:
        for kind in ("validate", "health"):
            assert 0 < row[kind]["p50_ms"] <= row[kind]["p99_ms"] <= row[kind]["max_ms"]
    assert result["p99_ratio"] > 0
