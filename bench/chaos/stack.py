"""The chaos run's own stack: Kafka, registry, Connect and PostgreSQL on ports of its own.

Everything lives under one state directory and on ports apart from the shared dev
stack (9092/8081/8083/55432), so that restarting the broker or the registry here
disturbs no one else. The registry keeps its schemas in a file
(`StackConfig.registry_persistent`), as a production registry keeps them in Kafka or a
database: a restart must not forget the IDs already written into records.
`down` stops what `up` started and removes the state, the PostgreSQL cluster included.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pssync import connect_stack, devstack
from pssync.connectors.connect_api import ConnectClient, ConnectError, Target
from pssync.connectors.kafka import records_between
from pssync.settings import Settings

SINK = "erp-inbox-sink"
COMMAND_TOPICS = ("erp.cmd.employee", "erp.cmd.project", "erp.cmd.time_entry")


def say(msg: str) -> None:
    print(f"[chaos] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Ports:
    kafka: int = 19092
    registry: int = 18081
    connect: int = 18083
    postgres: int = 15432

    def __post_init__(self) -> None:
        shared = {9092, 9093, 8081, 8083, 55432, 9001}
        taken = {self.kafka, self.kafka + 1, self.registry, self.registry + 920} & shared
        if taken | ({self.connect, self.postgres} & shared):
            raise ValueError(f"ports {sorted(taken)} belong to the shared dev stack")
        low, high = ephemeral_ports()
        ours = {self.kafka, self.kafka + 1, self.registry, self.registry + 920}
        ours |= {self.connect, self.postgres}
        if any(low <= port <= high for port in ours):
            # a client reconnecting to a stopped server on such a port can be given that
            # very port as its own and connect to itself; the restarted server then finds
            # its port in use (seen: the broker restart failing on 39092)
            raise ValueError(
                f"ports {sorted(p for p in ours if low <= p <= high)} are in the kernel's "
                f"ephemeral range {low}-{high}: choose ports below {low}"
            )


def ephemeral_ports() -> tuple[int, int]:
    """The range the kernel picks client ports from (Linux; the IANA range elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 49152, 65535


class ChaosStack:
    """Kafka + registry + Connect + PostgreSQL, started, restarted and removed here."""

    def __init__(self, ports: Ports, state_dir: Path) -> None:
        self.cfg = devstack.StackConfig(
            kafka_port=ports.kafka,
            controller_port=ports.kafka + 1,
            registry_port=ports.registry,
            registry_mgmt_port=ports.registry + 920,
            state_dir=state_dir,
            registry_persistent=True,
        )
        self.connect = connect_stack.ConnectStackConfig(
            stack=self.cfg, connect_port=ports.connect, postgres_port=ports.postgres
        )
        self.javas, self.mvn = devstack.require_tools()
        self.java17 = self.javas[-1][1] if self.javas[-1][0] >= 17 else self.javas[0][1]

    @property
    def bootstrap(self) -> str:
        return self.cfg.bootstrap

    @property
    def registry_url(self) -> str:
        return self.cfg.registry_url

    def up(self) -> None:
        cfg = self.cfg
        ports = (cfg.kafka_port, cfg.controller_port, cfg.registry_port, cfg.registry_mgmt_port)
        for port in (*ports, self.connect.connect_port, self.connect.postgres_port):
            if devstack.port_open(port):  # never reuse what answers there: it is not ours
                raise devstack.DevStackError(f"port {port} is taken: another chaos run?")
        started = time.monotonic()
        devstack.up(self.cfg)
        connect_stack.up(self.connect)
        say(f"stack up in {time.monotonic() - started:.0f}s on {self.bootstrap}")

    def down(self) -> None:
        """Stop everything this stack started (each by its own pid file) and remove it."""
        with contextlib.suppress(devstack.DevStackError, OSError):
            connect_stack.down(self.connect)
        devstack.down(self.cfg)
        # the services' logs outlive the stack (next to the runs': --keep keeps them)
        logs = self.cfg.state_dir.parent / "stack-logs"
        for log in self.cfg.state_dir.glob("*/*.log"):
            logs.mkdir(exist_ok=True)
            shutil.copy(log, logs / f"{log.parent.name}-{log.name}")
        shutil.rmtree(self.connect.pg_dir, ignore_errors=True)
        shutil.rmtree(self.cfg.state_dir, ignore_errors=True)

    # -- faults ------------------------------------------------------------------
    def restart_broker(self) -> float:
        """SIGTERM the broker (a controlled shutdown), start it again; seconds it was away."""
        started = time.monotonic()
        devstack.Service("kafka", self.cfg).stop()
        devstack.start_kafka(self.cfg, self.java17, self.mvn)
        return time.monotonic() - started

    def restart_registry(self) -> float:
        started = time.monotonic()
        devstack.Service("registry", self.cfg).stop()
        devstack.start_registry(self.cfg, self.javas, self.mvn)
        return time.monotonic() - started

    # -- the ERP inbox -----------------------------------------------------------
    def inbox_database(self, settings: Settings) -> Inbox:
        database = f"chaos_{uuid.uuid4().hex[:10]}"
        connect_stack.create_database(self.connect, database)
        target = Target.from_env(
            settings,
            connect_url=self.connect.connect_url,
            db_port=self.connect.postgres_port,
            db_name=database,
        )
        return Inbox(self, settings, database, target, ConnectClient(target.connect_url))


@dataclass
class Inbox:
    """One run's ERP inbox database and the JDBC sink connector writing into it."""

    stack: ChaosStack
    settings: Settings
    database: str
    target: Target
    client: ConnectClient

    @property
    def connector(self) -> str:
        return f"{self.settings.topic_prefix}pssync-{SINK}"

    def apply(self, env: dict[str, str]) -> None:
        """`pssync connectors apply --only erp-inbox-sink`, as an operator would."""
        env = env | {
            "PSSYNC_CONNECT_URL": self.stack.connect.connect_url,
            "PSSYNC_DB_PORT": str(self.stack.connect.postgres_port),
            "PSSYNC_DB_NAME": self.database,
        }
        argv = [sys.executable, "-m", "pssync", "connectors", "apply", "--only", SINK]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
        if proc.returncode != 0:
            raise RuntimeError(f"connectors apply failed:\n{proc.stdout}{proc.stderr}")
        self.wait_state("RUNNING")

    def wait_state(self, state: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                status = self.client.status(self.connector)
            except ConnectError:
                time.sleep(0.5)
                continue
            tasks = status.get("tasks", [])
            failed = [t for t in tasks if t["state"] == "FAILED"]
            if failed:
                raise RuntimeError(f"sink task failed: {failed[0].get('trace', '')[:3000]}")
            states = {t["state"] for t in tasks}
            if status["connector"]["state"] == state and (
                state == "STOPPED" or (tasks and states == {state})
            ):
                return
            time.sleep(0.5)
        raise RuntimeError(f"{self.connector} not {state} within {timeout_s}s: {status}")

    def stop(self) -> None:
        self.client.action(self.connector, "stop")
        self.wait_state("STOPPED")

    def resume(self) -> None:
        self.client.action(self.connector, "resume")
        self.wait_state("RUNNING")

    def rows(self) -> dict[str, tuple[int, int]]:
        """command_id -> (rows with that id, deliveries counted by the inbox's trigger)."""
        rows = connect_stack.sql(
            self.stack.connect,
            "SELECT command_id, count(*) OVER (PARTITION BY command_id), deliveries "
            "FROM erp_inbox.command",
            database=self.database,
        )
        return {cid: (int(count), int(deliveries)) for cid, count, deliveries in rows}

    def sink_lag(self) -> int:
        """Command records the sink has not committed yet (all three topics)."""
        from confluent_kafka import Consumer, TopicPartition

        topics = [self.settings.topic(t) for t in COMMAND_TOPICS]
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "group.id": f"connect-{self.connector}",
            }
        )
        try:
            meta = consumer.list_topics(timeout=10).topics
            tps = [TopicPartition(t, n) for t in topics for n in meta[t].partitions]
            lag = 0
            for tp in consumer.committed(tps, timeout=10):
                high = consumer.get_watermark_offsets(tp, timeout=10)[1]
                # exactly_once writes commit markers: count records, not offsets
                lag += records_between(self.settings, tp, max(tp.offset, 0), high)
            return lag
        finally:
            consumer.close()

    def dead_letters(self) -> int:
        """Records the sink skipped into its dead-letter topic (`errors.tolerance=all`)."""
        from confluent_kafka import Consumer, TopicPartition

        topic = self.settings.topic("erp.cmd.dlq")
        consumer = Consumer(
            {"bootstrap.servers": self.settings.kafka_bootstrap, "group.id": "chaos-inspect"}
        )
        try:
            meta = consumer.list_topics(timeout=10).topics.get(topic)
            if meta is None:
                return 0
            ends = [
                consumer.get_watermark_offsets(TopicPartition(topic, n), timeout=10)
                for n in meta.partitions
            ]
            return sum(high - low for low, high in ends)
        finally:
            consumer.close()

    def wait_drained(self, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while (lag := self.sink_lag()) > 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the ERP sink still has {lag} commands to apply")
            time.sleep(2)

    def drop(self) -> None:
        with contextlib.suppress(ConnectError):
            self.client.delete(self.connector)
        with contextlib.suppress(devstack.DevStackError):
            connect_stack.drop_database(self.stack.connect, self.database, timeout_s=60)
