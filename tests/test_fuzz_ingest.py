"""The hostile-input fuzzing of `bench/fuzz` at CI size, and its two giant values.

The full run (`python -m bench.fuzz --cases 100000`) is the same code with more
cases; here a few thousand, seeded, must give zero crashes, hangs and wrong
outcomes, every case kind seen, and every dead letter with its stage and error.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.fuzz import Cases, Outcomes, Runner, giant_cases, run
from bench.fuzz.runner import Hang
from pssync.streams.worker_flow import WorkerFlow

CI_CASES = 3_000


@pytest.fixture(scope="module")
def outcomes() -> Outcomes:
    return run(CI_CASES, seed=2026, produce_share=0.3, huge=64 * 1024, case_timeout_s=10.0)


def test_no_crash_no_hang_no_wrong_outcome(outcomes: Outcomes) -> None:
    assert outcomes.cases == CI_CASES
    assert outcomes.crashes == []
    assert outcomes.hangs == []
    assert outcomes.wrong == []
    assert not outcomes.flow_failures
    assert outcomes.slowest[0] < 2.0, outcomes.slowest


def test_every_kind_of_case_ran_and_came_out_as_it_must(outcomes: Outcomes) -> None:
    kinds = {kind for kind, _ in outcomes.by_kind}
    assert set(Cases.INGEST_KINDS) <= kinds
    assert {"line_good", "line_field", "line_shape", "line_text", "line_tombstone"} <= kinds
    count = outcomes.by_kind
    for kind in ("truncate", "trailing", "bad_magic", "too_short", "unknown_id", "bad_enum"):
        assert count[(kind, "dead")] > 0, kind
        assert count[(kind, "change")] == 0, kind
    for kind in ("good", "odd_unicode", "edge_dates", "plain_writer", "evolved_writer"):
        assert count[(kind, "change")] > 0, kind
        assert count[(kind, "dead")] == 0, kind
    assert count[("tombstone_garbage_key", "tombstone")] > 0
    assert count[("line_good", "sent")] > 0
    assert count[("line_good", "rejected")] == 0
    assert count[("line_text", "rejected")] > 0


def test_dead_letters_name_their_stage_and_error(outcomes: Outcomes) -> None:
    reasons = outcomes.reasons
    assert reasons["decode:DecodeError"] > 0
    assert reasons["decode:UnknownSchemaId"] > 0
    assert reasons["validate:ValidationError"] > 0
    assert reasons["validate:JsonFormError"] > 0
    assert reasons["line:not valid JSON"] > 0
    # what passed was routed, and the keyed flows made outputs from it
    assert outcomes.routed > CI_CASES // 3
    assert outcomes.emits > 0


def test_a_50_mb_string_and_a_million_digit_decimal_stay_within_their_bound() -> None:
    started = time.perf_counter()
    giant = giant_cases(seed=7)
    assert giant.crashes == []
    assert giant.hangs == []
    assert giant.wrong == []
    assert giant.by_kind[("string_50MB", "change")] == 1
    assert giant.by_kind[("decimal_giant", "dead")] == 1
    assert time.perf_counter() - started < 60


def test_a_hang_is_reported_not_waited_for(tmp_path: Path) -> None:
    runner = Runner(tmp_path, seed=1, case_timeout_s=0.2)
    try:
        with pytest.raises(Hang, match=r"over 0\.2s"):
            runner._bounded(lambda: time.sleep(5))
    finally:
        runner.close()
    # the keyed flows dead-letter an `Exception` out of a change or timer and go on: a
    # hang there would be swallowed (and spin on) if `Hang` were one
    assert not issubclass(Hang, Exception)


def test_a_hang_in_the_keyed_flows_names_its_delivery_its_cases_and_where_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery is the flows' batch for the 25 cases routed before it (and the timers
    they bring due): a hang there is reported with the delivery, the cases whose changes
    it held and what the flow was doing, not as a hang of the case that made it due."""

    def stuck(*args: object) -> None:
        time.sleep(30)

    monkeypatch.setattr(WorkerFlow, "apply", stuck)
    runner = Runner(tmp_path, seed=2026, case_timeout_s=5.0, delivery_timeout_s=0.3)
    try:
        while not runner.out.hangs:
            runner.run_ingest(runner.cases.ingest())
        (hang,) = runner.out.hangs
        assert hang.stage == "delivery"
        assert (hang.delivery, runner.out.deliveries) == (1, 1)
        assert hang.batch is not None
        assert hang.batch == (0, hang.case) == (0, runner.out.cases - 1)
        assert 0.3 <= hang.seconds < 5
        assert hang.where.startswith("WorkerFlow._release: 0 changes applied, 0 timers fired")
        assert "; applying a change of cdc." in hang.where
        assert "flow.py:" in hang.where
        assert "worker_flow.py" not in hang.where  # its `apply` is the stuck one
        assert "hang" not in {outcome for _, outcome in runner.out.by_kind}  # no case hung
        described = hang.describe()
        assert f"case {hang.case} ({hang.kind} on {hang.topic}), delivery 1" in described
        assert f"(the changes of cases 0-{hang.case})" in described
    finally:
        runner.close()


def test_bounds_nest_an_inner_one_ends_first_and_the_outer_runs_on(tmp_path: Path) -> None:
    runner = Runner(tmp_path, seed=1, case_timeout_s=0.3)

    def inner_then_spin() -> None:
        runner._bounded(lambda: None, 0.05)
        time.sleep(5)  # the outer bound still holds after the inner one ended

    try:
        started = time.perf_counter()
        with pytest.raises(Hang, match=r"over 0\.3s"):
            # the inner bound (5 s) would outlast the outer (0.3 s): the outer's Hang
            runner._bounded(lambda: runner._bounded(lambda: time.sleep(5), 5.0))
        with pytest.raises(Hang, match=r"over 0\.05s"):
            runner._bounded(lambda: runner._bounded(lambda: time.sleep(1), 0.05), 0.2)
        with pytest.raises(Hang, match=r"over 0\.2s"):
            runner._bounded(inner_then_spin, 0.2)
        assert time.perf_counter() - started < 2
    finally:
        runner.close()
