"""`pssync` command line: dev stack, topics, produce, consume, worker, demo.

Settings come from the `PSSYNC_*` environment variables (see `pssync.settings`);
flags override them. Errors print one clear line and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pssync import __version__
from pssync.settings import Settings, SettingsError

EXIT_USAGE = 2


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection (override PSSYNC_* environment variables)")
    g.add_argument(
        "--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (PSSYNC_KAFKA_BOOTSTRAP)"
    )
    g.add_argument(
        "--registry-url", metavar="URL", help="schema registry URL (PSSYNC_SCHEMA_REGISTRY_URL)"
    )
    g.add_argument(
        "--topic-prefix", metavar="PREFIX", help="prefix on every topic name (PSSYNC_TOPIC_PREFIX)"
    )


def settings_from(args: argparse.Namespace, **extra: Any) -> Settings:
    return Settings.from_env(
        kafka_bootstrap=getattr(args, "bootstrap", None),
        schema_registry_url=getattr(args, "registry_url", None),
        topic_prefix=getattr(args, "topic_prefix", None),
        **extra,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pssync",
        description="Keeps CRM, PSA, HR and ERP in step from their change streams: "
        "ERP commands, drift alerts, exceptions and golden records.",
    )
    parser.add_argument("--version", action="version", version=f"pssync {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser(
        "dev",
        help="local Kafka + schema registry (real, from Maven Central)",
        description="Run a local single-node Kafka (KRaft) and an Apicurio "
        "schema registry in the background. Cached under ~/.cache/pssync; "
        "logs and pids under ~/.local/state/pssync/dev.",
    )
    dev.add_argument(
        "action",
        choices=["up", "down", "status"],
        help="up: start and wait until both answer (idempotent); down: stop what "
        "up started; status: what runs and answers",
    )
    dev.add_argument(
        "--kafka-port",
        type=int,
        help="broker port (default 9092; controller +1; PSSYNC_DEV_KAFKA_PORT)",
    )
    dev.add_argument(
        "--registry-port", type=int, help="registry port (default 8081; PSSYNC_DEV_REGISTRY_PORT)"
    )
    dev.add_argument(
        "--with-connect",
        action="store_true",
        help="up: also PostgreSQL (the platforms' tables, the ERP inbox) and a Kafka Connect "
        "worker with Debezium and Apicurio's converter; down and status always include them",
    )
    dev.add_argument(
        "--connect-port", type=int, help="Connect's REST port (8083; PSSYNC_DEV_CONNECT_PORT)"
    )
    dev.add_argument(
        "--postgres-port", type=int, help="PostgreSQL's port (55432; PSSYNC_DEV_POSTGRES_PORT)"
    )

    connectors = sub.add_parser(
        "connectors",
        help="validate or apply the Kafka Connect connectors (connectors/connect/*.json)",
        description="The Debezium PostgreSQL source (cdc.*) and the ERP inbox sink "
        "(erp.cmd.* -> erp_inbox.command, once per command_id), with the topic prefix, "
        "database and registry filled in from PSSYNC_* (PSSYNC_CONNECT_URL, PSSYNC_DB_HOST, "
        "PSSYNC_DB_PORT, PSSYNC_DB_NAME, PSSYNC_DB_USER, PSSYNC_DB_PASSWORD, "
        "PSSYNC_CONNECT_REGISTRY_URL). apply is idempotent and applies nothing if a config "
        "is invalid.",
    )
    connectors.add_argument("action", choices=["validate", "apply", "status"])
    connectors.add_argument(
        "--only", action="append", metavar="NAME", help="one config by file name, e.g. cdc-postgres"
    )
    connectors.add_argument("--connect-url", metavar="URL", help="Kafka Connect's REST URL")
    connectors.add_argument("--db-name", metavar="NAME", help="the platforms' database")
    _common(connectors)

    topics = sub.add_parser(
        "topics",
        help="create the contract's topics",
        description="Create every contract topic that does not exist "
        "(reconciled.* compacted). Existing topics are left as they are.",
    )
    topics.add_argument("action", choices=["create", "list"])
    topics.add_argument("--partitions", type=int, default=3, help="partitions per topic (3)")
    topics.add_argument(
        "--partitions-for",
        action="append",
        default=[],
        metavar="TOPIC=N",
        help="partitions of one topic, e.g. cdc.hr.worker=6 (repeatable)",
    )
    _common(topics)

    produce = sub.add_parser(
        "produce",
        help="send JSON lines to contract topics",
        description='Each line: {"topic": ..., "key": ..., "value": ...} in the contract\'s '
        'JSON form (value null = tombstone; optional "headers"). Encoded with the topic\'s '
        "registered Avro schema. Bad lines are reported with line number and field and are "
        "not sent; the exit code is 1 if any line was bad.",
    )
    produce.add_argument(
        "--file", required=True, metavar="F.jsonl", help="input file, or - for standard input"
    )
    _common(produce)

    consume = sub.add_parser(
        "consume",
        help="print records of topics as JSON lines",
        description="One JSON line per record: topic, partition, offset, key, value, headers.",
    )
    consume.add_argument("topics", nargs="+", metavar="TOPIC", help="contract topic names")
    consume.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the earliest offset (default: only new records)",
    )
    consume.add_argument(
        "--idle-timeout",
        type=float,
        metavar="S",
        help="exit after S seconds with nothing new (default: run until ^C)",
    )
    consume.add_argument("--max", type=int, metavar="N", help="exit after N records")
    _common(consume)

    worker = sub.add_parser(
        "worker",
        help="run a stream-processing worker (every agent)",
        description="Runs every agent; joins partitions with other workers of the same "
        "PSSYNC_APP_ID. HTTP: GET /health, /ready, /stats on PSSYNC_WEB_PORT.",
    )
    worker.add_argument("--app-id", help="consumer group / application id (PSSYNC_APP_ID)")
    worker.add_argument("--web-port", type=int, help="HTTP port (PSSYNC_WEB_PORT, 6066)")
    worker.add_argument("--data-dir", type=Path, help="RocksDB state dir (PSSYNC_DATA_DIR)")
    worker.add_argument(
        "--processing-guarantee",
        choices=("at_least_once", "exactly_once"),
        help="at_least_once: a crash replays one batch, re-sent records keep their ids; "
        "exactly_once: each batch one Kafka transaction, outputs to be read "
        "read_committed (PSSYNC_PROCESSING_GUARANTEE, at_least_once)",
    )
    _common(worker)

    demo = sub.add_parser(
        "demo",
        help="the main job: local stack, a worker, and the simulated firm's stream",
        description="Starts the local stack (unless --no-stack), a worker, and streams a "
        "seeded, simulated firm's HR, ERP, CRM and PSA changes with faults injected "
        "(`pssync simulate`); prints what comes out, and detected versus injected. Runs "
        "until ^C or --duration.",
    )
    demo.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    demo.add_argument("--seed", type=int, default=12, help="random seed (12)")
    demo.add_argument("--workers", type=int, default=30, help="HR workers in the firm (30)")
    demo.add_argument(
        "--rate",
        type=float,
        default=100.0,
        metavar="R",
        help="changes per second; 0 = as fast as possible (100)",
    )
    demo.add_argument(
        "--days", type=int, default=35, metavar="D", help="simulated days to stream (35)"
    )
    demo.add_argument(
        "--no-stack",
        action="store_true",
        help="use the Kafka and registry from PSSYNC_* instead of `dev up`",
    )
    demo.add_argument("--web-port", type=int, help="the worker's HTTP port (6066)")
    _common(demo)

    from pssync.simulate.cli import add_parser as add_simulate_parser

    _common(add_simulate_parser(sub))

    from pssync.cli.exceptions import add_parser as add_exceptions_parser

    add_exceptions_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(_dispatch(args) or 0)
    except SettingsError as exc:
        print(f"pssync: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line, not a traceback, for known failures
        from pssync.avro.registry import RegistryError
        from pssync.connectors.connect_api import ConnectError
        from pssync.connectors.kafka import KafkaUnavailable
        from pssync.devstack import DevStackError

        known = DevStackError | KafkaUnavailable | RegistryError | ConnectError | ValueError
        if isinstance(exc, known):
            print(f"pssync {args.command}: {exc}", file=sys.stderr)
            return 1
        raise


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "dev":
        return cmd_dev(args)
    if args.command == "connectors":
        return cmd_connectors(args)
    if args.command == "topics":
        return cmd_topics(args)
    if args.command == "produce":
        return cmd_produce(args)
    if args.command == "consume":
        return cmd_consume(args)
    if args.command == "worker":
        return cmd_worker(args)
    if args.command == "demo":
        from pssync.demo import run_demo

        return run_demo(args)
    if args.command == "simulate":
        from pssync.simulate.cli import run_simulate

        return run_simulate(args)
    if args.command == "exceptions":
        from pssync.cli.exceptions import run_exceptions

        return run_exceptions(args)
    raise AssertionError(args.command)


def cmd_dev(args: argparse.Namespace) -> int:
    from pssync import connect_stack, devstack

    cfg = devstack.StackConfig.from_env(
        kafka_port=args.kafka_port, registry_port=args.registry_port
    )
    ccfg = connect_stack.ConnectStackConfig.from_env(cfg, args.connect_port, args.postgres_port)
    if args.action == "up":
        result = devstack.up(cfg)
        if args.with_connect:
            result |= connect_stack.up(ccfg)
        for name, what in result.items():
            print(f"{name}: {what}")
        print(f"PSSYNC_KAFKA_BOOTSTRAP={cfg.bootstrap}")
        print(f"PSSYNC_SCHEMA_REGISTRY_URL={cfg.registry_url}")
        if args.with_connect:
            print(f"PSSYNC_CONNECT_URL={ccfg.connect_url}")
            print(f"PSSYNC_DB_PORT={ccfg.postgres_port}")
        return 0
    if args.action == "down":
        for name, what in (connect_stack.down(ccfg) | devstack.down(cfg)).items():
            print(f"{name}: {what}")
        return 0
    status = devstack.status(cfg)
    extra = connect_stack.status(ccfg)
    print(json.dumps(status | extra, indent=2))
    # Connect and PostgreSQL count only when started (`up --with-connect`)
    answering = [s["answering"] for s in status.values()]
    answering += [s["answering"] for s in extra.values() if s["pid"] is not None]
    return 0 if all(answering) else 3


def cmd_connectors(args: argparse.Namespace) -> int:
    from pssync.connectors import connect_api

    target = connect_api.Target.from_env(
        settings_from(args), connect_url=args.connect_url, db_name=args.db_name
    )
    connectors = connect_api.load(target, args.only)
    client = connect_api.ConnectClient(target.connect_url)
    if args.action == "validate":
        errors = connect_api.validate_all(client, connectors)
        for name, fields in errors.items():
            print(f"{name}: {'ok' if not fields else f'{len(fields)} invalid field(s)'}")
        if any(errors.values()):
            print(connect_api.format_errors(errors), file=sys.stderr)
            return 1
        return 0
    if args.action == "apply":
        for name, what in connect_api.apply_all(client, connectors).items():
            print(f"{what:9} {name}")
        return 0
    for connector in connectors:
        print(json.dumps(client.status(connector.name)))
    return 0


def _codec(settings: Settings, topics: Sequence[str]) -> Any:
    from pssync.avro.codec import Codec
    from pssync.avro.registry import RegistryClient

    codec = Codec(RegistryClient.from_settings(settings), settings.topic_prefix)
    codec.register_all(topics)
    return codec


def cmd_topics(args: argparse.Namespace) -> int:
    from pssync.avro.contract import ALL_TOPICS
    from pssync.connectors.kafka import check_kafka, contract_topic_specs, ensure_topics

    settings = settings_from(args)
    check_kafka(settings)
    overrides: dict[str, int] = {}
    for item in args.partitions_for:
        name, _, n = item.partition("=")
        if name not in ALL_TOPICS or not n.isdigit() or int(n) < 1:
            raise ValueError(f"--partitions-for {item!r}: expected CONTRACT_TOPIC=N (N >= 1)")
        overrides[name] = int(n)
    specs = contract_topic_specs(settings, args.partitions, overrides)
    if args.action == "list":
        for s in specs:
            print(f"{s.name}\t{s.partitions}\t{'compact' if s.compacted else 'delete'}")
        return 0
    result = ensure_topics(settings, specs)
    for s in specs:
        print(
            f"{result[s.name]:8} {s.name} ({s.partitions} partitions"
            f"{', compacted' if s.compacted else ''})"
        )
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from pssync.avro.contract import ALL_TOPICS
    from pssync.connectors.jsonl import produce_lines
    from pssync.connectors.kafka import check_kafka

    settings = settings_from(args)
    check_kafka(settings)
    codec = _codec(settings, ALL_TOPICS)
    # bytes that are not UTF-8 reach the line's parser (as lone surrogates), which
    # rejects that line by number and field; the rest are still sent
    if args.file == "-":
        sys.stdin.reconfigure(errors="surrogateescape")  # type: ignore[union-attr]
    handle = (
        sys.stdin
        if args.file == "-"
        else open(args.file, encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
    )
    with handle:
        report = produce_lines(
            settings, codec, handle, on_error=lambda e: print(f"error: {e}", file=sys.stderr)
        )
    topics = ", ".join(f"{t}={n}" for t, n in sorted(report.by_topic.items()))
    print(
        f"sent {report.sent} records"
        + (f" ({topics})" if topics else "")
        + (f"; {len(report.errors)} lines rejected" if report.errors else ""),
        file=sys.stderr,
    )
    return 1 if report.errors else 0


def cmd_consume(args: argparse.Namespace) -> int:
    from pssync.avro.contract import ALL_TOPICS
    from pssync.connectors.jsonl import consume_records, write_jsonl
    from pssync.connectors.kafka import check_kafka

    unknown = [t for t in args.topics if t not in ALL_TOPICS]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a contract topic")
    settings = settings_from(args)
    check_kafka(settings)  # a refused login fails here in one line, not in a retry loop
    codec = _codec(settings, args.topics)
    records = consume_records(
        settings, codec, args.topics, args.from_beginning, args.idle_timeout, args.max
    )
    try:
        write_jsonl(records)
    except BrokenPipeError:  # e.g. `pssync consume ... | head`: the reader is gone, stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from pssync.worker import run_worker

    settings = settings_from(
        args,
        app_id=args.app_id,
        web_port=args.web_port,
        data_dir=args.data_dir,
        processing_guarantee=args.processing_guarantee,
    )
    return run_worker(settings)


if __name__ == "__main__":
    sys.exit(main())
