"""Backlog equivalence at scale: one seeded firm, streamed and as a backlog, same outputs.

Runs on the local stack (`pssync dev up`), each run with its own topic prefix and
consumer group:

1. **streamed**: a worker runs, then `pssync simulate --rate R` streams the firm;
2. **backlog**: `pssync simulate --rate 0` produces the whole firm, then a fresh
   worker starts;
3. **backlog, N workers**: the same with `--workers-2` workers in one group.

After each run has read everything and its last timers have fired, the outputs are
read back and compared: the set of command IDs, the final state of every alert and
exception, the final golden records, and each against the simulator's truth.
Prints one table; exits 1 if anything differs.

`python -m bench.backlog --workers 3000 --customers 300 --count 200000 --rate 800`
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from pssync.avro.codec import Codec
from pssync.avro.contract import ALL_TOPICS, CDC_TOPICS, OUTPUT_TOPICS
from pssync.avro.registry import RegistryClient
from pssync.connectors.jsonl import consume_records
from pssync.connectors.kafka import wait_drained
from pssync.settings import Settings
from pssync.simulate.verify import comparable, compare, load_truth

OUTPUTS = list(OUTPUT_TOPICS)
TIMERS = {"orphan_grace_s": 900, "project_setup_sla_s": 86400, "dependency_timeout_s": 900}


def say(msg: str) -> None:
    print(f"[backlog] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_of(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSSYNC_")}
    for name, value in settings.model_dump().items():
        env[f"PSSYNC_{name.upper()}"] = str(value)
    return env


def settings_for(name: str, root: Path, args: argparse.Namespace) -> Settings:
    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    return Settings.from_env(
        topic_prefix=f"bench.{tag}.",
        app_id=f"pssync-bench-{tag}",
        data_dir=root / tag,
        batch_size=2000,
        **{k: v for k, v in vars(args).items() if k in TIMERS},
    )


def simulate(settings: Settings, args: argparse.Namespace, rate: float, truth: Path) -> None:
    cmd = [sys.executable, "-m", "pssync", "simulate", "--seed", str(args.seed)]
    cmd += ["--workers", str(args.workers), "--customers", str(args.customers)]
    cmd += ["--count", str(args.count), "--rate", str(rate), "--truth", str(truth)]
    cmd += ["--progress", "30"]
    subprocess.run(cmd, env=env_of(settings), check=True)


def start_worker(settings: Settings, log: Path) -> tuple[subprocess.Popen[bytes], Settings]:
    settings = settings.model_copy(update={"web_port": free_port(), "web_host": "127.0.0.1"})
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pssync", "worker"],
            env=env_of(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{settings.web_port}/ready"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"worker exited with {proc.returncode}: see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return proc, settings
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"worker not ready within 120s: see {log}")


def settle(settings: Settings, timer_s: float) -> None:
    topics = [settings.topic(t) for t in CDC_TOPICS] + [
        settings.internal_topic(t) for t in ("worker-keyed", "project-keyed")
    ]
    wait_drained(settings, topics, timeout_s=7200)
    time.sleep(timer_s)
    wait_drained(settings, topics, timeout_s=600)


def outcome(settings: Settings) -> dict[str, Any]:
    codec = Codec(RegistryClient.from_settings(settings), settings.topic_prefix)
    codec.register_all(ALL_TOPICS)
    records = list(consume_records(settings, codec, OUTPUTS, True, 3.0))
    commands = {r["value"]["command_id"] for r in records if r["topic"].startswith("erp.cmd.")}
    sent = sum(1 for r in records if r["topic"].startswith("erp.cmd."))
    findings = {
        r["key"]: comparable(r["value"])
        for r in records
        if r["topic"] in ("sync.drift", "sync.exceptions")
    }
    golden = {
        (r["topic"], json.dumps(r["key"])): r["value"]
        for r in records
        if r["topic"].startswith("reconciled.")
    }
    return {
        "records": records,
        "commands": commands,
        "sent": sent,
        "findings": findings,
        "golden": golden,
    }


def run(name: str, workers: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    settings = settings_for(name, root, args)
    truth = root / f"{name}.truth.jsonl"
    procs = []
    subprocess.run(
        [sys.executable, "-m", "pssync", "topics", "create"], env=env_of(settings), check=True
    )
    started = time.monotonic()
    try:
        if name == "streamed":
            procs.append(start_worker(settings, root / f"{name}-0.log")[0])
            started = time.monotonic()
            simulate(settings, args, args.rate, truth)
        else:
            simulate(settings, args, 0, truth)
            say(f"{name}: backlog produced; starting {workers} worker(s)")
            started = time.monotonic()
            for i in range(workers):
                procs.append(start_worker(settings, root / f"{name}-{i}.log")[0])
        settle(settings, args.timer_wait_s)
        seconds = time.monotonic() - started - args.timer_wait_s
        result = outcome(settings)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)
    verdict = compare(load_truth(truth), result["records"])
    result |= {"seconds": seconds, "verdict": verdict}
    say(f"{name}: {len(result['commands'])} commands in {seconds:.0f}s; truth ok={verdict.ok}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.backlog",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=3000, help="the firm's HR workers")
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--count", type=int, default=200_000, help="changes")
    parser.add_argument("--rate", type=float, default=800, help="changes/s when streamed")
    parser.add_argument("--workers-2", type=int, default=2, help="pssync workers, last run")
    # timers in simulated seconds: far beyond the pipeline's jitter times the simulated
    # clock's speed-up while streaming (~100x), and short enough to wait for at the end
    parser.add_argument("--timer-wait-s", type=float, default=65.0)
    parser.add_argument("--orphan-grace-s", dest="orphan_grace_s", type=float, default=60)
    parser.add_argument("--project-setup-sla-s", dest="project_setup_sla_s", type=float, default=60)
    parser.add_argument(
        "--dependency-timeout-s", dest="dependency_timeout_s", type=float, default=60
    )
    parser.add_argument("--keep", type=Path, help="keep the workers' logs and state here")
    parser.add_argument(
        "--only", choices=["streamed", "backlog", "backlog2"], action="append", help="runs to do"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pssync-backlog-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        plan = {
            "streamed": ("streamed", 1),
            "backlog": ("backlog", 1),
            f"backlog, {args.workers_2} workers": ("backlog2", args.workers_2),
        }
        runs = {
            label: run(name, n, args, root)
            for label, (name, n) in plan.items()
            if not args.only or name in args.only
        }
    reference = next(iter(runs.values()))
    print(f"firm: seed {args.seed}, {args.workers} workers, {args.count} changes")
    print(
        f"{'run':<24} {'seconds':>8} {'commands':>9} {'sent':>7} {'findings':>9} "
        f"{'golden':>7} {'same ids':>8} {'same final':>10} {'truth':>6}"
    )
    ok = True
    for name, r in runs.items():
        same_ids = r["commands"] == reference["commands"]
        same_final = r["findings"] == reference["findings"] and r["golden"] == reference["golden"]
        ok &= same_ids and same_final and r["verdict"].ok
        print(
            f"{name:<24} {r['seconds']:>8.0f} {len(r['commands']):>9} {r['sent']:>7} "
            f"{len(r['findings']):>9} {len(r['golden']):>7} {same_ids!s:>8} {same_final!s:>10} "
            f"{r['verdict'].ok!s:>6}"
        )
    for name, r in runs.items():
        if not r["verdict"].ok:
            print(f"\n{name}: against the truth\n" + "\n".join(r["verdict"].lines()))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
