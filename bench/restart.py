"""Restart to ready: a worker with state, stopped (SIGTERM, then SIGKILL) and started again.

On the local stack (`pssync dev up`, or `PSSYNC_KAFKA_BOOTSTRAP`), with its own topic
prefix, consumer group, data dir and web port (deleted at the end unless `--keep`):

1. a worker starts and a seeded firm is produced (`pssync simulate --workers 30
   --count N --rate 0`); the bench waits until the worker has processed all of it;
2. `--runs` times for each signal: the worker is stopped (SIGTERM: a clean stop;
   SIGKILL: a crash) and a new process is started at once with the same settings
   (same data dir, same instance id). Timed from the new process's start:
   - **assigned**: the worker's log says its partitions are assigned;
   - **ready**: `GET /ready` answers 200 (partitions assigned, state caught up);
   - **processed**: a record produced just after the start has been processed
     (`/stats` counts it), i.e. the stream flows again;
   the worker's log gives the stages (imports, prepare, join, recovery);
3. the **baseline**, measured in the same run: the same restart of a bare aiokafka
   consumer (a Python process that only imports aiokafka, joins a static group with
   the worker's topics and waits for its first assignment), so that the worker's
   time can be quoted as a ratio of what any static Kafka consumer pays.

Prints a table of the medians and one JSON line (`"bench": "restart"`).
`python -m bench.restart [--runs 3] [--count 3000]`; `run(settings, runs)` returns the
same dict for a larger harness. `--worker-path DIR` runs the workers from another
checkout (put first on PYTHONPATH), to compare with an earlier commit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from bench.backlog import free_port
from pssync.avro.codec import Codec
from pssync.avro.contract import ALL_TOPICS, CDC_TOPICS
from pssync.avro.registry import RegistryClient
from pssync.connectors.jsonl import produce_lines
from pssync.connectors.kafka import admin, check_kafka, client_config, wait_drained
from pssync.settings import Settings

SIGNALS = {"sigterm": signal.SIGTERM, "sigkill": signal.SIGKILL}
PROBE_TOPIC = "cdc.erp.cost_center"
POLL_S = 0.02
READY_TIMEOUT_S = 180.0
# worker log lines (text format) that mark the stages of a start
STAGES = {
    "imports": "pssync.worker [-] preparing",
    "prepare": "pssync.worker [-] prepared in",
    "subscribed": "Subscribed to topic(s)",
    "assigned": "Setting newly assigned partitions",
    "flowing": "[^---Recovery]: Worker ready",
}

BASELINE = """
import asyncio, signal, sys, time
from aiokafka import AIOKafkaConsumer

async def main(bootstrap, group, instance, topics, session_ms):
    consumer = AIOKafkaConsumer(
        *topics.split(","), bootstrap_servers=bootstrap, group_id=group,
        group_instance_id=instance, session_timeout_ms=session_ms,
        heartbeat_interval_ms=min(3000, session_ms // 3), enable_auto_commit=False,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await consumer.start()
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=20)
    print("assigned", len(consumer.assignment()), flush=True)
    while not stop.is_set():
        await consumer.getmany(timeout_ms=200)
    await consumer.stop()

asyncio.run(main(*sys.argv[1:5], int(sys.argv[5])))
"""


def say(msg: str) -> None:
    print(f"[restart] {msg}", file=sys.stderr, flush=True)


def env_of(settings: Settings, worker_path: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSSYNC_")}
    for name, value in settings.model_dump().items():
        env[f"PSSYNC_{name.upper()}"] = str(value)
    if worker_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(worker_path), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
    return env


def http_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


class Worker:
    """One `pssync worker` process at a time, restarted with the same settings."""

    def __init__(self, settings: Settings, logs: Path, worker_path: Path | None) -> None:
        self.settings = settings
        self.logs = logs
        self.env = env_of(settings, worker_path)
        self.cwd = worker_path  # `python -m` puts the working directory first on sys.path
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = logs / "worker-0.log"
        self.starts = 0
        self.spawned_wall = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.web_port}"

    def spawn(self) -> float:
        """Start the process; returns its start (monotonic)."""
        self.log_path = self.logs / f"worker-{self.starts}.log"
        self.starts += 1
        with open(self.log_path, "wb") as out:
            self.spawned_wall = time.time()
            started = time.monotonic()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pssync", "worker"],
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return started

    def wait_until(self, check: Any, what: str) -> float:
        """Poll `check()` until true; returns when (monotonic)."""
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"worker exited ({self.proc.returncode}) before {what}: see {self.log_path}"
                )
            try:
                if check():
                    return time.monotonic()
            except OSError:
                pass
            time.sleep(POLL_S)
        raise RuntimeError(f"worker: no {what} within {READY_TIMEOUT_S:.0f}s: {self.log_path}")

    def ready(self) -> bool:
        return http_json(self.url + "/ready")[0] == 200

    def processed(self, topic: str) -> bool:
        status, body = http_json(self.url + "/stats")
        return status == 200 and body["records_in"].get(topic, 0) > 0

    def stop(self, sig: signal.Signals) -> float:
        """Signal the process and wait for it to exit; returns the seconds that took."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
        return time.monotonic() - started

    def stages(self) -> dict[str, float]:
        """Seconds from the process's start to each stage its log shows."""
        out: dict[str, float] = {}
        for line in self.log_path.read_text(errors="replace").splitlines():
            for stage, marker in STAGES.items():
                if stage not in out and marker in line:
                    try:
                        at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                    except ValueError:
                        continue
                    out[stage] = round(at - self.spawned_wall, 3)
        return out


class Probe:
    """Produces one new cost center a start: a record the restarted worker must process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.codec = Codec(RegistryClient.from_settings(settings), settings.topic_prefix)
        self.codec.register_all(ALL_TOPICS)
        self.n = 0

    def send(self) -> None:
        self.n += 1
        cc = f"CC-PROBE-{self.n}"
        line = {
            "topic": PROBE_TOPIC,
            "key": {"cost_center_id": cc},
            "value": {
                "before": None,
                "after": {"cost_center_id": cc, "legal_entity": "LE-PROBE", "is_active": True},
                "op": "c",
                "ts_ms": int(time.time() * 1000),
                "source": {
                    "version": "3.6.1.Final",
                    "connector": "postgresql",
                    "name": "cdc",
                    "ts_ms": int(time.time() * 1000),
                    "snapshot": "false",
                    "db": "platforms",
                    "schema": "erp",
                    "table": "cost_center",
                    "txId": 10_000_000 + self.n,
                    "lsn": 10_000_000 + self.n,
                },
            },
        }
        report = produce_lines(self.settings, self.codec, [json.dumps(line)])
        if report.errors:
            raise RuntimeError(f"probe record rejected: {report.errors}")


def committed_all(settings: Settings, topics: list[str]) -> bool:
    """The group has committed every record of `topics`."""
    consumer = Consumer(
        client_config(settings, **{"group.id": settings.group_id, "enable.auto.commit": False})
    )
    try:
        tps = []
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            tps += [TopicPartition(topic, p) for p in meta.partitions]
        for tp in consumer.committed(tps, timeout=10):
            _, high = consumer.get_watermark_offsets(tp, timeout=10)
            if high > 0 and tp.offset < high:
                return False
        return True
    finally:
        consumer.close()


class Baseline:
    """The same restart of a bare aiokafka consumer in a static group."""

    def __init__(self, settings: Settings, topics: list[str], logs: Path) -> None:
        self.args = [
            settings.kafka_bootstrap,
            f"{settings.group_id}-baseline",
            f"baseline-{uuid.uuid4().hex[:6]}",
            ",".join(topics),
            str(int(settings.session_timeout_s * 1000)),
        ]
        self.logs = logs
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> float:
        """Start the process; returns the seconds to its first assignment."""
        stderr = open(self.logs / f"baseline-{self.starts}.log", "wb")  # noqa: SIM115
        self.starts += 1
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", BASELINE, *self.args],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        stderr.close()
        assert self.proc.stdout is not None
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(READY_TIMEOUT_S)
        if not line or not line[0].startswith(b"assigned"):
            raise RuntimeError(f"baseline consumer not assigned: see {self.logs}")
        return time.monotonic() - started

    def stop(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(60)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def run(
    settings: Settings,
    runs: int = 3,
    *,
    count: int = 3000,
    root: Path | None = None,
    keep: bool = False,
    worker_path: Path | None = None,
) -> dict[str, Any]:
    """Measure; `settings` gives Kafka and the registry (and any setting to bench with);
    the bench chooses its own topic prefix, app id, data dir and web port."""
    check_kafka(settings)
    tag = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="pssync-restart-") as tmp:
        base = root or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        settings = settings.model_copy(
            update={
                "topic_prefix": f"rbench{tag}.",
                "app_id": f"pssync-restart-{tag}",
                "data_dir": base / "state",
                "web_port": free_port(),
                "web_host": "127.0.0.1",
                "log_format": "text",
                "log_level": "INFO",
            }
        )
        try:
            return _measure(settings, runs, count, base, worker_path)
        finally:
            if not keep:
                _delete_topics(settings)


def _measure(
    settings: Settings, runs: int, count: int, logs: Path, worker_path: Path | None
) -> dict[str, Any]:
    worker = Worker(settings, logs, worker_path)
    topics = [settings.topic(t) for t in CDC_TOPICS]
    internal = [settings.internal_topic(t) for t in ("worker-keyed", "project-keyed")]
    say(f"prefix {settings.topic_prefix!r}, logs in {logs}")
    spawned = worker.spawn()
    first_start_s = worker.wait_until(worker.ready, "/ready 200") - spawned
    say(f"first start ready in {first_start_s:.1f}s; seeding {count} changes")
    seeded = time.monotonic()
    simulate = ["simulate", "--workers", "30", "--count", str(count), "--rate", "0"]
    subprocess.run(
        [sys.executable, "-m", "pssync", *simulate, "--progress", "600"],
        env=env_of(settings),
        check=True,
        capture_output=True,
    )
    wait_drained(settings, topics + internal, timeout_s=600)
    say(f"seeded and processed in {time.monotonic() - seeded:.1f}s")
    _, stats = http_json(worker.url + "/stats")
    probe = Probe(settings)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in SIGNALS}
    try:
        for name, sig in SIGNALS.items():
            for i in range(runs):
                stop_s = worker.stop(sig)
                started = worker.spawn()
                probe.send()  # while the new process imports: in the topic before it reads
                ready = worker.wait_until(worker.ready, "/ready 200")
                flowing = worker.wait_until(lambda: worker.processed(PROBE_TOPIC), "the probe")
                row = {
                    "stop_s": round(stop_s, 3),
                    "ready_s": round(ready - started, 3),
                    "processed_s": round(flowing - started, 3),
                    **{f"{k}_s": v for k, v in worker.stages().items()},
                }
                results[name].append(row)
                say(f"{name} #{i + 1}: {row}")
                while not committed_all(settings, [settings.topic(PROBE_TOPIC)]):
                    time.sleep(0.2)
    finally:
        worker.stop(signal.SIGTERM)
    baseline: dict[str, list[float]] = {name: [] for name in SIGNALS}
    bare = Baseline(settings, topics + internal, logs)
    bare.start()
    for name, sig in SIGNALS.items():
        for _ in range(runs):
            bare.stop(sig)
            baseline[name].append(round(bare.start(), 3))
    bare.stop(signal.SIGTERM)
    say(f"baseline: {baseline}")
    out: dict[str, Any] = {
        "bench": "restart",
        "runs": runs,
        "seeded_changes": count,
        "records_processed": None if stats is None else sum(stats["records_in"].values()),
        "settings": {
            "instance_id": settings.group_instance_id,
            "session_timeout": settings.session_timeout_s,
        },
        "first_start_s": round(first_start_s, 3),
    }
    for name in SIGNALS:
        rows = results[name]
        keys = sorted({k for row in rows for k in row})
        summary = {k: median([row[k] for row in rows if k in row]) for k in keys}
        summary["baseline_s"] = median(baseline[name])
        summary["ratio"] = round(summary["ready_s"] / summary["baseline_s"], 2)
        out[name] = summary
        # the headline numbers, flat, for a harness that reads the top level
        out[f"{name}_ready_s"] = summary["ready_s"]
        out[f"{name}_processed_s"] = summary["processed_s"]
    out["baseline_s"] = median(baseline["sigterm"] + baseline["sigkill"])
    out["raw"] = {"worker": results, "baseline": baseline}
    return out


def _delete_topics(settings: Settings) -> None:
    client = admin(settings)
    try:
        names = [
            t for t in client.list_topics(timeout=10).topics if t.startswith(settings.topic_prefix)
        ]
        if names:
            for future in client.delete_topics(names, operation_timeout=30).values():
                future.result()
        groups = [settings.group_id, f"{settings.group_id}-baseline"]
        for future in client.delete_consumer_groups(groups, request_timeout=10).values():
            with contextlib.suppress(Exception):  # a static member left: it expires by itself
                future.result()
    except Exception as exc:  # cleaning up must not hide the result
        say(f"could not delete the bench's topics: {exc}")


ROWS = [
    ("stop (signal to exit)", "stop_s"),
    ("imports (start to `preparing`)", "imports_s"),
    ("prepare + create app", "prepare_s"),
    ("subscribed", "subscribed_s"),
    ("partitions assigned", "assigned_s"),
    ("/ready 200", "ready_s"),
    ("stream flowing (Faust)", "flowing_s"),
    ("probe record processed", "processed_s"),
    ("baseline: bare static consumer", "baseline_s"),
    ("/ready as a multiple of baseline", "ratio"),
]


def table(result: dict[str, Any]) -> list[str]:
    lines = [
        f"restart to ready, seconds from the new process's start "
        f"(median of {result['runs']}; {result['seeded_changes']} changes seeded)",
        f"{'':36} {'SIGTERM':>9} {'SIGKILL':>9}",
    ]
    for label, key in ROWS:
        cells = [result[name].get(key) for name in SIGNALS]
        shown = ["-" if c is None else f"{c:.2f}" for c in cells]
        lines.append(f"{label:36} {shown[0]:>9} {shown[1]:>9}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.restart",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=3, help="restarts per signal")
    parser.add_argument("--count", type=int, default=3000, help="changes seeded")
    parser.add_argument("--keep", type=Path, help="keep logs and state here, and the topics")
    parser.add_argument("--worker-path", type=Path, help="run the workers from this checkout")
    args = parser.parse_args(argv)
    result = run(
        Settings.from_env(),
        args.runs,
        count=args.count,
        root=args.keep,
        keep=args.keep is not None,
        worker_path=args.worker_path,
    )
    print("\n".join(table(result)))
    print(json.dumps({k: v for k, v in result.items() if k != "raw"} | {"raw": result["raw"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
