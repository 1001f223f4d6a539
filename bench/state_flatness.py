"""State that stays flat: the cost of one reference change per dependent, and the
changelog bytes per input change, as the entities sharing one project, period and
worker double.

For each size N, a firm is built in the in-process pipeline (`streams.offline`:
the worker's routing, alignment, flows and RocksDB stores): one cost center, one
worker with an ERP employee and a cost rate, one open period, one project (PSA and
ERP), and N approved time entries on them, all posted. Then one change to each
reference (the ERP project, the period, the worker) re-evaluates the N entries.
Reported per N: changelog bytes per input change while building, and for each
reference change the wall time, RocksDB reads and changelog records per dependent.
Counts are deterministic; times are this machine's, so the table ends with the
ratio of the largest size to the smallest (flat = 1.0; the old layout grew 3.5x
per doubling). `python -m bench.state_flatness [--sizes 500,1000,2000,4000,8000]`
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pssync.streams.changes import Change, to_change
from pssync.streams.flow import FlowConfig
from pssync.streams.offline import OfflinePipeline

DAY_MS = 86_400_000
START = int(dt.datetime(2026, 3, 2, tzinfo=dt.UTC).timestamp() * 1000)
CONFIG = FlowConfig(orphan_grace_ms=900_000, dependency_timeout_ms=900_000)
KEYS = {
    "cdc.hr.worker": "worker_id",
    "cdc.erp.employee": "erp_employee_id",
    "cdc.erp.cost_center": "cost_center_id",
    "cdc.erp.cost_rate": "rate_id",
    "cdc.erp.period": "period_id",
    "cdc.erp.project": "erp_project_id",
    "cdc.psa.project": "project_id",
    "cdc.psa.time_entry": "time_entry_id",
}


class Source:
    """CDC envelopes with increasing source positions and commit times."""

    def __init__(self) -> None:
        self.lsn = 0

    def change(self, topic: str, after: dict[str, Any], before: bool = False) -> Change:
        self.lsn += 1
        ts = START + self.lsn * 1000
        value = {
            "before": None,
            "after": after,
            "op": "u" if before else "c",
            "ts_ms": ts,
            "source": {"ts_ms": ts, "lsn": self.lsn, "snapshot": "false"},
        }
        return to_change(topic, {KEYS[topic]: after[KEYS[topic]]}, value, 0, self.lsn, None)


def worker(status_le: str = "LE1") -> dict[str, Any]:
    return {
        "worker_id": "W1",
        "full_name": "A B",
        "email": "a@b.example",
        "employment_status": "ACTIVE",
        "hire_date": "2024-01-01",
        "termination_date": None,
        "cost_center": "CC1",
        "legal_entity": status_le,
        "manager_id": None,
        "job_profile": "Consultant",
        "updated_at": "2026-03-01T00:00:00.000Z",
    }


def erp_project(customer: str = "CU1") -> dict[str, Any]:
    return {
        "erp_project_id": "EP1",
        "project_id": "P1",
        "customer_id": customer,
        "legal_entity": "LE1",
        "currency": "USD",
        "status": "ACTIVE",
    }


def period(status: str = "OPEN") -> dict[str, Any]:
    return {
        "period_id": "LE1:2026-03",
        "legal_entity": "LE1",
        "period": "2026-03",
        "status": status,
    }


def firm(n: int, src: Source) -> Iterator[Change]:
    yield src.change(
        "cdc.erp.cost_center", {"cost_center_id": "CC1", "legal_entity": "LE1", "is_active": True}
    )
    yield src.change("cdc.erp.period", period())
    employee = {
        "erp_employee_id": "E1",
        "worker_id": "W1",
        "is_active": True,
        "cost_center": "CC1",
        "legal_entity": "LE1",
        "updated_at": "2026-03-01T00:00:00.000Z",
    }
    yield src.change("cdc.erp.employee", employee)
    rate = {
        "rate_id": "R1",
        "worker_id": "W1",
        "effective_from": "2026-01-01",
        "effective_to": None,
        "rate": "90.00",
        "currency": "USD",
    }
    yield src.change("cdc.erp.cost_rate", rate)
    yield src.change("cdc.hr.worker", worker())
    yield src.change("cdc.erp.project", erp_project())
    project = {
        "project_id": "P1",
        "sow_id": None,
        "crm_account_id": "ACC1",
        "name": "P",
        "legal_entity": "LE1",
        "currency": "USD",
        "status": "ACTIVE",
        "billing_type": "TIME_AND_MATERIALS",
        "start_date": "2026-01-05",
        "end_date": None,
    }
    yield src.change("cdc.psa.project", project)
    for i in range(n):
        entry = {
            "time_entry_id": f"T{i:06d}",
            "worker_id": "W1",
            "project_id": "P1",
            "assignment_id": None,
            "work_date": f"2026-03-{1 + i % 28:02d}",
            "hours": "7.50",
            "billable": True,
            "status": "APPROVED",
            "approved_at": "2026-03-30T17:00:00.000Z",
        }
        yield src.change("cdc.psa.time_entry", entry)


def measure(n: int, root: Path) -> dict[str, Any]:
    pipeline = OfflinePipeline(root, CONFIG)
    try:
        src = Source()
        changes = list(firm(n, src))
        batches = [(("cdc", 0), changes[i : i + 500]) for i in range(0, len(changes), 500)]
        for _, batch in batches:
            for change in batch:
                pipeline.ingest((change.topic, 0), [change])
            pipeline.deliver()
        pipeline.finish(idle_for_ms=1)
        built = pipeline.counters.changelog_bytes
        posts = sum(1 for e in pipeline.emits if e.kind == "command")
        assert posts == n, f"{posts} of {n} entries posted"
        out: dict[str, Any] = {"n": n, "bytes_per_change": built / len(changes)}
        references = {
            "erp project": src.change("cdc.erp.project", erp_project("CU2"), before=True),
            "period": src.change("cdc.erp.period", period("OPEN") | {"legal_entity": "LE1"}, True),
            "worker": src.change("cdc.hr.worker", worker() | {"full_name": "A C"}, before=True),
        }
        for name, change in references.items():
            before = (pipeline.counters.reads, pipeline.counters.changelog_records)
            started = time.perf_counter()
            pipeline.ingest((change.topic, 0), [change])
            pipeline.deliver()
            pipeline.finish(idle_for_ms=1)
            seconds = time.perf_counter() - started
            reads = pipeline.counters.reads - before[0]
            records = pipeline.counters.changelog_records - before[1]
            out[name] = {"us": seconds / n * 1e6, "reads": reads / n, "records": records / n}
        return out
    finally:
        pipeline.close()


def table(rows: list[dict[str, Any]]) -> list[str]:
    refs = ["erp project", "period", "worker"]
    head = f"{'entities':>8} {'changelog B/change':>18}" + "".join(
        f" {r + ' us/dep':>16} {'reads/dep':>9} {'records/dep':>11}" for r in refs
    )
    lines = [head]
    for row in rows:
        line = f"{row['n']:>8} {row['bytes_per_change']:>18.1f}"
        for r in refs:
            m = row[r]
            line += f" {m['us']:>16.1f} {m['reads']:>9.2f} {m['records']:>11.3f}"
        lines.append(line)
    first, last = rows[0], rows[-1]
    ratio = f"{'ratio':>8} {last['bytes_per_change'] / first['bytes_per_change']:>18.2f}"
    for r in refs:
        ratio += f" {last[r]['us'] / first[r]['us']:>16.2f} {'':>9} {'':>11}"
    lines.append(ratio + f"   (largest / smallest, x{last['n'] // first['n']} entities)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.state_flatness",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sizes", default="500,1000,2000,4000,8000", help="entities per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size (median time)")
    args = parser.parse_args(argv)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        runs = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                runs.append(measure(n, Path(tmp)))
        row = runs[0]
        for ref in ("erp project", "period", "worker"):
            row[ref]["us"] = sorted(r[ref]["us"] for r in runs)[len(runs) // 2]
        rows.append(row)
        print(f"  measured {n} entities", flush=True)
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
