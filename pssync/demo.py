"""`pssync demo`: the main job end to end, on a real Kafka and schema registry.

Starts the dev stack (unless --no-stack), creates the topics and registers the
schemas, runs `pssync worker` as a subprocess, feeds a seeded firm's HR and ERP
changes (`pssync.demo_feed`) through the CLI's own produce path, plays the ERP
applying `erp.cmd.employee` commands (the simulated ERP sink, so alerts go
OPEN -> RESOLVED), and prints a summary read from the output topics every
~10 s and at the end. The dev stack is left running.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from pssync import devstack
from pssync.avro.codec import Codec
from pssync.avro.contract import ALL_TOPICS
from pssync.avro.registry import RegistryClient
from pssync.connectors.jsonl import Forms, decode_message, produce_lines
from pssync.connectors.kafka import check_kafka, contract_topic_specs, ensure_topics
from pssync.demo_feed import SINK_DELAY_S, DemoFirm, ErpSink
from pssync.settings import DEV_REGISTRY_URL, Settings

Record = dict[str, Any]

COMMANDS = "erp.cmd.employee"
WATCHED = (COMMANDS, "sync.drift", "sync.exceptions", "reconciled.worker", "sync.dlq")
# finding topics: (title, the states shown)
FINDINGS = {
    "sync.drift": ("drift alerts", ("OPEN", "RESOLVED")),
    "sync.exceptions": ("exceptions", ("OPEN", "RESOLVED", "DISMISSED")),
}
MOVES = ("opened", "resolved", "re-sent (facts changed)", "dismissed")
# demo timings, used where the matching PSSYNC_* variable is not set
DEMO_DEFAULTS: dict[str, Any] = {"app_id": "pssync-demo", "web_host": "127.0.0.1"}
DEMO_DEFAULTS |= {"orphan_grace_s": 15, "dependency_timeout_s": 30, "tick_interval_s": 1.0}
READY_TIMEOUT_S = 120.0
SUMMARY_EVERY_S = 10.0
EVENTS_PER_S = 2.0
LIVE_STREAM_AFTER_S = 5.0  # let the snapshot's cases play out before the live stream starts


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


# -- settings, topics, schemas ------------------------------------------------
def demo_settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {"topic_prefix": args.topic_prefix, "web_port": args.web_port}
    if args.no_stack:
        overrides |= {"kafka_bootstrap": args.bootstrap, "schema_registry_url": args.registry_url}
    else:
        if args.bootstrap or args.registry_url:
            say("--bootstrap/--registry-url apply with --no-stack; using the dev stack's")
        cfg = devstack.StackConfig.from_env()
        say("starting the local stack (pssync dev up; idempotent) ...")
        for name, what in devstack.up(cfg).items():
            say(f"  {name}: {what}")
        overrides |= {"kafka_bootstrap": cfg.bootstrap, "schema_registry_url": cfg.registry_url}
    for name, value in DEMO_DEFAULTS.items():
        if not os.environ.get(f"PSSYNC_{name.upper()}") and overrides.get(name) is None:
            overrides[name] = value
    return Settings.from_env(**overrides)


def prepare(settings: Settings) -> Codec:
    check_kafka(settings)
    created = ensure_topics(settings, contract_topic_specs(settings, settings.partitions))
    fresh = sum(1 for v in created.values() if v == "created")
    say(f"topics: {fresh} created, {len(created) - fresh} already there")
    codec = Codec(RegistryClient(settings.schema_registry_url), settings.topic_prefix)
    codec.register_all(ALL_TOPICS)
    say(f"schemas registered for {len(ALL_TOPICS)} topics at {settings.schema_registry_url}")
    return codec


def send(settings: Settings, codec: Codec, lines: Sequence[str]) -> None:
    """Through the CLI's own produce path; a rejected line is a bug in the feed."""
    if lines:
        produce_lines(settings, codec, lines, on_error=lambda e: say(f"line rejected: {e}"))


# -- the worker subprocess ----------------------------------------------------
class WorkerProcess:
    """`pssync worker` in its own session, so ^C reaches the demo only and we stop it."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings, self.log_path = settings, log_path
        self.url = f"http://127.0.0.1:{settings.web_port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def check_port(self) -> None:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", self.settings.web_port)) == 0:
                raise ValueError(f"port {self.settings.web_port} is taken; pick one: --web-port")

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PSSYNC_")}
        env |= {f"PSSYNC_{k.upper()}": str(v) for k, v in self.settings.model_dump().items()}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pssync", "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        say(f"worker started (pid {self.proc.pid}); log: {self.log_path}")

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=3) as resp:
                return int(resp.status), json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), None

    def wait_ready(self, stopper: Stopper) -> bool:
        print(f"[demo] waiting for GET {self.url}/ready ", end="", flush=True)
        started = time.monotonic()
        while time.monotonic() - started < READY_TIMEOUT_S and not stopper.requested:
            if self.exited() is not None:
                return self.failed(f"\n[demo] the worker exited with code {self.exited()}")
            try:
                if self.get("/ready")[0] == 200:
                    print(f" ready in {time.monotonic() - started:.1f}s", flush=True)
                    return True
            except OSError:
                pass
            print(".", end="", flush=True)
            time.sleep(1.0)
        if stopper.requested:
            return False
        return self.failed(f"\n[demo] the worker was not ready within {READY_TIMEOUT_S:.0f}s")

    def failed(self, what: str) -> bool:
        print(f"{what}; the last lines of {self.log_path}:\n{self.log_tail()}", flush=True)
        return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        say(f"stopping the worker (pid {self.proc.pid}) ...")
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            say("the worker did not stop within 30s; killing it")
            self.proc.kill()
            self.proc.wait(10)
        say(f"worker stopped (exit code {self.proc.returncode})")

    def stats_line(self) -> str:
        try:
            status, stats = self.get("/stats")
        except OSError:
            return "worker /stats: (no answer)"
        if status != 200 or not isinstance(stats, dict):
            return f"worker /stats: HTTP {status}"
        parts = [f"{k} {sum(v.values()) if isinstance(v, dict) else v}" for k, v in stats.items()]
        return "worker /stats: " + ", ".join(parts)

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return "  (no log)"
        return "\n".join(f"  | {line}" for line in lines)


class Stopper:
    """First ^C asks for a clean stop; a second one interrupts the wind-down."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\n[demo] ^C: stopping (press ^C again to skip the wind-down)", flush=True)


# -- reading the outputs ------------------------------------------------------
class OutputTail:
    """Reads the watched output topics from the beginning, decoded to the JSON form."""

    def __init__(self, settings: Settings, codec: Codec) -> None:
        self.settings, self.codec, self.forms = settings, codec, Forms()
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": f"pssync-demo-tail-{uuid.uuid4()}",
                "enable.auto.commit": False,
            }
        )
        assignment = []
        # commands already there belong to earlier runs: the sink leaves them alone
        self.commands_from: dict[int, int] = {}
        for topic in WATCHED:
            physical = settings.topic(topic)
            meta = self.consumer.list_topics(physical, timeout=10).topics[physical]
            for p in sorted(meta.partitions):
                assignment.append(TopicPartition(physical, p, OFFSET_BEGINNING))
                if topic == COMMANDS:
                    _, high = self.consumer.get_watermark_offsets(
                        TopicPartition(physical, p), timeout=10
                    )
                    self.commands_from[p] = high
        self.consumer.assign(assignment)

    def poll(self, timeout_s: float) -> list[Record]:
        out = []
        for msg in self.consumer.consume(500, timeout=timeout_s):
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    say(f"consumer error: {error}")
                continue
            out.append(decode_message(self.settings, self.codec, self.forms, msg))
        return out


class Summary:
    """What the output topics hold: the latest state per alert, exception and golden key."""

    def __init__(self) -> None:
        self.commands: Counter[str] = Counter()
        # topic -> finding id -> (rule, severity, state, entity); and transitions per topic
        self.findings: dict[str, dict[str, tuple[str, str, str, str]]] = {t: {} for t in FINDINGS}
        self.moves: dict[str, Counter[str]] = {t: Counter() for t in FINDINGS}
        self.golden: dict[str, bool] = {}
        self.dlq: Counter[str] = Counter()
        self.undecodable = 0

    def add(self, record: Record) -> None:
        topic, value = record["topic"], record["value"]
        if "error" in record:
            self.undecodable += 1
        elif topic == "reconciled.worker":
            key = json.dumps(record["key"], sort_keys=True)
            if value is None:
                self.golden.pop(key, None)
            else:
                self.golden[key] = bool(value["in_sync"])
        elif value is None:
            return
        elif topic == COMMANDS:
            self.commands[value["type"]] += 1
        elif topic in FINDINGS:
            latest = self.findings[topic]
            finding_id = value.get("alert_id") or value["exception_id"]
            before = latest.get(finding_id)
            state = value["state"]
            move = (
                ("re-sent (facts changed)" if before and before[2] == "OPEN" else "opened")
                if state == "OPEN"
                else state.lower()
            )
            self.moves[topic][move] += 1
            rule, severity, entity = value["rule"], value.get("severity", ""), value["entity_id"]
            latest[finding_id] = (rule, severity, state, entity)
        elif topic == "sync.dlq":
            self.dlq[f"{value['original_topic']}: {value['error_class']}"] += 1

    def render(self, open_items: bool) -> list[str]:
        out = ["commands (erp.cmd.employee)"]
        out += table(["type", "issued"], sorted(self.commands.items())) or ["  (none yet)"]
        for topic, (what, states) in FINDINGS.items():
            out += ["", f"{what} ({topic}), latest state of each"]
            rows: dict[tuple[str, ...], Counter[str]] = {}
            for rule, severity, state, _ in self.findings[topic].values():
                rows.setdefault((rule, severity) if severity else (rule,), Counter())[state] += 1
            head = ["rule", "severity"] if topic == "sync.drift" else ["rule"]
            out += table(
                [*head, *states], [(*k, *(c[s] for s in states)) for k, c in sorted(rows.items())]
            ) or ["  (none yet)"]
            moves = self.moves[topic]
            out.append(
                "  transitions: "
                + (", ".join(f"{moves[k]} {k}" for k in MOVES if moves[k]) or "none yet")
            )
        in_sync = sum(self.golden.values())
        out += [
            "",
            f"golden records (reconciled.worker): {len(self.golden)} workers, "
            f"{in_sync} in sync, {len(self.golden) - in_sync} with open findings",
        ]
        dlq = ", ".join(f"{k} x{n}" for k, n in sorted(self.dlq.items()))
        out.append(
            f"dead letters (sync.dlq): {sum(self.dlq.values())}" + (f" ({dlq})" if dlq else "")
        )
        if self.undecodable:
            out.append(f"records the demo could not decode: {self.undecodable}")
        if open_items:
            still = sorted(
                (r, e)
                for found in self.findings.values()
                for r, _, s, e in found.values()
                if s == "OPEN"
            )
            out += ["", "still open (the operations queue):"]
            out += table(["rule", "entity"], still) or ["  nothing: every finding resolved"]
        return out


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """Plain aligned text: the first column left, the others right-aligned."""
    if not rows:
        return []
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [i > 0 and all(r[i].isdigit() for r in cells[1:]) for i in range(len(headers))]

    def fmt(row: list[str]) -> str:
        cols = zip(row, widths, numeric, strict=True)
        return "  " + "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in cols).rstrip()

    return [fmt(cells[0]), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells[1:]]


# -- guidance -----------------------------------------------------------------
def where_to_look(settings: Settings, log_path: Path, stack: bool) -> list[str]:
    flags = ""
    if settings.topic_prefix:
        flags += f" --topic-prefix {settings.topic_prefix}"
    if settings.kafka_bootstrap not in ("localhost:9092", "127.0.0.1:9092"):
        flags += f" --bootstrap {settings.kafka_bootstrap}"
    if settings.schema_registry_url != DEV_REGISTRY_URL:
        flags += f" --registry-url {settings.schema_registry_url}"
    url = f"http://127.0.0.1:{settings.web_port}"
    out = ["where to look next:"]
    out += [f"  pssync consume {t} --from-beginning --idle-timeout 5{flags}" for t in WATCHED]
    out += [
        f"  worker:  {url}/health  {url}/ready  {url}/stats  (while the demo runs)",
        f"  worker log: {log_path}",
    ]
    if stack:
        out.append("  the stack: pssync dev status  |  pssync dev down  (stops Kafka + registry)")
    return out


def banner(title: str) -> str:
    return f"\n=== {title} " + "=" * max(3, 76 - len(title))


# -- the run ------------------------------------------------------------------
def run_demo(args: argparse.Namespace) -> int:
    firm = DemoFirm(args.seed, args.workers)
    settings = demo_settings(args)
    log_path = settings.data_dir / f"{settings.topic_prefix}{settings.app_id}-worker.log"
    worker = WorkerProcess(settings, log_path)
    worker.check_port()
    codec = prepare(settings)
    say(f"app id {settings.app_id!r}, topic prefix {settings.topic_prefix!r}")
    say(f"worker state under {settings.data_dir}")
    timings = f"orphan grace {settings.orphan_grace_s:g}s, dependency timeout "
    say(f"demo timings: {timings}{settings.dependency_timeout_s:g}s")
    if not settings.topic_prefix:
        say("tip: for a clean slate each run, set PSSYNC_TOPIC_PREFIX=demo$RANDOM.")
    print("\n".join(where_to_look(settings, log_path, not args.no_stack)), flush=True)
    stopper = Stopper()
    previous = signal.signal(signal.SIGINT, stopper)
    tail: OutputTail | None = None
    try:
        worker.start()
        if not worker.wait_ready(stopper):
            return 130 if stopper.requested else 1
        tail = OutputTail(settings, codec)
        code = feed_and_watch(args, settings, codec, firm, worker, tail, stopper)
    finally:
        signal.signal(signal.SIGINT, lambda *_: say("stopping the worker, a moment ..."))
        worker.stop()
        if tail is not None:
            tail.consumer.close()
        signal.signal(signal.SIGINT, previous)
    print("\n".join(where_to_look(settings, log_path, not args.no_stack)), flush=True)
    if not args.no_stack:
        say("the dev stack is still running; `pssync dev down` stops it")
    return code


def feed_and_watch(
    args: argparse.Namespace,
    settings: Settings,
    codec: Codec,
    firm: DemoFirm,
    worker: WorkerProcess,
    tail: OutputTail,
    stopper: Stopper,
) -> int:
    summary, sink = Summary(), ErpSink(firm, tail.commands_from, args.seed)
    pace = random.Random(args.seed + 1)
    fed: Counter[str] = Counter()
    erp_lines, hr_lines = firm.snapshot()
    print(banner("the firm's initial load (Debezium snapshot, op r)"))
    for who, what in firm.planted(settings.orphan_grace_s, settings.dependency_timeout_s):
        print(f"  {who:<27} {what}")
    # the ERP side first, so HR workers find their ERP employees already joined
    send(settings, codec, erp_lines)
    time.sleep(2.0)
    send(settings, codec, hr_lines)
    fed["snapshot"] = len(erp_lines) + len(hr_lines)
    started = time.monotonic()
    say(f"snapshot sent: {len(erp_lines)} ERP rows, {len(hr_lines)} HR workers; live changes")
    say(
        f"  (~{EVENTS_PER_S:g}/s) from +{LIVE_STREAM_AFTER_S:g}s; "
        + (f"running {args.duration:g}s" if args.duration else "^C to stop")
    )
    delay = f"{SINK_DELAY_S[0]:g}-{SINK_DELAY_S[1]:g}s"
    say(f"simulated ERP sink: applies each erp.cmd.employee command {delay} after it is issued")
    script = firm.script(settings.orphan_grace_s, settings.dependency_timeout_s)
    next_live = started + LIVE_STREAM_AFTER_S
    next_summary = started + SUMMARY_EVERY_S

    def step(now: float, live: bool) -> int:
        lines: list[str] = []
        while live and script and started + script[0].at_s <= now:
            story = script.pop(0).make()
            print(f"[+{now - started:4.0f}s] {story.text}", flush=True)
            fed[story.kind] += len(story.lines)
            lines += story.lines
        nonlocal next_live
        if live and now - next_live > 2.0:
            next_live = now  # fell behind: do not burst
        while live and now >= next_live:
            event = firm.next_event()
            fed[event.kind] += 1
            lines += event.lines
            next_live += pace.expovariate(EVENTS_PER_S)
        records = tail.poll(0.2)
        for record in records:
            summary.add(record)
            if record["topic"] == COMMANDS:
                sink.receive(record, now)
        lines += sink.due(now)
        send(settings, codec, lines)
        return len(records) + len(lines)

    def report(title: str, final: bool = False) -> None:
        live = ", ".join(f"{k} {n}" for k, n in sorted(fed.items()) if k != "snapshot")
        fed_line = f"fed: {sum(fed.values())} changes (snapshot {fed['snapshot']}; live: "
        fed_line += f"{live or 'none yet'})"
        head = [banner(title), fed_line, sink.line(), worker.stats_line(), ""]
        print("\n".join(head + summary.render(open_items=final)), flush=True)

    code = 0
    while not stopper.requested:
        now = time.monotonic()
        if args.duration and now - started >= args.duration:
            break
        if worker.exited() is not None:
            worker.failed(f"[demo] the worker exited with code {worker.exited()}")
            code = 1
            break
        step(now, live=True)
        if now >= next_summary:
            report(f"t+{now - started:.0f}s")
            next_summary += SUMMARY_EVERY_S
    if code == 0:
        say("feed stopped; letting the ERP sink and the worker settle (up to 15s) ...")
        try:
            quiet_since = settle_start = time.monotonic()
            while time.monotonic() - settle_start < 15 and worker.exited() is None:
                if step(time.monotonic(), live=False) or sink.pending:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= 3:
                    break
        except KeyboardInterrupt:
            say("wind-down skipped")
    report(f"final, after {time.monotonic() - started:.0f}s", final=True)
    return code
