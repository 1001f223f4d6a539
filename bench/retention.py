"""Retention: after a simulated year, what is in state is proportional to what is live.

A seeded firm (no injected faults) runs through the in-process pipeline
(`streams.offline`) for `--days` simulated days; at each checkpoint the table shows
how many entities the firm has ever had (time entries, assignments, workers), how
many are live (workers, open projects, open periods), and the keys in state by
kind. With retention, the time entries in state stay near a few months' worth
(the open periods, plus closed ones until `--retention-days` after they closed)
instead of growing with all the time ever entered.
`python -m bench.retention [--days 365] [--retention-days 35]`
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from pssync.simulate import Line, SimConfig, simulate
from pssync.streams.flow import FlowConfig
from pssync.streams.offline import OfflinePipeline, change_from_line

DAY_MS = 86_400_000
KINDS = ("te", "as", "w", "pe", "pr", "dep", "dl", "links")


def run(
    days: int, checkpoints: list[int], retention_days: float, root: Path
) -> list[dict[str, Any]]:
    config = FlowConfig(900_000, 900_000, retention_ms=int(retention_days * DAY_MS))
    pipeline = OfflinePipeline(root, config)
    ever: Counter[str] = Counter()
    seen: dict[str, set[str]] = {"te": set(), "as": set(), "w": set()}
    live: dict[str, dict[str, str]] = {"project": {}, "period": {}, "worker": {}}
    rows: list[dict[str, Any]] = []
    first_day: int | None = None
    pending = 0
    try:
        for group in simulate(SimConfig(seed=7, workers=30, customers=6, fault_rates={}), days):
            day = group.at_ms // DAY_MS
            first_day = day if first_day is None else first_day
            if checkpoints and day - first_day >= checkpoints[0]:
                pipeline.deliver()
                rows.append(snapshot(checkpoints.pop(0), pipeline, seen, live))
            for item in group.items:
                if not isinstance(item, Line):
                    continue
                obj = json.loads(item.text)
                change = change_from_line(obj, ever.total())
                ever[change.topic] += 1
                track(change.topic, change.entity_id, change.after, seen, live)
                pipeline.ingest((change.topic, 0), [change])
                pipeline.idle_except({(change.topic, 0)})  # a trickle: the others caught up
                pending += 1
                if pending >= 2000:
                    pipeline.deliver()
                    pending = 0
        pipeline.deliver()
        pipeline.finish(idle_for_ms=1)
        rows.append(snapshot(days, pipeline, seen, live))
        return rows
    finally:
        pipeline.close()


def track(
    topic: str, key: str, after: Any, seen: dict[str, set[str]], live: dict[str, Any]
) -> None:
    short = {"cdc.psa.time_entry": "te", "cdc.psa.assignment": "as", "cdc.hr.worker": "w"}
    if topic in short:
        seen[short[topic]].add(key)
    status = (after or {}).get("status") or (after or {}).get("employment_status")
    kind = {"cdc.psa.project": "project", "cdc.erp.period": "period", "cdc.hr.worker": "worker"}
    if topic in kind:
        live[kind[topic]][key] = status


def snapshot(
    day: int, pipeline: OfflinePipeline, seen: dict[str, set[str]], live: Any
) -> dict[str, Any]:
    counts = pipeline.key_counts()
    state: Counter[str] = Counter()
    for name, n in counts.items():
        table, kind = name.split(":")
        state["links" if table.endswith("-links") else kind] += n
    return {
        "day": day,
        "ever": {k: len(v) for k, v in seen.items()},
        "live": {
            "workers": sum(1 for s in live["worker"].values() if s != "TERMINATED"),
            "open projects": sum(1 for s in live["project"].values() if s != "CLOSED"),
            "open periods": sum(1 for s in live["period"].values() if s == "OPEN"),
        },
        "state": dict(state),
        "total_keys": sum(counts.values()),
    }


def table(rows: list[dict[str, Any]]) -> list[str]:
    head = (
        f"{'day':>4} {'entries ever':>12} {'assign. ever':>12} {'workers':>7} {'open proj':>9}"
        f" {'open per':>8} |" + "".join(f" {k:>6}" for k in KINDS) + f" {'all keys':>9}"
    )
    out = [f"{'':>56}| keys in state by kind", head]
    for r in rows:
        line = (
            f"{r['day']:>4} {r['ever']['te']:>12} {r['ever']['as']:>12}"
            f" {r['live']['workers']:>7} {r['live']['open projects']:>9}"
            f" {r['live']['open periods']:>8} |"
        )
        line += "".join(f" {r['state'].get(k, 0):>6}" for k in KINDS) + f" {r['total_keys']:>9}"
        out.append(line)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.retention",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--retention-days", type=float, default=35)
    args = parser.parse_args(argv)
    checkpoints = [d for d in (30, 60, 90, 120, 180, 240, 300) if d < args.days]
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(args.days, checkpoints, args.retention_days, Path(tmp))
    print(f"retention {args.retention_days:g} days of event time after an entity finished")
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
