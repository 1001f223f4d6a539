"""The simulator through a worker: every injected fault is detected, nothing fires without one."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from pssync.avro.contract import CDC_TOPICS
from pssync.simulate import RULE_KINDS
from pssync.simulate.verify import compare, load_truth
from tests.conftest import SettingsFactory, WorkerFactory, settings_env
from tests.kafka_helpers import collect, create_topics, wait_drained

pytestmark = pytest.mark.kafka

RULE_FAULTS = list(RULE_KINDS)


RULES = [f"--fault={kind}=0.35" for kind in RULE_FAULTS]
TRANSPORT = ["--fault=DUPLICATE=0.02", "--fault=UNDECODABLE=0.02"]
# (seed, days, faults, kinds that must be injected): seeds chosen so that every
# kind occurs; late hires (the only OUT_OF_ORDER case) are rare, so a run of their own
RUNS = {
    "every-rule": (12, 35, RULES + TRANSPORT, [*RULE_FAULTS, "DUPLICATE", "UNDECODABLE"]),
    "out-of-order": (
        3,
        20,
        ["--fault=OUT_OF_ORDER=1", "--fault=DUPLICATE=0.05"],
        ["OUT_OF_ORDER", "DUPLICATE"],
    ),
}


@pytest.mark.parametrize("run", sorted(RUNS))
def test_every_injected_fault_is_detected_and_nothing_fires_without_a_cause(
    run: str, settings_factory: SettingsFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    seed, days, faults, must_inject = RUNS[run]
    # timers count on event time: the simulated clock while the stream flows, the wall
    # clock once every source is idle (the last ones come due a few seconds after the end)
    settings = settings_factory(
        orphan_grace_s=4,
        project_setup_sla_s=4,
        dependency_timeout_s=10,
        batch_size=2000,
    )
    create_topics(settings)
    worker_factory(settings)
    truth_path = tmp_path / "truth.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pssync",
            "simulate",
            "--seed",
            str(seed),
            "--days",
            str(days),
            "--rate",
            "0",
            "--fault-rate",
            "0",
            *faults,
            "--truth",
            str(truth_path),
            "--progress",
            "60",
        ],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    truth = load_truth(truth_path)
    injected = {f["fault"] for f in truth[1:]}
    assert set(must_inject) <= injected, sorted(set(must_inject) - injected)

    drained_topics = [settings.topic(t) for t in CDC_TOPICS] + [
        settings.internal_topic(t) for t in ("worker-keyed", "project-keyed")
    ]
    wait_drained(settings, drained_topics, timeout_s=300)
    time.sleep(12)  # the timed rules (grace, SLA, dependency timeout) come due
    wait_drained(settings, drained_topics, timeout_s=120)
    outputs = collect(
        settings, ["sync.drift", "sync.exceptions", "sync.dlq", "erp.cmd.time_entry"], idle_s=2
    )
    verdict = compare(truth, outputs)
    report = "\n".join(verdict.lines())
    assert verdict.missing == set(), report
    assert verdict.unexpected == set(), report
    assert verdict.posts == verdict.expected_posts > 0, report
    assert verdict.dlq == verdict.expected_dlq, report
