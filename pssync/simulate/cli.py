"""`pssync simulate`: stream the simulated firm to Kafka (or a file) and write the truth.

Lines go through the CLI's own produce path (`connectors.jsonl.produce_lines`);
UNDECODABLE garbage, which produce would reject, goes with a plain producer
straight to its CDC topic (or, with --output, to a side file). Pacing,
--duration and ^C act between groups, so what was sent is always whole events.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import sys
import textwrap
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from pssync.simulate.faults import DEFAULT_RATE, parse_fault_rates
from pssync.simulate.feed import Group, Item, Line, limit_count
from pssync.simulate.model import Firm, SimConfig
from pssync.simulate.story import run
from pssync.simulate.truth import FAULTS, KINDS, TruthLog, iso

if TYPE_CHECKING:
    from pssync.avro.codec import Codec
    from pssync.settings import Settings

MIN_WORKERS = 8
MIN_CUSTOMERS = 3


def _fault_help() -> str:
    rows = []
    for kind in KINDS:
        entity, expects = FAULTS[kind]
        outcome = ", ".join(
            f"{e.kind} {e.rule}" if e.rule else (e.kind or "nothing") for e in expects
        )
        rows.append(f"  {kind:<32} -> {outcome} ({entity})")
    return (
        "fault kinds (--fault KIND=P) and what the worker should make of each:\n"
        + "\n".join(rows)
        + "\n\nTimed rules fire only after the worker's own clocks:"
        "\nERP_EMPLOYEE_WITHOUT_HR_WORKER after PSSYNC_ORPHAN_GRACE_S,"
        "\nSOW_SIGNED_WITHOUT_PROJECT after PSSYNC_PROJECT_SETUP_SLA_S,"
        "\nDEPENDENCY_TIMEOUT after PSSYNC_DEPENDENCY_TIMEOUT_S."
        "\nSee pssync/simulate/faults.py for where each kind is injected, and the truth"
        "\nfile's first line for the expected counts."
    )


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The `simulate` subcommand's parser (main adds the connection flags)."""
    p: argparse.ArgumentParser = sub.add_parser(
        "simulate",
        help="stream a seeded, simulated firm with injected faults; write the truth",
        description=textwrap.fill(
            "Simulates a professional-services firm (HR, ERP, CRM and PSA) on a "
            "simulated clock from --start and streams its changes, as Debezium CDC lines in "
            "source-time order, through the produce path (or to --output). Faults are injected "
            "at the given rates and recorded with the outcome they should cause (--truth). The "
            "same seed and flags give byte-identical lines. Stops at --count, --duration or "
            "--days, whichever comes first (always after a whole business event), or ^C.",
            width=88,
        ),
        epilog=_fault_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    firm = p.add_argument_group("the firm")
    firm.add_argument("--seed", type=int, default=7, help="random seed (7)")
    firm.add_argument(
        "--start",
        default="2026-03-02T08:00:00Z",
        metavar="ISO",
        help="simulated clock's start, UTC (2026-03-02T08:00:00Z, a Monday)",
    )
    firm.add_argument(
        "--workers", type=int, default=30, metavar="N", help="HR workers at the start (30)"
    )
    firm.add_argument(
        "--customers", type=int, default=6, metavar="N", help="ERP customers at the start (6)"
    )
    stream = p.add_argument_group("the stream")
    stream.add_argument(
        "--rate",
        type=float,
        default=50.0,
        metavar="R",
        help="changes per second; 0 = as fast as possible (50)",
    )
    stream.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    stream.add_argument("--count", type=int, metavar="N", help="stop after N changes")
    stream.add_argument("--days", type=int, metavar="D", help="stop after D simulated days")
    stream.add_argument(
        "--output",
        type=Path,
        metavar="F.jsonl",
        help="write the lines to F instead of Kafka (send later with `pssync produce --file F`);"
        " UNDECODABLE records go to F's .undecodable.jsonl side file",
    )
    stream.add_argument(
        "--progress", type=float, default=5.0, metavar="S", help="progress every S seconds (5)"
    )
    faults = p.add_argument_group("faults and truth")
    faults.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND=P",
        help="probability per eligible event of one fault kind (repeatable); see below",
    )
    faults.add_argument(
        "--fault-rate",
        type=float,
        default=DEFAULT_RATE,
        metavar="P",
        help=f"probability for every kind not given with --fault ({DEFAULT_RATE})",
    )
    faults.add_argument(
        "--truth",
        type=Path,
        metavar="F.jsonl",
        help='write the truth: a {"summary": ...} line, then one line per expected outcome',
    )
    return p


def config_from(args: argparse.Namespace) -> SimConfig:
    if args.workers < MIN_WORKERS:
        raise ValueError(f"--workers {args.workers}: the firm needs at least {MIN_WORKERS}")
    if args.customers < MIN_CUSTOMERS:
        raise ValueError(f"--customers {args.customers}: at least {MIN_CUSTOMERS}")
    if args.rate < 0:
        raise ValueError(f"--rate {args.rate}: expected >= 0")
    try:
        start = dt.datetime.fromisoformat(args.start)
    except ValueError:
        raise ValueError(f"--start {args.start!r}: expected an ISO date or instant") from None
    start = start.replace(tzinfo=dt.UTC) if start.tzinfo is None else start.astimezone(dt.UTC)
    rates = parse_fault_rates(args.fault, args.fault_rate)
    return SimConfig(args.seed, start, args.workers, args.customers, rates)


class Stopper:
    """First ^C stops after the current group; a second one interrupts."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        say("^C: stopping after this event (^C again to interrupt)")


def say(msg: str) -> None:
    print(f"[simulate] {msg}", file=sys.stderr, flush=True)


class Progress:
    def __init__(self, truth: TruthLog, every_s: float) -> None:
        self.truth, self.every_s = truth, every_s
        self.started = time.monotonic()
        self.next_at = self.started + every_s

    def maybe(self, group: Group) -> None:
        now = time.monotonic()
        if self.every_s > 0 and now >= self.next_at:
            self.next_at = now + self.every_s
            say(self.line(group.at_ms))

    def line(self, at_ms: int | None = None) -> str:
        faults = ", ".join(f"{k} {n}" for k, n in sorted(self.truth.by_kind().items()))
        sim = f", sim time {iso(at_ms)}" if at_ms is not None else ""
        rate = self.truth.changes / max(time.monotonic() - self.started, 1e-9)
        return (
            f"{self.truth.changes} changes sent ({rate:.0f}/s{sim}); faults: {faults or 'none yet'}"
        )


def paced(
    groups: Iterable[Group],
    rate: float,
    duration_s: float | None,
    stopper: Stopper,
    truth: TruthLog,
    progress: Progress,
) -> Iterator[Item]:
    """Items at `rate` per second; stops between groups (duration, ^C)."""
    started = time.monotonic()
    next_at = started
    for group in groups:
        if stopper.requested or (
            duration_s is not None and time.monotonic() - started >= duration_s
        ):
            return
        for item in group.items:
            if rate > 0:
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at = max(next_at + 1 / rate, time.monotonic() - 1.0)  # no catch-up bursts
            truth.count(item.topic, item.ts_ms if isinstance(item, Line) else None)
            yield item
        truth.add(group.faults, group.posts, group.approved)
        progress.maybe(group)


def write_file(items: Iterable[Item], output: Path) -> int:
    """Lines to `output`; undecodable records to its side file. Returns lines written."""
    side = output.with_name(output.name.removesuffix(".jsonl") + ".undecodable.jsonl")
    written = 0
    raw_out: TextIO | None = None
    with output.open("w", encoding="utf-8") as out:
        try:
            for item in items:
                if isinstance(item, Line):
                    out.write(item.text + "\n")
                    written += 1
                    continue
                if raw_out is None:
                    raw_out = side.open("w", encoding="utf-8")
                record = item.to_json() | {"after_line": written}
                raw_out.write(json.dumps(record, separators=(",", ":")) + "\n")
        finally:
            if raw_out is not None:
                raw_out.close()
                say(f"undecodable records (send them raw; produce rejects them): {side}")
    return written


def send_kafka(items: Iterable[Item], args: argparse.Namespace) -> int:
    """Through produce_lines; garbage with a plain producer. Returns the lines produce rejected."""
    from pssync.avro.codec import Codec
    from pssync.avro.contract import ALL_TOPICS
    from pssync.avro.registry import RegistryClient
    from pssync.connectors.kafka import check_kafka, contract_topic_specs, ensure_topics
    from pssync.settings import Settings

    settings = Settings.from_env(
        kafka_bootstrap=args.bootstrap,
        schema_registry_url=args.registry_url,
        topic_prefix=args.topic_prefix,
    )
    check_kafka(settings)
    created = ensure_topics(settings, contract_topic_specs(settings, settings.partitions))
    fresh = sum(1 for v in created.values() if v == "created")
    codec = Codec(RegistryClient.from_settings(settings), settings.topic_prefix)
    codec.register_all(ALL_TOPICS)
    say(
        f"Kafka {settings.kafka_bootstrap}, registry {settings.schema_registry_url}, "
        f"topic prefix {settings.topic_prefix!r} ({fresh} topics created)"
    )
    return send_items(items, settings, codec)


def send_items(items: Iterable[Item], settings: Settings, codec: Codec) -> int:
    """`items` to Kafka whose topics exist and whose schemas are registered (`pssync demo`
    streams this way too). Returns the lines produce rejected plus the garbage not delivered."""
    from confluent_kafka import Producer

    from pssync.connectors.jsonl import Forms, produce_lines
    from pssync.connectors.kafka import client_config

    forms = Forms()
    raw_producer = Producer(client_config(settings))
    failures: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(f"{msg.topic()}: {err}")

    def texts() -> Iterator[str]:
        for item in items:
            if isinstance(item, Line):
                yield item.text
                continue
            key = codec.encode_key(item.topic, forms.get(item.topic, "key").from_json(item.key))
            raw_producer.produce(
                settings.topic(item.topic),
                key=key,
                value=item.value,
                headers=[("correlation_id", item.correlation_id.encode())],
                on_delivery=delivered,
            )
            raw_producer.poll(0)

    report = produce_lines(settings, codec, texts(), on_error=lambda e: say(f"rejected: {e}"))
    raw_producer.flush(30)
    for failure in failures:
        say(f"undecodable record not delivered: {failure}")
    return len(report.errors) + len(failures)


def run_simulate(args: argparse.Namespace) -> int:
    config = config_from(args)
    if args.output is not None and args.count is None and args.days is None is args.duration:
        raise ValueError("--output needs an end: --count, --days or --duration")
    firm = Firm(config)
    truth = TruthLog()
    progress = Progress(truth, args.progress)
    stopper = Stopper()
    previous = signal.signal(signal.SIGINT, stopper)
    groups = limit_count(run(firm, args.days), args.count)
    items = paced(groups, args.rate, args.duration, stopper, truth, progress)
    target = str(args.output) if args.output else "Kafka"
    say(f"seed {config.seed}, start {iso(int(config.start.timestamp() * 1000))}, to {target}")
    problems = 0
    try:
        if args.output is not None:
            write_file(items, args.output)
        else:
            problems = send_kafka(items, args)
    finally:
        signal.signal(signal.SIGINT, previous)
        facts = _facts(args, config, firm)
        if args.truth is not None:
            truth.write(args.truth, **facts)
        _final(progress, facts, args.truth)
    return 1 if problems else 0


def _facts(args: argparse.Namespace, config: SimConfig, firm: Firm) -> dict[str, Any]:
    return {
        "seed": config.seed,
        "start": iso(int(config.start.timestamp() * 1000)),
        "workers": config.workers,
        "customers": config.customers,
        "fault_rates": {k: v for k, v in sorted(config.fault_rates.items()) if v},
        "limits": {"count": args.count, "days": args.days, "duration_s": args.duration},
        "simulator_anomalies": dict(firm.stats),
        "timed_rules": {
            "ERP_EMPLOYEE_WITHOUT_HR_WORKER": "after PSSYNC_ORPHAN_GRACE_S from arrival",
            "SOW_SIGNED_WITHOUT_PROJECT": "after PSSYNC_PROJECT_SETUP_SLA_S from arrival",
            "DEPENDENCY_TIMEOUT": "after PSSYNC_DEPENDENCY_TIMEOUT_S from arrival",
        },
    }


def _final(progress: Progress, facts: dict[str, Any], path: Path | None) -> None:
    truth = progress.truth
    summary = truth.summary(**facts)
    expected = summary["expected"]
    say("done: " + progress.line(truth.last_ms))
    say("by topic: " + ", ".join(f"{t}={n}" for t, n in summary["by_topic"].items()))
    say(
        f"expected: POST_TIME_ENTRY {expected['POST_TIME_ENTRY']} "
        f"(of {expected['approved_time_entries']} approved), dlq {expected['dlq']}"
    )
    for kind in ("alerts", "exceptions"):
        rules = ", ".join(f"{r} {n}" for r, n in expected[kind].items())
        say(f"expected {kind}: {rules or 'none'}")
    if facts["simulator_anomalies"]:
        say(f"simulator anomalies (a bug; nothing wrong was sent): {facts['simulator_anomalies']}")
    say(f"truth: {path}" if path else "truth: not written (use --truth F.jsonl)")
