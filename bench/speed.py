"""pssync's speed benchmark: `./run bench [--workload small|large|xl]`.

Runs on the local stack (`pssync dev up`; `./run bench` starts it). Each part
uses its own topic prefix and consumer group, so runs never share state:

1. **workload**: the simulator's seeded firm, produced whole (`--rate 0`);
2. **ceiling**: a bare confluent-kafka consumer reading those CDC topics to the
   end and decoding every record with fastavro, nothing else (the baseline);
3. **pssync**: a fresh worker (1, or each of `--scale`) reads the backlog. The
   end-to-end rate is the CDC records over the time from the worker being
   ready to the last POST_TIME_ENTRY; the ingest and keyed stages are the
   records over each stage's own busy time (`pssync_batch_processing_seconds`);
   peak RSS is the worker's VmHWM; the correctness line compares every output
   with the simulator's truth (and, with `--scale`, with the 1-worker run);
4. **peer**: the worker slice written with Quix Streams (`bench/peers`) on the
   same topics;
5. **latency**: a fresh worker, then the firm's changes offered at 1,000 and
   5,000/s; per output, its Kafka timestamp minus that of the latest input in its
   causation (p50, p99), with the default alignment settings and with tight ones;
6. **restart** to ready after SIGTERM and SIGKILL (`bench/restart.py`);
7. **rebuild** of `--rebuild-keys` keys from changelogs (`bench/rebuild.py`).

Every speed is quoted as a ratio to the ceiling measured in the same run. Prints
one table and writes it, with the command line and the machine, to
`bench/results/<workload>-<date>.md` (and `.json`). `--profile` also records a
py-spy flame graph of the pssync run into the results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from bench import kafka_io
from bench.backlog import env_of, free_port, outcome
from pssync.avro.codec import Codec
from pssync.avro.contract import ALL_TOPICS, CDC_TOPICS, OUTPUT_TOPICS
from pssync.avro.registry import RegistryClient
from pssync.connectors.kafka import wait_drained
from pssync.settings import Settings
from pssync.simulate.verify import compare, load_truth

WORKLOADS: dict[str, dict[str, int]] = {
    "small": {"workers": 30, "customers": 6, "count": 6_000},
    "medium": {"workers": 1_000, "customers": 100, "count": 60_000},
    "large": {"workers": 3_000, "customers": 300, "count": 200_000},
    "xl": {"workers": 10_000, "customers": 1_000, "count": 1_000_000},
}
RESULTS = Path(__file__).resolve().parent / "results"
KEYED = ("worker-keyed", "project-keyed")
POST = "erp.cmd.time_entry"


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class Worker:
    """One `pssync worker` process, optionally under py-spy."""

    def __init__(
        self, settings: Settings, log: Path, flame: Path | None = None, src: Path | None = None
    ) -> None:
        self.settings = settings.model_copy(
            update={"web_port": free_port(), "web_host": "127.0.0.1"}
        )
        env = env_of(self.settings)
        if src is not None:  # an earlier revision's code (`--compare-with`)
            env["PYTHONPATH"] = str(src)
        cmd = [sys.executable, "-m", "pssync", "worker"]
        if flame is not None:
            spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            raw = ["--gil", "-f", "raw"] if flame.suffix == ".txt" else []  # bench.profile
            cmd = [spy, "record", "-r", "47", *raw, "-o", str(flame), "--", *cmd]
        self.log = log
        with open(log, "wb") as out:
            # `python -m` puts the working directory first on the path: run from the
            # revision's tree (or the log's directory), never from this checkout's root
            cwd = src if src is not None else log.parent
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT
            )
        self.started = time.time()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.settings.web_port}{path}"

    def wait_ready(self, timeout_s: float = 180) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"worker exited with {self.proc.returncode}: see {self.log}")
            try:
                with urllib.request.urlopen(self.url("/ready"), timeout=2) as resp:
                    if resp.status == 200:
                        return time.time()
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"worker not ready within {timeout_s}s: see {self.log}")

    def pid(self) -> int:
        """The worker's own pid (py-spy's child when profiled)."""
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            return int(children.split()[0]) if children.split() else self.proc.pid
        except (OSError, ValueError):
            return self.proc.pid

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid()}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stage_seconds(self) -> dict[str, float]:
        """Busy seconds per agent, from the worker's own histogram."""
        with urllib.request.urlopen(self.url("/metrics"), timeout=5) as resp:
            text = resp.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("pssync_batch_processing_seconds_sum{"):
                agent = line.split('agent="', 1)[1].split('"', 1)[0]
                out[agent] = float(line.rsplit(" ", 1)[1])
        return out

    # a token with `read`, for a worker run with PSSYNC_API_TOKENS (/stats then needs it)
    token: str | None = None

    def stats(self) -> dict[str, Any]:
        request = urllib.request.Request(self.url("/stats"))
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=10) as resp:
            return dict(json.loads(resp.read()))

    def wait_settled(self, timeout_s: float = 7200) -> None:
        """Until nothing received waits in the alignment buffer and the outputs have not
        moved for a while (the last timers fire once every source is idle)."""
        quiet = 2 * (self.settings.source_idle_s + 2 * self.settings.tick_interval_s)
        deadline = time.monotonic() + timeout_s
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            stats = self.stats()
            pending = stats.get("pending", 0)  # (not reported before this version)
            now = (pending, stats["released"], json.dumps(stats["outputs"], sort_keys=True))
            if now != last:
                last, since = now, time.monotonic()
            elif pending == 0 and time.monotonic() - since >= quiet:
                return
            time.sleep(0.5)
        raise SystemExit(f"worker not settled within {timeout_s}s: see {self.log}")

    def stop(self) -> None:
        self.proc.send_signal(2 if self.log.name.startswith("profile") else 15)
        try:
            self.proc.wait(90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def settings_for(name: str, root: Path, **extra: Any) -> Settings:
    tag = f"{name[:4]}-{uuid.uuid4().hex[:6]}"
    return Settings.from_env(
        topic_prefix=f"b.{tag}.",  # short: the Quix peer names its topics after these
        app_id=f"pssync-bench-{tag}",
        data_dir=root / tag,
        **extra,
    )


def codec_for(settings: Settings) -> Codec:
    codec = Codec(RegistryClient.from_settings(settings), settings.topic_prefix)
    codec.register_all(ALL_TOPICS)
    return codec


def create_topics(settings: Settings) -> None:
    cmd = [sys.executable, "-m", "pssync", "topics", "create"]
    subprocess.run(cmd, env=env_of(settings), check=True, stdout=subprocess.DEVNULL)


def simulate(settings: Settings, firm: dict[str, int], seed: int, *extra: str) -> None:
    cmd = [sys.executable, "-m", "pssync", "simulate", "--seed", str(seed), "--progress", "30"]
    for flag, value in firm.items():
        cmd += [f"--{flag}", str(value)]
    subprocess.run([*cmd, *extra], env=env_of(settings), check=True)


def produce_workload(root: Path, firm: dict[str, int], seed: int) -> tuple[Settings, Path]:
    settings = settings_for("workload", root)
    create_topics(settings)
    truth = root / "truth.jsonl"
    say(f"workload: producing {firm} (seed {seed})")
    simulate(settings, firm, seed, "--rate", "0", "--truth", str(truth))
    return settings, truth


def measure_ceiling(workload: Settings, runs: int) -> dict[str, Any]:
    codec = codec_for(workload)
    kafka_io.warm_codec(workload, codec, list(CDC_TOPICS))
    results = [kafka_io.ceiling(workload, codec, list(CDC_TOPICS)) for _ in range(runs)]
    records = results[0][0]
    seconds = statistics.median(s for _, s in results)
    say(f"ceiling: {records} records in {seconds:.2f}s (median of {runs})")
    return {"records": records, "seconds": seconds, "rate": records / seconds}


def settle(settings: Settings) -> None:
    topics = [settings.topic(t) for t in CDC_TOPICS] + [settings.internal_topic(t) for t in KEYED]
    wait_drained(settings, topics, timeout_s=7200)


def run_pssync(
    workload: Settings,
    root: Path,
    truth: Path,
    workers: int,
    flame: Path | None = None,
    src: Path | None = None,
) -> dict[str, Any]:
    """Fresh worker(s) on the workload's topics (a new group, empty data dirs)."""
    tag = f"w{workers}-{uuid.uuid4().hex[:6]}"
    settings = workload.model_copy(
        update={"app_id": f"pssync-bench-{tag}", "data_dir": root / tag, "batch_size": 2000}
    )
    logs = [root / f"{'profile' if flame else 'worker'}-{tag}-{i}.log" for i in range(workers)]
    procs = [
        Worker(settings.model_copy(update={"data_dir": root / f"{tag}-{i}"}), logs[i], flame, src)
        for i in range(workers)
    ]
    try:
        ready = max(p.wait_ready() for p in procs)
        say(f"pssync x{workers}: ready; reading the backlog")
        settle(settings)
        for p in procs:  # committed offsets say read, not applied: the buffer must empty
            p.wait_settled()
        rss = max(p.peak_rss_mib() for p in procs)
        stages: dict[str, float] = {}
        for p in procs:
            for agent, s in p.stage_seconds().items():
                stages[agent] = stages.get(agent, 0.0) + s
    finally:
        for p in procs:
            p.stop()
    outputs = [settings.topic(t) for t in OUTPUT_TOPICS]
    stamps = kafka_io.timestamps(settings, outputs)
    last_post = stamps.last.get(settings.topic(POST), 0) / 1000
    last_any = max(stamps.last.values(), default=0) / 1000
    result = outcome(settings)
    verdict = compare(load_truth(truth), result["records"])
    keyed = sum(s for a, s in stages.items() if a in KEYED)
    ingest = sum(s for a, s in stages.items() if a not in KEYED)
    return {
        "workers": workers,
        "seconds": last_post - ready,
        "drained_seconds": last_any - ready,
        "ingest_busy_s": ingest,
        "keyed_busy_s": keyed,
        "peak_rss_mib": rss,
        "commands": result["commands"],
        "findings": result["findings"],
        "golden": result["golden"],
        "truth_ok": verdict.ok,
        "truth_lines": verdict.lines() if not verdict.ok else [],
    }


def latency(
    root: Path, firm: dict[str, int], seed: int, rate: float, seconds: float, tight: bool
) -> dict[str, Any]:
    """Offered `rate` changes/s for `seconds`: p50/p99 from input to output timestamps.

    The firm's initial state (its Debezium snapshot, op "r") is loaded first, unpaced,
    and settled (`PSSYNC_SNAPSHOT_IDLE_S` 3 s); then its streamed changes are offered at
    `rate`, and only outputs of those count."""
    extra: dict[str, Any] = {"snapshot_idle_s": 3.0}
    if tight:
        extra |= {"source_idle_s": 0.2, "tick_interval_s": 0.1}
    settings = settings_for(f"lat{int(rate)}", root, **extra)
    create_topics(settings)
    lines = root / f"lat-{int(rate)}-{tight}.jsonl"
    # the snapshot is about ten lines per HR worker, then the streamed changes
    count = firm["workers"] * 12 + int(rate * seconds)
    simulate(settings, {**firm, "count": count}, seed, "--rate", "0", "--output", str(lines))
    records = kafka_io.encode_file(settings, codec_for(settings), lines)
    snapshot = [r for r in records if r.snapshot]
    streamed = [r for r in records if not r.snapshot][: int(rate * seconds)]
    kafka_io.feed(settings, snapshot, None)
    worker = Worker(settings, root / f"lat-{int(rate)}-{tight}.log")
    try:
        worker.wait_ready()
        settle(settings)  # the snapshot read, then released once every source is idle
        time.sleep(settings.snapshot_idle_s)
        worker.wait_settled()
        offered_ms = time.time() * 1000
        sent, took = kafka_io.feed(settings, streamed, rate)
        settle(settings)
        worker.wait_settled()
    finally:
        worker.stop()
    inputs: dict[tuple[str, int, int], int] = {}
    logical = {settings.topic(t): t for t in CDC_TOPICS}
    for msg in kafka_io.read_all(settings, list(logical)):
        inputs[(logical[msg.topic()], msg.partition(), msg.offset())] = msg.timestamp()[1]
    codec = codec_for(settings)
    from pssync.connectors.jsonl import Forms, decode_message

    forms = Forms()
    waits = []
    for msg in kafka_io.read_all(settings, [settings.topic(t) for t in OUTPUT_TOPICS]):
        value = decode_message(settings, codec, forms, msg).get("value") or {}
        seen = [inputs[c] for c in kafka_io.causes(value) if c in inputs]
        if seen and max(seen) >= offered_ms:  # caused by an offered change
            waits.append(msg.timestamp()[1] - max(seen))
    waits.sort()

    def pct(q: float) -> float:
        return float(waits[min(len(waits) - 1, int(q * len(waits)))]) if waits else float("nan")

    delay = settings.source_idle_s + settings.tick_interval_s
    say(f"latency @{rate:.0f}/s tight={tight}: {len(waits)} outputs, p50 {pct(0.5)} ms")
    return {
        "rate": rate,
        "achieved": sent / took,
        "offered": sent,
        "snapshot": len(snapshot),
        "tight": tight,
        "outputs": len(waits),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "alignment_delay_ms": delay * 1000,
    }


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}"


def table(report: dict[str, Any]) -> list[str]:
    """The one table, every speed as a ratio to the ceiling of the same run."""
    ceil = report["ceiling"]["rate"]
    n = report["ceiling"]["records"]
    rows = [("raw ceiling: consume + fastavro decode", f"{ceil:,.0f}/s", "1.00", "baseline")]
    for run in report["pssync"]:
        w = run["workers"]
        rate = n / run["seconds"]
        rows.append(
            (
                f"pssync end to end, {w} worker(s)",
                f"{rate:,.0f}/s",
                f"{rate / ceil:.3f}",
                f"first input to last POST_TIME_ENTRY {run['seconds']:.1f}s",
            )
        )
        if w == 1:
            for stage in ("ingest", "keyed"):
                busy = run[f"{stage}_busy_s"]
                srate = n / busy if busy else float("nan")
                rows.append(
                    (
                        f"  {stage} stage (busy time)",
                        f"{srate:,.0f}/s",
                        f"{srate / ceil:.3f}",
                        f"{busy:.1f}s busy",
                    )
                )
            rows.append(("  peak RSS", f"{run['peak_rss_mib']:.0f} MiB", "", ""))
    before = report.get("before")
    if before:
        rate = n / before["seconds"]
        one = report["pssync"][0]
        rows.append(
            (
                f"pssync at {before['revision']} (same run), 1 worker",
                f"{rate:,.0f}/s",
                f"{rate / ceil:.3f}",
                f"now / then = {before['seconds'] / one['seconds']:.2f}x; "
                f"truth {'yes' if before['truth_ok'] else 'NO'}",
            )
        )
    peer = report.get("peer")
    if peer:
        one = report["pssync"][0]
        rows.append(
            (
                "Quix Streams peer (worker slice)",
                f"{peer['rate']:,.0f}/s",
                f"{peer['rate'] / ceil:.3f}",
                f"pssync / peer = {n / one['seconds'] / peer['rate']:.2f}",
            )
        )
    for lat in report.get("latency", []):
        label = "tight" if lat["tight"] else "default"
        rows.append(
            (
                f"latency @{lat['rate']:,.0f}/s offered ({label} alignment)",
                f"p50 {lat['p50_ms']:.0f} ms",
                f"p99 {lat['p99_ms']:.0f} ms",
                f"alignment delay <= {lat['alignment_delay_ms']:.0f} ms; "
                f"achieved {lat['achieved']:,.0f}/s, {lat['outputs']} outputs",
            )
        )
    restart = report.get("restart")
    if restart:
        for key, value in restart.items():
            if isinstance(value, int | float) and key.endswith("_s"):
                rows.append((f"restart: {key}", f"{value:.2f} s", "", ""))
    rebuild = report.get("rebuild")
    if rebuild:
        for key, value in rebuild.items():
            if isinstance(value, int | float):
                rows.append((f"rebuild: {key}", f"{value:,.2f}", "", ""))
    ok = all(r["truth_ok"] for r in report["pssync"])
    ref = report["pssync"][0]
    same = all(
        r["commands"] == ref["commands"]
        and r["findings"] == ref["findings"]
        and r["golden"] == ref["golden"]
        for r in report["pssync"]
    )
    rows.append(
        (
            "correctness: outputs equal the simulator's truth",
            "yes" if ok else "NO",
            "",
            f"{len(ref['commands']):,} commands, {len(ref['findings'])} findings, "
            f"{len(ref['golden']):,} golden; same across runs: {'yes' if same else 'NO'}",
        )
    )
    width = max(len(r[0]) for r in rows)
    out = [
        f"| {'measure':<{width}} | value | ratio to ceiling | note |",
        f"|{'-' * (width + 2)}|---|---|---|",
    ]
    out += [f"| {a:<{width}} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return out


def write_results(report: dict[str, Any], lines: list[str], name: str, where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d-%H%M")
    path = where / f"{name}-{stamp}.md"
    head = [
        f"# pssync bench: {name}, {report['date']}",
        "",
        f"- command: `{report['command']}`",
        f"- machine: {report['machine']}",
        f"- firm: {report['firm']}",
        "",
    ]
    path.write_text("\n".join(head + lines) + "\n", encoding="utf-8")
    slim = {
        **report,
        "pssync": [
            {k: v for k, v in r.items() if k not in ("commands", "findings", "golden")}
            for r in report["pssync"]
        ],
    }
    path.with_suffix(".json").write_text(kafka_io.dumps(slim), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="./run bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="small")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", type=int, default=3, help="ceiling runs (median)")
    parser.add_argument("--scale", default="1", help="worker processes per run, e.g. 1,2,3")
    parser.add_argument("--rates", default="1000,5000", help="offered changes/s for latency")
    parser.add_argument("--latency-s", type=float, default=20, help="seconds offered per rate")
    parser.add_argument("--rebuild-keys", type=int, default=1_000_000)
    parser.add_argument(
        "--skip", action="append", default=[], choices=["peer", "latency", "restart", "rebuild"]
    )
    parser.add_argument("--profile", action="store_true", help="py-spy flame graph of pssync")
    parser.add_argument(
        "--compare-with", metavar="REV", help="also run pssync at git revision REV (same run)"
    )
    parser.add_argument("--keep", type=Path, help="keep logs and state here")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the table goes")
    args = parser.parse_args(argv)
    firm = WORKLOADS[args.workload]
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["./run", "bench", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "firm": {**firm, "seed": args.seed},
    }
    with tempfile.TemporaryDirectory(prefix="pssync-bench-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        workload, truth = produce_workload(root, firm, args.seed)
        report["ceiling"] = measure_ceiling(workload, args.runs)
        report["pssync"] = [
            run_pssync(workload, root, truth, int(w)) for w in args.scale.split(",")
        ]
        for r in report["pssync"]:
            say(f"pssync x{r['workers']}: {r['seconds']:.1f}s, truth ok={r['truth_ok']}")
        if args.compare_with:
            src = root / "before"
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(src), args.compare_with],
                check=True,
                cwd=RESULTS.parent.parent,
                stdout=subprocess.DEVNULL,
            )
            try:
                before = run_pssync(workload, root, truth, 1, src=src)
            finally:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(src)],
                    check=False,
                    cwd=RESULTS.parent.parent,
                )
            report["before"] = {
                "revision": args.compare_with,
                **{k: v for k, v in before.items() if k not in ("commands", "findings", "golden")},
            }
        if args.profile:
            args.results.mkdir(parents=True, exist_ok=True)
            flame = args.results / f"flame-{args.workload}.svg"
            run_pssync(workload, root, truth, 1, flame)
            report["flame_graph"] = str(flame)
        if "peer" not in args.skip:
            from bench.peers.quix_worker import run_peer

            report["peer"] = run_peer(
                workload.topic_prefix,
                workload.kafka_bootstrap,
                workload.schema_registry_url,
                7200,
            )
        if "latency" not in args.skip:
            report["latency"] = [
                latency(root, firm, args.seed, float(rate), args.latency_s, tight)
                for rate in args.rates.split(",")
                for tight in (False, True)
            ]
        if "restart" not in args.skip:
            from bench import restart

            report["restart"] = restart.run(workload, runs=args.runs)
        if "rebuild" not in args.skip:
            from bench import rebuild

            report["rebuild"] = rebuild.run(
                args.rebuild_keys, 3, 200, args.runs, Settings.from_env()
            )
    lines = table(report)
    print("\n".join(lines))
    path = write_results(report, lines, args.workload, args.results)
    say(f"written to {path}")
    ok = all(r["truth_ok"] for r in report["pssync"])
    for r in report["pssync"]:
        for line in r["truth_lines"][:20]:
            say(f"x{r['workers']}: {line}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
