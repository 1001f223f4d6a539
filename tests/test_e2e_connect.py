"""End to end through real Kafka Connect: PostgreSQL -> Debezium -> pssync -> JDBC sink -> inbox.

The session's PostgreSQL and Connect worker come from `pssync.connect_stack`
(started, or reused if running); a test fails, never skips, if they cannot start.
Each test has its own topic prefix (so Debezium's topic.prefix is `<prefix>cdc`),
database, connector names and replication slot, and removes them afterwards.
Rows are written with SQL, connectors applied with the CLI, as an operator would.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from confluent_kafka import Consumer, TopicPartition

from pssync import connect_stack
from pssync.avro.contract import TABLES
from pssync.avro.registry import RegistryClient
from pssync.connectors.connect_api import ConnectClient, ConnectError, Target
from pssync.connectors.kafka import OutputProducer
from pssync.devstack import DevStackError
from pssync.settings import Settings
from tests.conftest import SettingsFactory, Stack, WorkerFactory, settings_env
from tests.kafka_helpers import codec_for, collect, create_topics

pytestmark = pytest.mark.kafka

SOURCE, SINK = "cdc-postgres", "erp-inbox-sink"
T = TypeVar("T")


@pytest.fixture(scope="session")
def connect_cfg(stack: Stack) -> connect_stack.ConnectStackConfig:
    cfg = connect_stack.ConnectStackConfig.from_env()
    started = time.monotonic()
    try:
        result = connect_stack.up(cfg)
    except DevStackError as exc:
        pytest.fail(f"PostgreSQL and Kafka Connect could not start: {exc}")
    print(f"connect stack {result} in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return cfg


@dataclass
class Platforms:
    """One test's platforms database, topics and connectors."""

    cfg: connect_stack.ConnectStackConfig
    settings: Settings
    database: str
    target: Target
    client: ConnectClient
    applied: list[str] = field(default_factory=list)

    def sql(self, statements: str) -> list[list[str]]:
        return connect_stack.sql(self.cfg, statements, database=self.database)

    def name(self, config: str) -> str:
        return f"{self.settings.topic_prefix}pssync-{config}"

    def apply(self, *only: str) -> None:
        """`pssync connectors apply`, then wait until each connector and its task run."""
        env = settings_env(self.settings) | {
            "PSSYNC_CONNECT_URL": self.cfg.connect_url,
            "PSSYNC_DB_PORT": str(self.cfg.postgres_port),
            "PSSYNC_DB_NAME": self.database,
        }
        argv = [sys.executable, "-m", "pssync", "connectors", "apply"]
        for name in only:
            argv += ["--only", name]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        for name in only:
            assert f"created   {self.name(name)}" in proc.stdout, proc.stdout
            self.applied.append(self.name(name))
            self.wait_state(name, "RUNNING")

    def wait_state(self, config: str, state: str, timeout_s: float = 90) -> None:
        name = self.name(config)
        deadline = time.monotonic() + timeout_s
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                status = self.client.status(name)
            except ConnectError:
                time.sleep(0.5)
                continue
            tasks = status.get("tasks", [])
            failed = [t for t in tasks if t["state"] == "FAILED"]
            assert not failed, failed[0].get("trace", "")[:3000]
            task_states = {t["state"] for t in tasks}
            if status["connector"]["state"] == state and (
                state == "STOPPED" or (tasks and task_states == {state})
            ):
                return
            time.sleep(0.5)
        raise AssertionError(f"{name} not {state} within {timeout_s}s: {status}")

    def inbox(self) -> dict[str, dict[str, Any]]:
        """command_id -> its inbox row (type, entity_id, deliveries, ...)."""
        rows = self.sql(
            "SELECT command_id, count(*) OVER (PARTITION BY command_id), type, entity_id, "
            "deliveries, applied_at, payload::text, topic FROM erp_inbox.command"
        )
        out = {}
        for cid, count, typ, entity, deliveries, applied_at, payload, topic in rows:
            assert count == "1", f"{cid} is {count} times in the inbox"
            out[cid] = {
                "type": typ,
                "entity_id": entity,
                "deliveries": int(deliveries),
                "applied_at": applied_at,
                "payload": json.loads(payload),
                "topic": topic,
            }
        return out


@pytest.fixture
def platforms_factory(
    connect_cfg: connect_stack.ConnectStackConfig, settings_factory: SettingsFactory
) -> Iterator[Callable[..., Platforms]]:
    made: list[Platforms] = []

    def make(**overrides: Any) -> Platforms:
        settings = settings_factory(**overrides)
        database = f"platforms_{uuid.uuid4().hex[:10]}"
        connect_stack.create_database(connect_cfg, database)
        target = Target.from_env(
            settings,
            connect_url=connect_cfg.connect_url,
            db_port=connect_cfg.postgres_port,
            db_name=database,
        )
        platforms = Platforms(
            connect_cfg, settings, database, target, ConnectClient(target.connect_url)
        )
        made.append(platforms)
        return platforms

    yield make
    for platforms in made:
        for name in platforms.applied:
            with contextlib.suppress(ConnectError):
                platforms.client.delete(name)
        connect_stack.drop_database(connect_cfg, platforms.database, timeout_s=60)


def wait_for(what: str, get: Callable[[], T], ok: Callable[[T], bool], timeout_s: float = 90) -> T:
    """Poll `get()` until `ok` holds; the failure shows the last value seen."""
    deadline = time.monotonic() + timeout_s
    while not ok(value := get()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s}s; last seen: {value!r}")
        time.sleep(1)
    return value


def worker_row(worker_id: str, status: str, cc: str, le: str) -> str:
    termination = "'2026-04-30'" if status == "TERMINATED" else "NULL"
    return (
        f"('{worker_id}', 'Name {worker_id}', '{worker_id.lower()}@example.com', '{status}', "
        f"'2024-02-01', {termination}, '{cc}', '{le}', NULL, 'Consultant', "
        "'2026-05-01 09:15:00')"
    )


INSERT_WORKERS = (
    "INSERT INTO hr.worker (worker_id, full_name, email, employment_status, hire_date, "
    "termination_date, cost_center, legal_entity, manager_id, job_profile, updated_at) VALUES "
)


def drift_states(settings: Settings) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for r in collect(settings, ["sync.drift"], idle_s=1.5):
        out.setdefault((r["value"]["rule"], r["value"]["entity_id"]), []).append(
            r["value"]["state"]
        )
    return out


def commands(settings: Settings) -> dict[str, tuple[str, str]]:
    """command_id -> (type, entity_id) of every command on erp.cmd.employee."""
    return {
        r["value"]["command_id"]: (r["value"]["type"], r["value"]["entity_id"])
        for r in collect(settings, ["erp.cmd.employee"], idle_s=1.5)
        if r["value"] is not None  # not the undecodable record a test puts there
    }


def test_sql_changes_become_commands_applied_once_and_alerts(
    platforms_factory: Callable[..., Platforms], worker_factory: WorkerFactory
) -> None:
    p = platforms_factory(orphan_grace_s=8)
    worker_factory(p.settings)
    p.apply(SOURCE, SINK)

    # The ERP as it is: a terminated worker still active, an employee on the wrong
    # cost center and legal entity. HR's W-4 arrives before its cost center CC-NEW.
    p.sql(
        "INSERT INTO erp.cost_center VALUES ('CC-NY', 'LE-US', true), ('CC-LDN', 'LE-UK', true);"
        "INSERT INTO erp.employee VALUES "
        "('E-1', 'W-1', true, 'CC-NY', 'LE-US', '2026-05-01 09:00:00'),"
        "('E-2', 'W-2', true, 'CC-NY', 'LE-US', '2026-05-01 09:00:00'),"
        "('E-3', 'W-3', true, 'CC-NY', 'LE-US', '2026-05-01 09:00:00');"
        + INSERT_WORKERS
        + ",".join(
            [
                worker_row("W-1", "ACTIVE", "CC-NY", "LE-US"),
                worker_row("W-2", "TERMINATED", "CC-NY", "LE-US"),
                worker_row("W-3", "ACTIVE", "CC-LDN", "LE-UK"),
                worker_row("W-4", "ACTIVE", "CC-NEW", "LE-US"),
            ]
        )
    )
    time.sleep(4)  # W-4 waits (parked) for its cost center: no command for it yet
    assert "W-4" not in {row["entity_id"] for row in p.inbox().values()}
    p.sql(
        "INSERT INTO erp.cost_center VALUES ('CC-NEW', 'LE-US', true);"
        "UPDATE hr.worker SET job_profile = 'Principal' WHERE worker_id = 'W-1';"
    )
    expected = {
        ("DEACTIVATE_EMPLOYEE", "E-2"),
        ("UPSERT_EMPLOYEE", "E-3"),
        ("UPSERT_EMPLOYEE", "W-4"),
    }
    wait_for("3 commands in the ERP inbox", p.inbox, lambda rows: len(rows) >= 3)

    # The ERP applies them; HR deletes W-1, whose ERP employee becomes an orphan.
    p.sql(
        "UPDATE erp.employee SET is_active = false WHERE erp_employee_id = 'E-2';"
        "UPDATE erp.employee SET cost_center = 'CC-LDN', legal_entity = 'LE-UK' "
        "WHERE erp_employee_id = 'E-3';"
        "INSERT INTO erp.employee VALUES ('E-4', 'W-4', true, 'CC-NEW', 'LE-US', "
        "'2026-05-02 09:00:00');"
        "DELETE FROM hr.worker WHERE worker_id = 'W-1';"
    )
    want_drift = {
        ("TERMINATED_WORKER_ACTIVE_IN_ERP", "W-2"): ["OPEN", "RESOLVED"],
        ("WORKER_FIELD_DRIFT", "W-3"): ["OPEN", "RESOLVED"],
        ("WORKER_MISSING_IN_ERP", "W-4"): ["OPEN", "RESOLVED"],
        ("ERP_EMPLOYEE_WITHOUT_HR_WORKER", "E-1"): ["OPEN"],
    }
    wait_for("drift alerts", lambda: drift_states(p.settings), lambda d: d == want_drift, 120)

    sent = commands(p.settings)
    inbox = p.inbox()
    assert set(sent.values()) == expected
    assert set(inbox) == set(sent)  # every command landed, and nothing else
    assert {(row["type"], row["entity_id"]) for row in inbox.values()} == expected
    assert all(row["deliveries"] == 1 for row in inbox.values())
    upsert_e3 = next(r for r in inbox.values() if r["entity_id"] == "E-3")
    assert upsert_e3["payload"]["legal_entity"] == "LE-UK"
    assert upsert_e3["payload"]["cost_center"] == "CC-LDN"
    assert upsert_e3["topic"] == p.settings.topic("erp.cmd.employee")
    w4 = next(r for r in inbox.values() if r["entity_id"] == "W-4")
    assert w4["payload"]["hire_date"] == "2024-02-01"


def sink_lag(p: Platforms) -> int:
    """Records on erp.cmd.employee the sink has not committed."""
    topic = p.settings.topic("erp.cmd.employee")
    consumer = Consumer(
        {"bootstrap.servers": p.settings.kafka_bootstrap, "group.id": f"connect-{p.name(SINK)}"}
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        tps = [TopicPartition(topic, n) for n in meta.partitions]
        lag = 0
        for tp in consumer.committed(tps, timeout=10):
            high = consumer.get_watermark_offsets(tp, timeout=10)[1]
            lag += high - max(tp.offset, 0)
        return lag
    finally:
        consumer.close()


def test_erp_outage_commands_wait_in_kafka_and_apply_once(
    platforms_factory: Callable[..., Platforms], worker_factory: WorkerFactory
) -> None:
    p = platforms_factory()
    worker_factory(p.settings)
    p.apply(SOURCE, SINK)
    p.sql(
        "INSERT INTO erp.cost_center VALUES ('CC-NY', 'LE-US', true);"
        + INSERT_WORKERS
        + ",".join(worker_row(f"W-{i}", "ACTIVE", "CC-NY", "LE-US") for i in (1, 2, 3))
    )
    wait_for("the first 3 commands applied", p.inbox, lambda rows: len(rows) == 3)

    # ERP outage: the sink stops; changes go on, and their commands wait in Kafka.
    p.client.action(p.name(SINK), "stop")
    p.wait_state(SINK, "STOPPED")
    p.sql(
        INSERT_WORKERS
        + ",".join(worker_row(f"W-{i}", "ACTIVE", "CC-NY", "LE-US") for i in (4, 5, 6))
    )
    producer = OutputProducer(p.settings, codec_for(p.settings))
    topic = p.settings.topic("erp.cmd.employee")
    producer.send_raw(topic, b"not-avro", b"\x00\x00\x00\x00\x07 not a command")
    producer.flush()
    wait_for("6 commands in Kafka", lambda: commands(p.settings), lambda c: len(c) == 6)
    time.sleep(3)
    assert len(p.inbox()) == 3
    assert sink_lag(p) == 4  # three commands and the undecodable record

    p.client.action(p.name(SINK), "resume")
    p.wait_state(SINK, "RUNNING")
    wait_for("every command applied", p.inbox, lambda rows: len(rows) == 6)
    wait_for("the sink caught up", lambda: sink_lag(p), lambda lag: lag == 0)
    sent = commands(p.settings)
    first = p.inbox()
    assert set(first) == set(sent)
    assert sorted(e for _, e in sent.values()) == [f"W-{i}" for i in range(1, 7)]
    # what the sink could not convert is in its dead-letter topic, with the error
    dead = collect_raw(p.settings, p.settings.topic("erp.cmd.dlq"))
    assert [m["key"] for m in dead] == [b"not-avro"]
    assert dead[0]["headers"]["__connect.errors.stage"] == b"KEY_CONVERTER"

    # A restart resumes from the committed offsets: nothing is applied twice.
    p.client.action(p.name(SINK), "restart")
    p.wait_state(SINK, "RUNNING")
    time.sleep(5)
    again = p.inbox()
    assert set(again) == set(first)
    assert all(again[c]["applied_at"] == first[c]["applied_at"] for c in first)

    # Even a full replay (offsets reset, every command delivered again) applies nothing twice.
    p.client.action(p.name(SINK), "stop")
    p.wait_state(SINK, "STOPPED")
    p.client.request("DELETE", f"/connectors/{p.name(SINK)}/offsets")
    p.client.action(p.name(SINK), "resume")
    p.wait_state(SINK, "RUNNING")
    wait_for(
        "every command redelivered",
        p.inbox,
        lambda rows: all(r["deliveries"] >= 2 for r in rows.values()),
    )
    unchanged = ("applied_at", "payload", "type", "entity_id")
    replayed = {c: [r[k] for k in unchanged] for c, r in p.inbox().items()}
    assert replayed == {c: [r[k] for k in unchanged] for c, r in first.items()}


def collect_raw(settings: Settings, topic: str) -> list[dict[str, Any]]:
    config = {"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"raw-{uuid.uuid4()}"}
    consumer = Consumer(config | {"auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    out: list[dict[str, Any]] = []
    idle_until = time.monotonic() + 10
    try:
        while time.monotonic() < idle_until:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            out.append(
                {"key": msg.key(), "value": msg.value(), "headers": dict(msg.headers() or [])}
            )
            idle_until = time.monotonic() + 2
    finally:
        consumer.close()
    return out


def test_codec_decodes_what_debezium_writes(platforms_factory: Callable[..., Platforms]) -> None:
    p = platforms_factory()
    create_topics(p.settings)
    # rows present before the connector starts are read by its snapshot (op r)
    p.sql(
        "INSERT INTO erp.cost_rate VALUES ('R-1', 'W-1', '2026-01-01', NULL, 142.50, 'USD');"
        "INSERT INTO psa.time_entry VALUES ('TE-1', 'W-1', 'P-1', NULL, '2026-03-30', 7.50, "
        "true, 'APPROVED', '2026-03-31 10:00:00');"
        + INSERT_WORKERS
        + worker_row("W-1", "ACTIVE", "CC-NY", "LE-US")
    )
    p.apply(SOURCE)
    p.sql(
        "UPDATE psa.time_entry SET hours = 8.25, work_date = '2026-03-31' "
        "WHERE time_entry_id = 'TE-1';"
        "DELETE FROM erp.cost_rate WHERE rate_id = 'R-1';"
        "INSERT INTO crm.sow VALUES ('S-1', 'A-1', 'LE-US', 'USD', 'T&M', 'SIGNED', "
        "'2026-03-01 12:00:00', 250000.00);"
    )
    topics = ["cdc.erp.cost_rate", "cdc.psa.time_entry", "cdc.hr.worker", "cdc.crm.sow"]

    def seen() -> list[dict[str, Any]]:
        return collect(p.settings, topics, idle_s=2)

    records = wait_for("Debezium's records", seen, lambda rs: len(rs) >= 7)
    assert [r for r in records if "error" in r] == []
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_topic.setdefault(r["topic"], []).append(r)

    rate_read, rate_delete, tombstone = by_topic["cdc.erp.cost_rate"]
    assert rate_read["value"]["op"] == "r"
    assert rate_read["value"]["source"]["snapshot"] not in (None, "false")
    assert rate_read["value"]["after"]["rate"] == "142.50"
    assert rate_read["value"]["after"]["effective_from"] == "2026-01-01"
    assert rate_delete["key"] == {"rate_id": "R-1"}
    assert rate_delete["value"]["op"] == "d"
    assert rate_delete["value"]["after"] is None
    assert rate_delete["value"]["before"]["rate"] == "142.50"  # REPLICA IDENTITY FULL
    assert tombstone["key"] == {"rate_id": "R-1"}
    assert tombstone["value"] is None

    entry_read, entry_update = by_topic["cdc.psa.time_entry"]
    assert entry_read["value"]["op"] == "r"
    assert entry_read["value"]["after"]["approved_at"] == "2026-03-31T10:00:00.000Z"
    update = entry_update["value"]
    assert update["op"] == "u"
    assert (update["before"]["hours"], update["after"]["hours"]) == ("7.50", "8.25")
    assert update["after"]["work_date"] == "2026-03-31"
    assert update["source"]["snapshot"] == "false"
    assert update["source"]["schema"] == "psa"
    assert update["source"]["table"] == "time_entry"
    assert update["source"]["db"] == p.database
    assert update["source"]["lsn"] < rate_delete["value"]["source"]["lsn"]

    (worker,) = by_topic["cdc.hr.worker"]
    assert worker["value"]["after"]["hire_date"] == "2024-02-01"
    assert worker["value"]["after"]["updated_at"] == "2026-05-01T09:15:00.000Z"
    (sow,) = by_topic["cdc.crm.sow"]
    assert sow["value"]["op"] == "c"
    assert sow["value"]["after"]["total_value"] == "250000.00"
    assert sow["value"]["after"]["signed_at"] == "2026-03-01T12:00:00.000Z"
    assert Counter(r["topic"] for r in records) == {
        "cdc.erp.cost_rate": 3,
        "cdc.psa.time_entry": 2,
        "cdc.hr.worker": 1,
        "cdc.crm.sow": 1,
    }
    assert_written_by_debezium(p.settings, "cdc.hr.worker")


def assert_written_by_debezium(settings: Settings, topic: str) -> None:
    """The writer schema is Debezium's own (resolved into the contract's by the codec)."""
    (msg,) = collect_raw(settings, settings.topic(topic))[:1]
    schema_id = int.from_bytes(msg["value"][1:5], "big")
    assert msg["value"][0] == 0  # the Confluent wire format's magic byte
    writer = json.loads(RegistryClient(settings.schema_registry_url).schema_by_id(schema_id))
    assert writer["connect.name"] == f"{settings.topic_prefix}{topic}.Envelope"
    assert writer["namespace"] == settings.topic(topic)


SQL_TYPES = {
    "string": "character varying",
    "boolean": "boolean",
    "int": "integer",
    "date": "date",
    "timestamp": "timestamp without time zone",
    "money": "numeric(12,2)",
    "hours": "numeric(6,2)",
}


def test_tables_are_the_contracts(platforms_factory: Callable[..., Platforms]) -> None:
    p = platforms_factory()
    rows = p.sql(
        "SELECT c.table_schema || '.' || c.table_name, c.column_name, c.data_type || "
        "coalesce('(' || c.numeric_precision || ',' || c.numeric_scale || ')', ''), "
        "c.is_nullable, coalesce(k.column_name, '') "
        "FROM information_schema.columns c LEFT JOIN information_schema.key_column_usage k "
        "ON k.table_schema = c.table_schema AND k.table_name = c.table_name "
        "AND k.column_name = c.column_name AND k.constraint_name LIKE '%_pkey' "
        "WHERE c.table_schema IN ('hr', 'erp', 'crm', 'psa') "
        "ORDER BY c.table_schema, c.table_name, c.ordinal_position"
    )
    found: dict[str, list[tuple[str, str, str, str]]] = {}
    for table, column, sql_type, nullable, key in rows:
        sql_type = sql_type.replace("integer(32,0)", "integer")
        found.setdefault(table, []).append((column, sql_type, nullable, key))
    wanted = {
        f"{t.platform}.{t.name}": [
            (
                name,
                SQL_TYPES[kind.rstrip("?")],
                "YES" if kind.endswith("?") else "NO",
                name if name in t.key else "",
            )
            for name, kind in t.fields
        ]
        for t in TABLES
    }
    assert found == wanted
    # enumerations are checked by the database, with the contract's values
    with pytest.raises(DevStackError, match="worker_employment_status_check"):
        p.sql(INSERT_WORKERS + worker_row("W-9", "RETIRED", "CC-NY", "LE-US"))
