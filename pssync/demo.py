"""`pssync demo`: the main job end to end, on a real Kafka and schema registry.

Starts the dev stack (unless --no-stack), creates the topics and registers the
schemas, runs `pssync worker` as a subprocess, and streams the simulator's
seeded firm (HR, ERP, CRM and PSA changes with faults injected; see
`pssync.demo_feed`) through the CLI's own produce path. Every ~10 s and at the
end it prints what the output topics hold and detected versus injected: the
worker's findings against the simulator's truth. The dev stack is left running.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
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
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from pssync import devstack
from pssync.avro.codec import Codec
from pssync.avro.contract import ALL_TOPICS, COMMAND_TOPICS, RECONCILED_TOPICS
from pssync.avro.registry import RegistryClient
from pssync.connectors.jsonl import Forms, decode_message
from pssync.connectors.kafka import check_kafka, client_config, contract_topic_specs, ensure_topics
from pssync.demo_feed import VERIFIED, DemoFeed, Stopper, sim_config
from pssync.settings import DEV_REGISTRY_URL, Settings

Record = dict[str, Any]

# finding topics: (title, the states shown)
FINDINGS = {
    "sync.drift": ("drift alerts", ("OPEN", "RESOLVED")),
    "sync.exceptions": ("exceptions", ("OPEN", "RESOLVED", "DISMISSED")),
}
WATCHED = (*COMMAND_TOPICS, *FINDINGS, *RECONCILED_TOPICS, "sync.dlq")
MOVES = ("opened", "resolved", "re-sent (facts changed)", "dismissed")
# demo timings, used where the matching PSSYNC_* variable is not set: the timed rules count
# on event time, which follows the simulated clock while the feed streams and the wall
# clock once it is idle, so short ones also come due within seconds of the feed's end
DEMO_DEFAULTS: dict[str, Any] = {"app_id": "pssync-demo", "web_host": "127.0.0.1"}
DEMO_DEFAULTS |= {"orphan_grace_s": 10, "project_setup_sla_s": 10, "dependency_timeout_s": 20}
DEMO_DEFAULTS |= {"tick_interval_s": 1.0}
READY_TIMEOUT_S = 120.0
SUMMARY_EVERY_S = 10.0
POLL_EVERY_S = 0.25
OPEN_SHOWN = 4  # entity ids shown per rule in the final list of open findings


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
    if not args.topic_prefix and not os.environ.get("PSSYNC_TOPIC_PREFIX"):
        # a clean slate: a worker that saw this seed's changes takes them for redeliveries
        overrides["topic_prefix"] = time.strftime("demo-%Y%m%d-%H%M%S.")
    for name, value in DEMO_DEFAULTS.items():
        if not os.environ.get(f"PSSYNC_{name.upper()}") and overrides.get(name) is None:
            overrides[name] = value
    if not os.environ.get("PSSYNC_API_TOKENS"):
        # a token for this run's console and API (only its hash reaches the worker)
        DEMO_TOKEN[0] = secrets.token_urlsafe(24)
        digest = hashlib.sha256(DEMO_TOKEN[0].encode()).hexdigest()
        overrides["api_tokens"] = f"{DEMO_OPERATOR}:read+act:{digest}"
    return Settings.from_env(**overrides)


DEMO_OPERATOR = "demo-operator"
# the token made for this run (none when PSSYNC_API_TOKENS is set: yours apply)
DEMO_TOKEN: list[str] = [""]


def prepare(settings: Settings) -> Codec:
    check_kafka(settings)
    created = ensure_topics(settings, contract_topic_specs(settings, settings.partitions))
    fresh = sum(1 for v in created.values() if v == "created")
    say(f"topics: {fresh} created, {len(created) - fresh} already there")
    codec = Codec(RegistryClient.from_settings(settings), settings.topic_prefix)
    codec.register_all(ALL_TOPICS)
    say(f"schemas registered for {len(ALL_TOPICS)} topics at {settings.schema_registry_url}")
    return codec


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
        parts = []
        for k, v in stats.items():
            if isinstance(v, dict) and all(isinstance(n, int) for n in v.values()):
                parts.append(f"{k} {sum(v.values())}")
            elif isinstance(v, int):
                parts.append(f"{k} {v}")
        streams = [t["stream"] for t in (stats.get("stream_time") or {}).values() if t["stream"]]
        if streams:
            parts.append(f"stream time {min(streams)}")
        return "worker /stats: " + ", ".join(parts)

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return "  (no log)"
        return "\n".join(f"  | {line}" for line in lines)


# -- reading the outputs ------------------------------------------------------
class OutputTail:
    """Reads the watched output topics from the beginning, decoded to the JSON form."""

    def __init__(self, settings: Settings, codec: Codec) -> None:
        self.settings, self.codec, self.forms = settings, codec, Forms()
        self.consumer = Consumer(
            client_config(
                settings,
                **{"group.id": f"pssync-demo-tail-{uuid.uuid4()}", "enable.auto.commit": False},
            )
        )
        assignment = []
        # where this run's outputs start: what is already there belongs to earlier runs
        self.starts: dict[tuple[str, int], int] = {}
        self.earlier = 0
        for topic in WATCHED:
            physical = settings.topic(topic)
            meta = self.consumer.list_topics(physical, timeout=10).topics[physical]
            for p in sorted(meta.partitions):
                assignment.append(TopicPartition(physical, p, OFFSET_BEGINNING))
                low, high = self.consumer.get_watermark_offsets(
                    TopicPartition(physical, p), timeout=10
                )
                self.starts[(topic, p)] = high
                self.earlier += high - low
        self.consumer.assign(assignment)

    def this_run(self, record: Record) -> bool:
        return bool(record["offset"] >= self.starts.get((record["topic"], record["partition"]), 0))

    def poll(self, timeout_s: float) -> list[Record]:
        out = []
        while True:
            batch = self.consumer.consume(500, timeout=timeout_s)
            for msg in batch:
                error = msg.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        say(f"consumer error: {error}")
                    continue
                out.append(decode_message(self.settings, self.codec, self.forms, msg))
            if len(batch) < 500:
                return out
            timeout_s = 0


class Summary:
    """What the output topics hold: the latest state per alert, exception and golden key;
    and this run's records of the topics detected versus injected is computed from."""

    def __init__(self) -> None:
        self.commands: Counter[tuple[str, str]] = Counter()
        # topic -> finding id -> (rule, severity, state, entity); and transitions per topic
        self.findings: dict[str, dict[str, tuple[str, str, str, str]]] = {t: {} for t in FINDINGS}
        self.moves: dict[str, Counter[str]] = {t: Counter() for t in FINDINGS}
        self.golden: dict[str, dict[str, bool]] = {t: {} for t in RECONCILED_TOPICS}
        self.dlq: Counter[str] = Counter()
        self.undecodable = 0
        self.verified: list[Record] = []
        self.seen = 0

    def add(self, record: Record, this_run: bool) -> None:
        self.seen += 1
        topic, value = record["topic"], record["value"]
        if "error" in record:
            self.undecodable += 1
            return
        if this_run and topic in VERIFIED:
            self.verified.append(record)
        if topic in self.golden:
            key = json.dumps(record["key"], sort_keys=True)
            if value is None:
                self.golden[topic].pop(key, None)
            else:
                self.golden[topic][key] = bool(value["in_sync"])
        elif value is None:
            return
        elif topic in COMMAND_TOPICS:
            self.commands[(topic, value["type"])] += 1
        elif topic in FINDINGS:
            self._finding(topic, value)
        elif topic == "sync.dlq":
            self.dlq[f"{value['original_topic']}: {value['error_class']}"] += 1

    def _finding(self, topic: str, value: Record) -> None:
        latest = self.findings[topic]
        finding_id = value.get("alert_id") or value["exception_id"]
        before = latest.get(finding_id)
        state = value["state"]
        move = "opened" if state == "OPEN" else state.lower()
        if move == "opened" and before and before[2] == "OPEN":
            move = "re-sent (facts changed)"
        self.moves[topic][move] += 1
        severity = value.get("severity") or "-" if topic == "sync.drift" else ""
        latest[finding_id] = (value["rule"], severity, state, value["entity_id"])

    def render(self, open_items: bool) -> list[str]:
        out = [f"commands ({', '.join(COMMAND_TOPICS)})"]
        rows = [(t, k, n) for (t, k), n in sorted(self.commands.items())]
        out += table(["topic", "type", "issued"], rows) or ["  (none yet)"]
        for topic, (what, states) in FINDINGS.items():
            out += ["", f"{what} ({topic}), latest state of each"]
            by_rule: dict[tuple[str, ...], Counter[str]] = {}
            for rule, severity, state, _ in self.findings[topic].values():
                key = (rule, severity) if topic == "sync.drift" else (rule,)
                by_rule.setdefault(key, Counter())[state] += 1
            head = ["rule", "severity"] if topic == "sync.drift" else ["rule"]
            out += table(
                [*head, *states],
                [(*k, *(c[s] for s in states)) for k, c in sorted(by_rule.items())],
            ) or ["  (none yet)"]
            moves = self.moves[topic]
            out.append(
                "  transitions: "
                + (", ".join(f"{moves[k]} {k}" for k in MOVES if moves[k]) or "none yet")
            )
        out += ["", "golden records, latest per key"]
        golden = [
            (t, len(r), sum(r.values()), len(r) - sum(r.values())) for t, r in self.golden.items()
        ]
        out += table(["topic", "records", "in sync", "with open findings"], golden)
        dlq = ", ".join(f"{k} x{n}" for k, n in sorted(self.dlq.items()))
        out += ["", f"dead letters (sync.dlq): {self.dlq.total()}" + (f" ({dlq})" if dlq else "")]
        if self.undecodable:
            out.append(f"records the demo could not decode: {self.undecodable}")
        if open_items:
            out += ["", "still open (the operations queue):"]
            out += self._still_open() or ["  nothing: every finding resolved"]
        return out

    def _still_open(self) -> list[str]:
        still: dict[str, list[str]] = {}
        for found in self.findings.values():
            for rule, _, state, entity in found.values():
                if state == "OPEN":
                    still.setdefault(rule, []).append(entity)

        def shown(entities: list[str]) -> str:
            more = f", ... (+{len(entities) - OPEN_SHOWN})" if len(entities) > OPEN_SHOWN else ""
            return ", ".join(sorted(entities)[:OPEN_SHOWN]) + more

        rows = [(rule, len(ids), shown(ids)) for rule, ids in sorted(still.items())]
        return table(["rule", "open", "entities"], rows)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """Plain aligned text: the first column left, numeric columns right-aligned."""
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
    token = DEMO_TOKEN[0]
    login = f"token {token} (this run's; operator {DEMO_OPERATOR!r})" if token else "your token"
    out += [
        f"  console: {url}/console  (the exception queue: dismiss, retry, post to the next",
        f"           open period, assign; log in with {login}, while the demo runs)",
        f"  queue:   PSSYNC_API_TOKEN={token or '<yours>'} pssync exceptions list --api-url {url}",
        f"  worker:  {url}/health  {url}/ready  {url}/stats  (while the demo runs)",
        f"  metrics: {url}/metrics  (Prometheus text format, while the demo runs)",
        f"  worker log: {log_path}",
    ]
    if stack:
        out.append("  the stack: pssync dev status  |  pssync dev down  (stops Kafka + registry)")
    return out


def banner(title: str) -> str:
    return f"\n=== {title} " + "=" * max(3, 76 - len(title))


# -- the run ------------------------------------------------------------------
def run_demo(args: argparse.Namespace) -> int:
    config = sim_config(args)
    fresh_prefix = not args.topic_prefix and not os.environ.get("PSSYNC_TOPIC_PREFIX")
    settings = demo_settings(args)
    log_path = settings.data_dir / f"{settings.topic_prefix}{settings.app_id}-worker.log"
    worker = WorkerProcess(settings, log_path)
    worker.check_port()
    codec = prepare(settings)
    say(f"app id {settings.app_id!r}, topic prefix {settings.topic_prefix!r}")
    if fresh_prefix:
        say("  (a fresh prefix each run, for a clean slate; choose one: PSSYNC_TOPIC_PREFIX)")
    say(f"worker state under {settings.data_dir}")
    stopper = Stopper()
    feed = DemoFeed(config, args.days, args.rate, stopper)
    print("\n".join(where_to_look(settings, log_path, not args.no_stack)), flush=True)
    previous = signal.signal(signal.SIGINT, stopper)
    tail: OutputTail | None = None
    try:
        worker.start()
        if not worker.wait_ready(stopper):
            return 130 if stopper.requested else 1
        tail = OutputTail(settings, codec)
        if tail.earlier:
            say(f"the output topics hold {tail.earlier} records of an earlier run, and the worker")
            say("  remembers it: detected versus injected may miss findings (use a fresh prefix)")
        code = feed_and_watch(args, settings, codec, feed, worker, tail, stopper)
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
    feed: DemoFeed,
    worker: WorkerProcess,
    tail: OutputTail,
    stopper: Stopper,
) -> int:
    summary = Summary()
    started = time.monotonic()
    clock = {"poll": started, "summary": started + SUMMARY_EVERY_S, "shown": -1.0}
    failed: list[int] = []

    def read(timeout_s: float) -> int:
        records = tail.poll(timeout_s)
        for record in records:
            summary.add(record, tail.this_run(record))
        return len(records)

    def report(title: str, final: bool = False) -> None:
        clock["shown"] = summary.seen
        head = [banner(title), feed.line(), worker.stats_line(), ""]
        body = [*summary.render(open_items=final), ""]
        body += feed.report(summary.verified, settings, final)
        if tail.earlier:
            body.append("  (this run's outputs only; the worker remembers the earlier run's input)")
        print("\n".join(head + body), flush=True)

    def alive() -> bool:
        if worker.exited() is None:
            return True
        worker.failed(f"[demo] the worker exited with code {worker.exited()}")
        failed.append(1)
        return False

    def watch() -> bool:
        """Between the feed's events: read the outputs, report when due; False stops."""
        now = time.monotonic()
        if now >= clock["poll"]:
            read(0)
            clock["poll"] = now + POLL_EVERY_S
        if now >= clock["summary"]:
            report(f"t+{now - started:.0f}s")
            clock["summary"] = now + SUMMARY_EVERY_S
        return alive()

    for line in feed.intro(settings):
        say(line)
    say("streaming; " + (f"running {args.duration:g}s" if args.duration else "^C to stop"))
    feed.stream(settings, codec, args.duration, watch)
    if feed.problems:
        say(f"{feed.problems} changes were not sent (see the lines above): a bug in the feed")
    if feed.ran_out:
        now = time.monotonic()
        say(f"the {args.days} simulated days are sent (+{now - started:.0f}s); summarising on")
    quiet_said = False
    while not failed and not stopper.requested:
        now = time.monotonic()
        if args.duration and now - started >= args.duration:
            break
        if not alive():
            break
        read(0.5)
        if now >= clock["summary"]:
            if summary.seen != clock["shown"]:
                report(f"t+{now - started:.0f}s")
            elif not quiet_said:
                say("nothing new since the last summary; ^C to stop")
                quiet_said = True
            clock["summary"] = now + SUMMARY_EVERY_S
    if not failed:
        say("letting the worker settle (up to 15s) ...")
        try:
            quiet_since = settle_start = time.monotonic()
            while time.monotonic() - settle_start < 15 and worker.exited() is None:
                if read(0.5):
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= 3:
                    break
        except KeyboardInterrupt:
            say("wind-down skipped")
    report(f"final, after {time.monotonic() - started:.0f}s", final=True)
    return 1 if failed else 0
