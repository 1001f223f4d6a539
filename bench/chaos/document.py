"""The chaos bench's results document (`bench/results/chaos-<date>.md`): figures and the
command that reproduces them."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import TYPE_CHECKING

from bench.chaos.report import duplicates_in_run, fmt, lag_series, median, peak, redundant
from bench.chaos.run import RunResult
from bench.chaos.workers import Sample

if TYPE_CHECKING:
    from bench.chaos.cli import Outcome, Plan

BOUNDS = """\
What bounds a worker's memory, whatever the backlog (each a setting, not the input's size):

- the consumer hands agents batches of at most `PSSYNC_BATCH_SIZE` records (1,000),
  and Faust's per-partition stream buffers and aiokafka's fetches hold a fixed number
  of records or bytes; records beyond them wait in Kafka, which is where the backlog
  lives;
- a keyed flow writes every routed change into RocksDB as it arrives (the alignment
  buffer, `q/...` keys) and releases at most `FlowConfig.max_release` (20,000) of
  them per batch (`streams/flow.py`), so a release never materialises the backlog;
- each RocksDB partition's memtable is 16 MB (`tables/store.py`), flushed to disk;
  the batch's state view caches only the keys that batch touched.
"""


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def mib(values: list[float]) -> str:
    return ", ".join(f"{m:.0f}" for m in values) or "-"


def _burst(burst: RunResult, plan: Plan) -> list[str]:
    samples = burst.samples
    rate = plan.burst_changes / burst.offered_s
    lags = [(s.at_s, s.lag) for s in samples if s.lag is not None]
    top_at, top = max(lags, key=lambda x: x[1]) if lags else (math.nan, 0)
    end_at = samples[-1].at_s if samples else 0.0
    recovered = next((t for t, lag in lags if t > top_at and lag <= 100), math.nan)
    out = [
        "## Burst: resource bounds",
        "",
        f"A fresh firm (seed {plan.firm.seed + 1}, {plan.burst_changes:,} changes) written "
        f"to Kafka with `pssync produce` ({rate:,.0f} changes/s over {burst.offered_s:.0f} s, "
        f"{rate / plan.rate:.0f}x the chaos run's rate) before two fresh workers start: the "
        "whole burst is waiting when they do, which no sustained rate can match. The group's "
        "lag (CDC and keyed topics, from its committed offsets) and each worker's resident "
        "memory are sampled every second from the workers' start.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| peak lag | {top:,} records, at {top_at:.0f} s |",
        row(
            "lag back under 100 records",
            f"at {fmt(recovered)} s ({fmt(recovered - top_at)} s after the peak)",
        ),
        row("everything drained (stream start to the last keyed record)", f"{burst.seconds:.0f} s"),
        row("peak RSS (VmHWM), per worker", f"{mib(_peaks(samples))} MiB"),
        row(
            "RSS at the lag's peak / at the end",
            f"{_rss_at(samples, top_at)} / {_rss_at(samples, end_at)} MiB",
        ),
        f"| outputs against the simulator's truth | {'yes' if burst.verdict.ok else 'NO'} |",
        "",
        "Over time (every 10 s): lag, and each worker's RSS in MiB:",
        "",
        "| t (s) | lag | RSS |",
        "|---:|---:|---|",
    ]
    for s in lag_series(samples, 10):
        rss = ", ".join(f"{m:.0f}" for m in s.rss_mib)
        out.append(f"| {s.at_s:.0f} | {'-' if s.lag is None else f'{s.lag:,}'} | {rss} |")
    out += ["", BOUNDS]
    return out


def _peaks(samples: list[Sample]) -> list[float]:
    width = max((len(s.hwm_mib) for s in samples), default=0)
    return [peak([s.hwm_mib[i] for s in samples if len(s.hwm_mib) > i]) for i in range(width)]


def _rss_at(samples: list[Sample], at_s: float) -> str:
    near = min(samples, key=lambda s: abs(s.at_s - at_s), default=None)
    return ", ".join(f"{m:.0f}" for m in near.rss_mib) if near else "-"


GUARANTEE_TEXT = {
    "at_least_once": "at-least-once with deterministic IDs (the default)",
    "exactly_once": "exactly-once: each batch one Kafka transaction (outputs, changelogs "
    "and input offsets); outputs read with isolation.level=read_committed",
}


def write_document(
    path: Path,
    outcomes: list[Outcome],
    plan: Plan,
    command: str,
    machine: str,
    now: dt.datetime,
) -> None:
    f = plan.firm
    offered = "as a backlog" if plan.baseline_rate == 0 else f"at {plan.baseline_rate:.0f}/s"
    minutes = sum(o.minutes for o in outcomes)
    lines = [
        f"# Chaos run, {now:%Y-%m-%d %H:%M} UTC",
        "",
        f"`{command}` ({minutes:.0f} minutes of runs, on {machine}; the stack is the "
        "bench's own: Kafka, Apicurio Registry with its schemas on disk, Kafka Connect with "
        "the JDBC sink, PostgreSQL, on ports apart from the dev stack's).",
        "",
        f"The firm: seed {f.seed}, {f.workers} HR workers, {f.customers} customers, "
        f"{f.count:,} changes with the simulator's injected faults. The fault-free run "
        f"offers it {offered}; "
        f"the chaos run streams it at {plan.rate:.0f} changes/s ({plan.stream_s / 60:.1f} min), "
        "each with two workers in one group (static membership, 3 partitions per topic). "
        "Processing guarantees: "
        + "; then ".join(GUARANTEE_TEXT[o.guarantee] for o in outcomes)
        + ", each with every run.",
        "",
    ]
    if len(outcomes) > 1:
        lines += _compare(outcomes, plan)
    for outcome in outcomes:
        lines += _sections(outcome, plan, len(outcomes) > 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _compare(outcomes: list[Outcome], plan: Plan) -> list[str]:
    """The guarantees side by side: what a crash re-sends, and what each costs."""
    lines = [
        "## The two guarantees side by side",
        "",
        "Redundant records: output records of the chaos run beyond the fault-free run's "
        "(what crashes re-sent), and records identical to an earlier one of the same run. "
        "Throughput: the burst (the whole firm in Kafka before two fresh workers start), "
        "its changes over the time from the workers' start to everything drained; and the "
        "fault-free run, offered as fast as the simulator writes it.",
        "",
        row(
            "guarantee",
            "redundant records (chaos)",
            "repeats (chaos)",
            "commands re-sent",
            "burst changes/s",
            "vs at-least-once",
            "fault-free changes/s",
            "all checks held",
        ),
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    first = None
    for o in outcomes:
        burst = plan.burst_changes / o.burst.seconds if o.burst is not None else math.nan
        first = burst if first is None else first
        base_rate = plan.firm.count / o.base.seconds
        lines.append(
            row(
                o.guarantee,
                sum(redundant(o.base, o.chaos).values()),
                sum(duplicates_in_run(o.chaos).values()),
                o.chaos.sent - len(o.chaos.commands),
                fmt(burst),
                "-" if math.isnan(burst) else f"{burst / first:.2f}x",
                fmt(base_rate),
                "yes" if o.ok else "**NO**",
            )
        )
    return [*lines, ""]


def _sections(outcome: Outcome, plan: Plan, titled: bool) -> list[str]:
    base, chaos = outcome.base, outcome.chaos
    lines = [f"# {outcome.guarantee}", ""] if titled else []
    lines += [
        "## Checks: chaos against fault-free",
        "",
        "| check | held | figures |",
        "|---|---|---|",
    ]
    lines += [f"| {c.what} | {'yes' if c.ok else '**NO**'} | {c.detail} |" for c in outcome.checks]
    extra = redundant(base, chaos)
    dups = duplicates_in_run(chaos)
    lines += [
        "",
        "## Redundant output records (re-sent after a crash)",
        "",
        f"Commands: {chaos.sent:,} records for {len(chaos.commands):,} command_ids "
        f"({chaos.sent - len(chaos.commands)} re-sent; "
        f"fault-free: {base.sent - len(base.commands)}).",
        "",
        row("topic", "fault-free records", "chaos records", "more in chaos", "repeats in chaos"),
        "|---|---:|---:|---:|---:|",
    ]
    for topic, more in extra.items():
        lines.append(
            row(
                topic,
                f"{base.per_topic[topic]:,}",
                f"{chaos.per_topic[topic]:,}",
                more,
                dups[topic],
            )
        )
    total = sum(extra.values())
    lines += [
        f"| **all** | {sum(base.per_topic.values()):,} | {sum(chaos.per_topic.values()):,} | "
        f"**{total}** | {sum(dups.values())} |",
        "",
        "## The faults, as they happened",
        "",
        "| t (s) | fault | took (s) |",
        "|---:|---|---:|",
    ]
    for e in chaos.events:
        what = {
            "kill": f"SIGKILL worker {e.slot}{', state deleted' if e.wipe else ''}, restarted",
            "broker": "broker restarted (SIGTERM, start)",
            "registry": "schema registry restarted (SIGTERM, start)",
            "sink-stop": "ERP sink stopped (Connect REST: stop)",
            "sink-resume": "ERP sink resumed",
        }[e.kind]
        lines.append(f"| {e.done_at_s - e.took_s:.0f} | {what} | {fmt(e.took_s)} |")
    lines += [
        "",
        "Stall after each SIGKILL: from the kill to the new process's /ready (its partitions "
        "back, state restored) and to its first record consumed (a dash: the stream had "
        "ended). Static membership: the restarted member has the same `group.instance.id`.",
        "",
        "| t (s) | worker | state deleted | to ready (s) | to first record (s) |",
        "|---:|---:|---|---:|---:|",
    ]
    for k in chaos.kills:
        wiped = "yes" if k.wiped else "no"
        lines.append(row(f"{k.at_s:.0f}", k.slot, wiped, fmt(k.ready_s), fmt(k.resumed_s)))
    resumed = [k for k in chaos.kills if not math.isnan(k.resumed_s)]
    kept = [k.resumed_s for k in resumed if not k.wiped]
    lost = [k.resumed_s for k in resumed if k.wiped]
    chaos_hwm = _peaks(chaos.samples)
    lines += [
        "",
        f"Median stall: {fmt(median(kept))} s with the local state kept, "
        f"{fmt(median(lost))} s with it deleted (rebuilt from the changelogs). The group went "
        f"through {len(chaos.generations)} generations in the chaos run "
        f"({len(base.generations)} in the fault-free run): each is one rebalance.",
        "",
        "## Time and memory",
        "",
        "| run | first change to drained (s) | peak RSS per worker process (MiB) | peak lag |",
        "|---|---:|---|---:|",
        row("fault-free", f"{base.seconds:.0f}", mib(_peaks(base.samples)), f"{_peak_lag(base):,}"),
        row("chaos", f"{chaos.seconds:.0f}", mib(chaos_hwm), f"{_peak_lag(chaos):,}"),
        "",
        "## Against the simulator's truth (chaos run)",
        "",
        "```",
        *chaos.verdict.lines(),
        "```",
        "",
    ]
    if outcome.burst is not None:
        lines += _burst(outcome.burst, plan)
    return lines


def _peak_lag(run: RunResult) -> int:
    return max((s.lag for s in run.samples if s.lag is not None), default=0)


def write_burst_document(
    path: Path, burst: RunResult, plan: Plan, command: str, machine: str, now: dt.datetime
) -> None:
    lines = [
        f"# Burst, {now:%Y-%m-%d %H:%M} UTC",
        "",
        f"`{command}` (on {machine}; the bench's own stack, as the chaos run's).",
        "",
        *_burst(burst, plan),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
