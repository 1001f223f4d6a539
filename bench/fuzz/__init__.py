"""Hostile input over the ingest path (decode, validate, route) and `pssync produce`.

A seeded, dependency-free fuzzer: every case is one hostile record followed, in the
same batch, by a good one, decoded by the worker's `Decoder` against an in-memory
schema registry, and the changes that come out are routed (`IngestSpec.plan` over
real link stores) and processed by the keyed flows of an `OfflinePipeline`. A
`pssync produce` case is one JSONL line, parsed by `connectors.jsonl.parse_line`,
encoded with the codec and decoded back.

What is checked, per case:
- nothing raises out of decode, routing, the keyed flows or `parse_line` (a crash);
- no case takes longer than `--case-timeout` (a hang; a timer interrupts it), and no
  delivery to the keyed flows longer than `--delivery-timeout`: a delivery is the flows'
  batch for the 25 cases routed before it, plus every timer those bring due (up to
  `FlowConfig.max_timers`), so it is bounded on its own, and a hang there is reported
  with its delivery, the cases whose changes it held and where the flows were;
- each input record ends as exactly one change, tombstone or dead letter, and each
  dead letter names its stage, error class and message;
- a case whose outcome is known (a truncated record is dead, a good one a change
  equal to what was written) has that outcome, and the good record after it too;
- a produce line is either sent (encodes and decodes back to the same JSON form) or
  rejected with `line N: <field>: <what>`.

    python -m bench.fuzz --cases 100000            # the full run (results in bench/results)
    python -m bench.fuzz --cases 2000 --no-results  # a quick look

The test suite runs the same cases at CI size (`tests/test_fuzz_ingest.py`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import random
import shutil
import tempfile
import time
from pathlib import Path

from bench.fuzz.cases import Cases
from bench.fuzz.runner import Outcomes, Runner

__all__ = ["Cases", "Outcomes", "Runner", "giant_cases", "main", "run"]

RESULTS = Path(__file__).resolve().parents[1] / "results"  # bench/results, with the others

# -- the full run -----------------------------------------------------------------------------


def run(
    cases: int,
    seed: int,
    produce_share: float,
    huge: int,
    case_timeout_s: float,
    delivery_timeout_s: float = 60.0,
    progress: int = 10_000,
) -> Outcomes:
    root = Path(tempfile.mkdtemp(prefix="pssync-fuzz-"))
    runner = Runner(root, seed, case_timeout_s, huge, delivery_timeout_s)
    started = time.perf_counter()
    try:
        for i in range(cases):
            if runner.cases.rng.random() < produce_share:
                runner.run_line(*runner.cases.line())
            else:
                runner.run_ingest(runner.cases.ingest())
            if progress and i % progress == progress - 1:
                out = runner.out
                print(
                    f"  {i + 1} cases in {time.perf_counter() - started:.0f} s: "
                    f"{len(out.crashes)} crashes, {len(out.hangs)} hangs, "
                    f"{len(out.wrong)} wrong; {out.deliveries} deliveries, the slowest "
                    f"{out.slowest_delivery.describe()}",
                    flush=True,
                )
        runner.finish(3_600_000)
        return runner.out
    finally:
        runner.close()
        shutil.rmtree(root, ignore_errors=True)


def giant_cases(seed: int) -> Outcomes:
    """The two largest values the issue names, once each: a 50 MB string and a decimal of
    10^6 digits, through decode and routing, each under the time bound."""
    root = Path(tempfile.mkdtemp(prefix="pssync-fuzz-giant-"))
    runner = Runner(root, seed, case_timeout_s=60.0, huge=50 * 1024 * 1024)
    try:
        runner.cases.rng = random.Random(seed)
        case = runner.cases._huge_string("cdc.hr.worker")
        case.kind = "string_50MB"
        runner.run_ingest(case)
        runner.cases.huge_digits = 1_000_000
        case = runner.cases._huge_decimal("cdc.psa.time_entry")
        while "decimal_giant" not in case.kind and len(case.value or b"") < 400_000:
            case = runner.cases._huge_decimal("cdc.psa.time_entry")
        case.kind = "decimal_giant"
        runner.run_ingest(case)
        runner.deliver()
        return runner.out
    finally:
        runner.close()
        shutil.rmtree(root, ignore_errors=True)


def report(out: Outcomes, giant: Outcomes, args: argparse.Namespace, seconds: float) -> str:
    lines = [
        f"# Fuzzing the ingest path and `pssync produce` ({dt.date.today().isoformat()})",
        "",
        f"Command: `python -m bench.fuzz --cases {args.cases} --seed {args.seed}`  ",
        f"{out.cases} cases in {seconds:.0f} s ({out.cases / seconds:.0f} cases/s; seed "
        f"{args.seed}, case time bound {args.case_timeout:g} s, delivery time bound "
        f"{args.delivery_timeout:g} s, huge strings up to {args.huge} bytes); plus "
        f"{giant.cases} giant cases (a 50 MB string, a decimal of up to 10^6 digits).",
        "",
        f"- crashes: **{len(out.crashes) + len(giant.crashes)}**",
        f"- hangs: **{len(out.hangs) + len(giant.hangs)}**",
        f"- wrong outcomes: **{len(out.wrong) + len(giant.wrong)}**",
        f"- keyed-flow failures (dead-lettered): **{sum(out.flow_failures.values())}**",
        f"- changes routed through the keyed flows: {out.routed}; "
        f"outputs they emitted: {out.emits}",
        f"- slowest case: {out.slowest[0] * 1000:.1f} ms "
        f"({out.slowest[1]}: `{out.slowest[2][:160]}`)",
        f"- deliveries to the keyed flows (every 25 cases with changes): {out.deliveries}; "
        f"slowest {out.slowest_delivery.describe()}",
        f"- giant cases: {_giant_line(giant)}",
        "",
        "## Outcome per case kind",
        "",
        "| case kind | change | tombstone | dead | sent | rejected | crash | hang |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    kinds = sorted({k for k, _ in out.by_kind})
    for kind in kinds:
        cells = [
            str(out.by_kind.get((kind, o), 0))
            for o in ("change", "tombstone", "dead", "sent", "rejected", "crash", "hang")
        ]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Dead letters and rejected lines per reason",
        "",
        "| reason | count |",
        "|---|---:|",
    ]
    lines += [f"| {r} | {n} |" for r, n in sorted(out.reasons.items(), key=lambda x: -x[1])]
    for title, items in (
        ("Crashes", out.crashes + giant.crashes),
        ("Wrong outcomes", out.wrong + giant.wrong),
    ):
        if items:
            lines += ["", f"## {title}", ""]
            lines += [f"- `{str(item)[:400]}`" for item in items[:30]]
    hangs = out.hangs + giant.hangs
    if hangs:
        lines += ["", "## Hangs", ""]
        lines += [
            f"- {hang.describe()[:1000]}\n  `{str(hang.detail)[:400]}`" for hang in hangs[:30]
        ]
    if out.flow_failures:
        lines += ["", "## Keyed-flow failures", ""]
        lines += [f"- {n} x `{what}`" for what, n in out.flow_failures.most_common(20)]
    return "\n".join(lines) + "\n"


def _giant_line(giant: Outcomes) -> str:
    kinds = ", ".join(f"{k} -> {o}" for (k, o), n in sorted(giant.by_kind.items()))
    return f"{kinds}; slowest {giant.slowest[0]:.2f} s ({giant.slowest[1]})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--produce-share", type=float, default=0.3)
    parser.add_argument("--huge", type=int, default=1 << 20, help="largest huge string (bytes)")
    parser.add_argument("--case-timeout", type=float, default=10.0, help="seconds")
    parser.add_argument(
        "--delivery-timeout",
        type=float,
        default=60.0,
        help="seconds a delivery to the keyed flows may take: the flows' work for 25 cases "
        "and the timers those bring due (up to FlowConfig.max_timers)",
    )
    parser.add_argument("--progress", type=int, default=10_000, help="a line every N cases")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder")
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args(argv)
    logging.getLogger("pssync").setLevel(logging.ERROR)  # one warning per dead letter
    started = time.perf_counter()
    out = run(
        args.cases,
        args.seed,
        args.produce_share,
        args.huge,
        args.case_timeout,
        args.delivery_timeout,
        args.progress,
    )
    giant = giant_cases(args.seed)
    text = report(out, giant, args, time.perf_counter() - started)
    print(text)
    if not args.no_results:
        args.results.mkdir(parents=True, exist_ok=True)
        path = args.results / f"fuzz-{dt.date.today().isoformat()}.md"
        path.write_text(text)
        print(f"results: {path}")
    return 0 if out.ok and giant.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
