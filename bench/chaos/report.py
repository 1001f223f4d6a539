"""The chaos run's verdict: the chaos run against the fault-free run, check by check.

Each check is a value (`Check`: what, whether it held, the figures behind it); the
caller prints them, writes them into the results document, or asserts on them.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from dataclasses import dataclass

from bench.chaos.run import RunResult
from bench.chaos.workers import Sample


@dataclass(frozen=True)
class Check:
    what: str
    ok: bool
    detail: str


def duplicates_in_run(run: RunResult) -> Counter[str]:
    """Records sent more than once (same topic, key and value), per topic: what a replay
    after a crash re-sends."""
    seen: Counter[tuple[str, str, str]] = Counter()
    for r in run.records:
        seen[
            (
                r["topic"],
                json.dumps(r["key"], sort_keys=True),
                json.dumps(r["value"], sort_keys=True),
            )
        ] += 1
    out: Counter[str] = Counter()
    for (topic, _, _), n in seen.items():
        if n > 1:
            out[topic] += n - 1
    return out


def checks(base: RunResult, chaos: RunResult) -> list[Check]:
    missing = base.commands - chaos.commands
    extra = chaos.commands - base.commands
    twice = {c: n for c, (n, _) in chaos.inbox.items() if n != 1}
    redelivered = sum(1 for _, d in chaos.inbox.values() if d > 1)
    findings_differ = {
        k
        for k in base.findings.keys() | chaos.findings.keys()
        if base.findings.get(k) != chaos.findings.get(k)
    }
    golden_differ = {
        k
        for k in base.golden.keys() | chaos.golden.keys()
        if base.golden.get(k) != chaos.golden.get(k)
    }
    v = chaos.verdict
    deaths = [f"worker {slot} exited {code}" for slot, _, code in base.deaths + chaos.deaths]
    return [
        Check(
            "no worker exited but those killed",
            not deaths,
            "; ".join(deaths) or "none did (each one's exits were the bench's SIGKILLs)",
        ),
        Check(
            "the same set of command_ids",
            not missing and not extra,
            f"{len(base.commands)} fault-free, {len(chaos.commands)} chaos; "
            f"{len(missing)} missing, {len(extra)} extra",
        ),
        Check(
            "every command in the ERP inbox, none applied twice",
            set(chaos.inbox) == chaos.commands and not twice,
            f"{len(chaos.inbox)} rows for {len(chaos.commands)} command_ids; {len(twice)} "
            f"command_ids in more than one row; {redelivered} redelivered by the sink "
            "(absorbed: counted in `deliveries`, row unchanged); "
            f"{len(chaos.commands - set(chaos.inbox))} missing from the inbox; "
            f"{chaos.sink_dead_letters} skipped by the sink into erp.cmd.dlq",
        ),
        Check(
            "the same final alert and exception states",
            not findings_differ,
            f"{len(base.findings)} findings; {len(findings_differ)} differ",
        ),
        Check(
            "the same final golden records",
            not golden_differ,
            f"{len(base.golden)} golden records; {len(golden_differ)} differ",
        ),
        Check(
            "every input accounted for (POST_TIME_ENTRY and dead letters as the truth says)",
            v.posts == v.expected_posts and v.dlq == v.expected_dlq and base.verdict.ok,
            f"{v.posts}/{v.expected_posts} posts, {v.dlq}/{v.expected_dlq} dead letters; "
            "every CDC and keyed partition committed to its end",
        ),
        Check(
            "every injected business fault still detected",
            not v.missing and not v.unexpected,
            f"{len(v.expected) - len(v.missing)}/{len(v.expected)} detected; "
            f"{len(v.unexpected)} findings without an injected cause",
        ),
    ]


def redundant(base: RunResult, chaos: RunResult) -> dict[str, int]:
    """Output records the chaos run sent beyond the fault-free run's, per topic."""
    topics = sorted(base.per_topic.keys() | chaos.per_topic.keys())
    return {t: chaos.per_topic[t] - base.per_topic[t] for t in topics}


def fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1f}"


def lag_series(samples: list[Sample], every_s: float) -> list[Sample]:
    out: list[Sample] = []
    for s in samples:
        if not out or s.at_s - out[-1].at_s >= every_s:
            out.append(s)
    return out


def peak(values: list[float]) -> float:
    return max(values) if values else float("nan")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
