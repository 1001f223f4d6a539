"""Same answers at any speed, on the real stack: a seeded firm with every rule's fault,
streamed in real time to a running worker, and produced whole before a fresh worker
(and before two fresh workers) starts, gives the same command IDs, the same final
alert and exception states and the same golden records, all matching the truth.
(The same check without Kafka, over many more arrival orders: `test_equivalence.py`;
the 3,000-worker run: `python -m bench.backlog`.)"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pssync.avro.contract import CDC_TOPICS, OUTPUT_TOPICS
from pssync.settings import Settings
from pssync.simulate import RULE_KINDS
from pssync.simulate.verify import comparable, compare, load_truth
from tests.conftest import SettingsFactory, WorkerFactory, settings_env
from tests.kafka_helpers import collect, create_topics, wait_drained

pytestmark = pytest.mark.kafka

FAULTS = [f"--fault={k}=0.35" for k in RULE_KINDS] + [
    "--fault=DUPLICATE=0.02",
    "--fault=UNDECODABLE=0.02",
]
OUTPUTS = list(OUTPUT_TOPICS)
# Timers count on event time, here the simulated clock, which runs ~70 times faster than
# the wall clock while the firm streams at 400 changes/s: a few ms of pipeline jitter
# are seconds of simulated time, so the timers are well beyond that. Once every source
# is idle, event time moves with the wall clock: the last ones come due 30 s after.
TIMERS = {"orphan_grace_s": 30, "project_setup_sla_s": 30, "dependency_timeout_s": 30}


def simulate(settings: Settings, rate: float, truth: Path) -> None:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pssync", "simulate", "--seed", "12", "--days", "35"),
            *("--rate", str(rate), "--fault-rate", "0", *FAULTS, "--truth", str(truth)),
            *("--progress", "60"),
        ],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def settle(settings: Settings) -> None:
    """Everything read and applied, and the timers of the last simulated seconds fired
    (once every source is idle, stream time moves with the clock)."""
    topics = [settings.topic(t) for t in CDC_TOPICS] + [
        settings.internal_topic(t) for t in ("worker-keyed", "project-keyed")
    ]
    wait_drained(settings, topics, timeout_s=600)
    time.sleep(TIMERS["dependency_timeout_s"] + 2)
    wait_drained(settings, topics, timeout_s=120)


def outcome(settings: Settings) -> dict[str, Any]:
    out = {t: collect(settings, [t], idle_s=1.5) for t in OUTPUTS}
    commands = sorted(
        r["value"]["command_id"] for t in OUTPUTS if t.startswith("erp.cmd.") for r in out[t]
    )
    findings: dict[str, Any] = {}
    for topic in ("sync.drift", "sync.exceptions"):
        for r in out[topic]:
            v = r["value"]
            findings[r["key"]] = comparable(v)
    golden = {(t, r["key"]): r["value"] for t in OUTPUTS if "reconciled" in t for r in out[t]}
    verified = [r for t in OUTPUTS for r in out[t]]
    return {
        "commands": commands,
        "findings": findings,
        "golden": golden,
        # one per bad input (a rebalance may send one twice), by what it was: the
        # garbage goes to Kafka through its own producer, so its offsets vary per run
        "dlq": {
            (r["value"]["original_topic"].split(".", 1)[-1], r["value"]["key"], r["value"]["value"])
            for r in out["sync.dlq"]
        },
        "records": verified,
    }


def check_truth(result: dict[str, Any], truth: Path) -> None:
    verdict = compare(load_truth(truth), result["records"])
    report = "\n".join(verdict.lines())
    assert verdict.missing == set(), report
    assert verdict.unexpected == set(), report
    assert verdict.posts == verdict.expected_posts > 0, report
    assert verdict.dlq == verdict.expected_dlq, report


def test_streamed_and_backlog_and_two_workers_give_the_same_outputs(
    settings_factory: SettingsFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    runs: dict[str, dict[str, Any]] = {}

    streamed = settings_factory(**TIMERS, batch_size=2000)
    create_topics(streamed)
    worker_factory(streamed)
    simulate(streamed, 400, tmp_path / "truth.jsonl")
    settle(streamed)
    runs["streamed"] = outcome(streamed)
    check_truth(runs["streamed"], tmp_path / "truth.jsonl")

    for name, workers in (("backlog", 1), ("backlog, two workers", 2)):
        backlog = settings_factory(**TIMERS, batch_size=2000)
        create_topics(backlog)
        simulate(backlog, 0, tmp_path / f"truth-{workers}.jsonl")  # produced before any worker
        for _ in range(workers):
            worker_factory(backlog)
        settle(backlog)
        runs[name] = outcome(backlog)
        check_truth(runs[name], tmp_path / f"truth-{workers}.jsonl")

    reference = runs["streamed"]
    for name, result in runs.items():
        assert sorted(set(result["commands"])) == sorted(set(reference["commands"])), name
        if "two" not in name:  # no rebalance, no replayed batch: each command sent once
            assert len(set(result["commands"])) == len(result["commands"]), name
        assert result["findings"] == reference["findings"], name
        assert result["golden"] == reference["golden"], name
        assert result["dlq"] == reference["dlq"], name
