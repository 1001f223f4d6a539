"""The chaos bench, CI-sized: a small firm streamed for a minute while workers
are SIGKILLed (one losing its state), the broker and the registry restart and the ERP
sink stops, against a fault-free run of the same input (`bench/chaos`).

It runs on a stack of its own (Kafka, registry, Connect, PostgreSQL on ports apart from
the dev stack's, removed afterwards), since it restarts the broker; it fails, never
skips, when Java, Maven or PostgreSQL are missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos.cli import Plan, run_chaos
from bench.chaos.run import Firm, Timers
from bench.chaos.stack import Ports
from pssync.devstack import DevStackError

pytestmark = pytest.mark.kafka

PLAN = Plan(
    firm=Firm(seed=11, workers=200, customers=20, count=12_000),
    timers=Timers(),
    rate=200,
    stream_s=60,
    baseline_rate=0,
    sink_outage_s=15,
    kill_every_s=(10, 20),
    burst_changes=0,
)


def test_faults_change_no_outcome(tmp_path: Path) -> None:
    try:
        outcome = run_chaos(PLAN, Ports(29092, 28081, 28083, 25432), tmp_path)
    except DevStackError as exc:
        pytest.fail(f"the chaos stack could not start: {exc}")
    base, chaos = outcome.base, outcome.chaos

    # the schedule happened: kills (one with the state deleted), both restarts, the outage
    kinds = [e.kind for e in chaos.events]
    assert {"broker", "registry", "sink-stop", "sink-resume"} <= set(kinds)
    assert kinds.count("kill") >= 3
    assert any(k.wiped for k in chaos.kills)
    assert any(not k.wiped for k in chaos.kills)

    # the fault-free run is itself right, and not empty
    assert base.verdict.ok, "\n".join(base.verdict.lines())
    assert len(base.commands) > 1000
    assert base.verdict.expected
    assert base.verdict.expected_dlq

    assert chaos.commands == base.commands
    assert chaos.findings == base.findings
    assert chaos.golden == base.golden
    assert set(chaos.inbox) <= chaos.commands
    assert {rows for rows, _ in chaos.inbox.values()} <= {1}  # none applied twice
    missing = chaos.commands - set(chaos.inbox)
    if missing:
        # a known bug of the ERP sink, not of pssync: while the registry restarts, a sink
        # task that must look a schema up (a task restarted by the broker restart starts
        # with an empty cache) fails in Apicurio's converter, whose cache retries only
        # rate-limited lookups, and errors.tolerance=all sends the command to erp.cmd.dlq
        # and commits past it (bench/results/chaos-*.md; the fix wants a converter that
        # reports an unreachable registry as Connect's RetriableException)
        pytest.xfail(f"ERP sink: {len(missing)} commands dead-lettered by the converter")
    failed = [f"{c.what}: {c.detail}" for c in outcome.checks if not c.ok]
    assert not failed, "\n".join(failed + chaos.verdict.lines())
