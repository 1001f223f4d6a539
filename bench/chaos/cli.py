"""`python -m bench.chaos`: the fault-free run, the chaos run, the burst, and the document.

Starts a stack of its own (`bench.chaos.stack`, ports apart from the shared dev
stack), runs the seeded firm fault-free and then under the chaos schedule (and, unless
`--no-burst`, a burst at `--burst-rate`), prints the checks, writes
`bench/results/chaos-<date>.md`, and removes the stack. Exits 1 if a check fails.

`python -m bench.chaos --minutes 6 --rate 300`
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.chaos.document import write_burst_document, write_document
from bench.chaos.report import Check, checks
from bench.chaos.run import Firm, Run, RunResult, Timers, schedule
from bench.chaos.stack import ChaosStack, Ports, say

RESULTS = Path(__file__).resolve().parent.parent / "results"


@dataclass(frozen=True)
class Plan:
    firm: Firm
    timers: Timers
    rate: float
    stream_s: float
    baseline_rate: float
    sink_outage_s: float
    kill_every_s: tuple[float, float]
    burst_changes: int  # 0: no burst
    # each run (fault-free, chaos, burst) once per guarantee, in this order
    guarantees: tuple[str, ...] = ("at_least_once",)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Plan:
        stream_s = args.minutes * 60
        return cls(
            firm=Firm(args.seed, args.firm_workers, args.customers, int(args.rate * stream_s)),
            timers=Timers(args.grace_s, args.grace_s, args.grace_s, args.timer_wait_s),
            rate=args.rate,
            stream_s=stream_s,
            baseline_rate=args.baseline_rate,
            sink_outage_s=args.sink_outage_s,
            kill_every_s=(args.kill_min_s, args.kill_max_s),
            burst_changes=0 if args.no_burst else args.burst_changes,
            guarantees=GUARANTEES[args.guarantee],
        )


GUARANTEES = {
    "at_least_once": ("at_least_once",),
    "exactly_once": ("exactly_once",),
    "both": ("at_least_once", "exactly_once"),
}


@dataclass
class Outcome:
    base: RunResult
    chaos: RunResult
    burst: RunResult | None
    checks: list[Check]
    minutes: float  # the whole bench, stack included
    guarantee: str = "at_least_once"

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def run_chaos(plan: Plan, ports: Ports, root: Path) -> Outcome:
    """Stack up, the three runs under the plan's first guarantee, stack down."""
    return run_guarantees(plan, ports, root)[0]


def run_guarantees(plan: Plan, ports: Ports, root: Path) -> list[Outcome]:
    """Stack up; for each guarantee, the three runs (the same firm, the same schedule);
    stack down (also when something fails)."""
    stack = ChaosStack(ports, root / "stack")
    outcomes = []
    try:
        stack.up()
        for guarantee in plan.guarantees:
            began = time.monotonic()
            g = guarantee
            base = Run(
                "base", stack, root, plan.firm, plan.timers, plan.baseline_rate, [], guarantee=g
            ).go()
            events = schedule(plan.firm.seed, plan.stream_s, plan.sink_outage_s, plan.kill_every_s)
            chaos = Run(
                "chaos", stack, root, plan.firm, plan.timers, plan.rate, events, guarantee=g
            ).go()
            burst = run_burst(plan, stack, root, g) if plan.burst_changes else None
            minutes = (time.monotonic() - began) / 60
            outcomes.append(Outcome(base, chaos, burst, checks(base, chaos), minutes, g))
    finally:
        stack.down()
    return outcomes


def run_burst(
    plan: Plan, stack: ChaosStack, root: Path, guarantee: str = "at_least_once"
) -> RunResult:
    """A fresh firm (the next seed), all of it in Kafka before two fresh workers start."""
    f = plan.firm
    firm = Firm(f.seed + 1, f.workers, f.customers, plan.burst_changes)
    lines = root / f"burst-{guarantee}.jsonl"
    run = Run("burst", stack, root, firm, plan.timers, 0, [], lines, guarantee=guarantee)
    run.generate()
    return run.go()


def burst_only(plan: Plan, ports: Ports, root: Path) -> RunResult:
    stack = ChaosStack(ports, root / "stack")
    try:
        stack.up()
        return run_burst(plan, stack, root)
    finally:
        stack.down()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--minutes", type=float, default=6.0, help="the chaos run's stream")
    p.add_argument("--rate", type=float, default=300, help="changes/s offered while streaming")
    p.add_argument("--seed", type=int, default=7, help="the firm's and the faults' seed")
    p.add_argument("--firm-workers", type=int, default=1000, help="the firm's HR workers")
    p.add_argument("--customers", type=int, default=100)
    p.add_argument("--baseline-rate", type=float, default=0, help="0: the firm as a backlog")
    p.add_argument("--sink-outage-s", type=float, default=120)
    p.add_argument("--kill-min-s", type=float, default=30, help="between SIGKILLs, at least")
    p.add_argument("--kill-max-s", type=float, default=70, help="between SIGKILLs, at most")
    p.add_argument("--grace-s", type=float, default=60, help="the timers (simulated seconds)")
    p.add_argument(
        "--timer-wait-s", type=float, default=65, help="wall seconds for the last timers"
    )
    p.add_argument(
        "--burst-changes",
        type=int,
        default=60_000,
        help="a firm written beforehand, then offered as fast as `pssync produce` sends it",
    )
    p.add_argument("--no-burst", action="store_true")
    p.add_argument(
        "--guarantee",
        choices=sorted(GUARANTEES),
        default="both",
        help="PSSYNC_PROCESSING_GUARANTEE of the workers; both: every run under each",
    )
    p.add_argument("--burst-only", action="store_true", help="only the burst (its own document)")
    p.add_argument(
        "--ports",
        type=int,
        nargs=4,
        default=[19092, 18081, 18083, 15432],
        metavar=("KAFKA", "REGISTRY", "CONNECT", "POSTGRES"),
    )
    p.add_argument("--keep", type=Path, help="keep the workers' logs and state here")
    p.add_argument(
        "--results", type=Path, help="the document (default bench/results/chaos-<date>.md)"
    )
    return p


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds, so the stack is torn down


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    plan = Plan.from_args(args)
    ports = Ports(*args.ports)
    with tempfile.TemporaryDirectory(prefix="pssync-chaos-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        if args.burst_only:
            burst = burst_only(plan, ports, root)
        else:
            outcomes = run_guarantees(plan, ports, root)
    now = dt.datetime.now(dt.UTC)
    command = "python -m bench.chaos " + shlex.join(sys.argv[1:] if argv is None else argv)
    cpu = platform.processor() or platform.machine()
    machine = f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
    if args.burst_only:
        path = args.results or RESULTS / f"chaos-burst-{now:%Y-%m-%d-%H%M}.md"
        write_burst_document(path, burst, plan, command, machine, now)
        say(f"results in {path}")
        return 0 if burst.verdict.ok else 1
    for outcome in outcomes:
        for check in outcome.checks:
            ok = "ok  " if check.ok else "FAIL"
            print(f"{ok} [{outcome.guarantee}] {check.what}: {check.detail}")
    path = args.results or RESULTS / f"chaos-{now:%Y-%m-%d-%H%M}.md"
    write_document(path, outcomes, plan, command, machine, now)
    minutes = sum(o.minutes for o in outcomes)
    say(f"results in {path}; the runs took {minutes:.1f} min")
    return 0 if all(o.ok for o in outcomes) else 1
