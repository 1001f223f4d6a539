"""The `pssync` command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from pssync import __version__
from pssync.avro.contract import ALL_TOPICS, COMPACTED_TOPICS
from pssync.settings import Settings

SettingsFactory = Callable[..., Settings]


def pssync(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pssync", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def cli_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSSYNC_")}
    env["PSSYNC_KAFKA_BOOTSTRAP"] = settings.kafka_bootstrap
    env["PSSYNC_SCHEMA_REGISTRY_URL"] = settings.schema_registry_url
    env["PSSYNC_TOPIC_PREFIX"] = settings.topic_prefix
    return env


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        ([], ["dev", "topics", "produce", "consume", "worker", "demo", "--version"]),
        (["dev"], ["up", "down", "status", "--kafka-port", "--registry-port"]),
        (["topics"], ["create", "list", "--partitions", "--partitions-for", "compacted"]),
        (["produce"], ["--file", "--bootstrap", "--registry-url", "--topic-prefix"]),
        (["consume"], ["TOPIC", "--from-beginning", "--idle-timeout", "--max"]),
        (["worker"], ["--app-id", "--web-port", "--data-dir", "/health", "/ready"]),
        (["demo"], ["--duration", "--seed", "--workers", "--no-stack"]),
    ],
)
def test_help(args: list[str], mentions: list[str]) -> None:
    result = pssync(*args, "--help")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: pssync {' '.join(args)}".rstrip())
    for word in mentions:
        assert word in result.stdout
    assert result.stderr == ""


def test_version() -> None:
    result = pssync("--version")

    assert result.returncode == 0
    assert result.stdout.strip() == f"pssync {__version__}"


def test_no_command_is_a_usage_error() -> None:
    result = pssync()

    assert result.returncode == 2
    assert "required: COMMAND" in result.stderr


def test_bad_setting_exits_2_naming_the_variable() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSSYNC_")}
    env["PSSYNC_WEB_PORT"] = "http"

    result = pssync("topics", "list", env=env)

    assert result.returncode == 2
    assert result.stderr.startswith("pssync: invalid settings: PSSYNC_WEB_PORT=http:")
    assert "Traceback" not in result.stderr


def test_consume_rejects_a_non_contract_topic() -> None:
    result = pssync("consume", "cdc.hr.workers")

    assert result.returncode == 1
    assert result.stderr.strip() == "pssync consume: 'cdc.hr.workers' is not a contract topic"


SOURCE = {
    "version": "2.7",
    "connector": "postgresql",
    "name": "cdc",
    "ts_ms": 1767225600000,
    "snapshot": "false",
    "db": "hr",
    "schema": "hr",
    "table": "worker",
    "txId": 2,
    "lsn": 200,
}
WORKER_1 = {
    "worker_id": "W-1",
    "full_name": "Ada L",
    "email": "ada@x.com",
    "employment_status": "ACTIVE",
    "hire_date": "2025-01-06",
    "cost_center": "CC-100",
    "legal_entity": "LE-US",
    "job_profile": "Consultant",
    "updated_at": "2026-01-01T00:00:00.000Z",
}
WORKER_1_LEAVE = {**WORKER_1, "employment_status": "LEAVE", "manager_id": "W-0"}
TIME_ENTRY = {
    "time_entry_id": "TE-1",
    "worker_id": "W-1",
    "project_id": "P-1",
    "work_date": "2026-03-31",
    "hours": "7.5",
    "billable": True,
    "status": "APPROVED",
    "approved_at": "2026-03-31T09:15:00.000Z",
}
TE_SOURCE = {"version": "2.7", "connector": "postgresql", "name": "cdc", "ts_ms": 1774948500000}
TE_SOURCE |= {"db": "psa", "schema": "psa", "table": "time_entry"}


def envelope(op: str, before: Any, after: Any, source: dict[str, Any], **extra: Any) -> Any:
    return {"before": before, "after": after, "op": op, "source": source, **extra}


# (line text, expected (topic, key, value) read back, or None for a line that is rejected)
LINES: list[tuple[Any, tuple[str, Any, Any] | None]] = [
    (
        {
            "topic": "cdc.hr.worker",
            "key": {"worker_id": "W-1"},
            "value": envelope("c", None, WORKER_1, SOURCE, ts_ms=1767225600000),
            "headers": {"correlation_id": "corr-42"},
        },
        (
            "cdc.hr.worker",
            {"worker_id": "W-1"},
            envelope(
                "c",
                None,
                {**WORKER_1, "termination_date": None, "manager_id": None},
                SOURCE,
                ts_ms=1767225600000,
            ),
        ),
    ),
    (
        {
            "topic": "cdc.psa.time_entry",
            "key": "TE-1",
            "value": envelope("c", None, TIME_ENTRY, TE_SOURCE),
        },
        (
            "cdc.psa.time_entry",
            {"time_entry_id": "TE-1"},
            envelope(
                "c",
                None,
                {**TIME_ENTRY, "hours": "7.50", "assignment_id": None},
                {**TE_SOURCE, "snapshot": None, "txId": None, "lsn": None},
                ts_ms=None,
            ),
        ),
    ),
    (
        {
            "topic": "cdc.hr.worker",
            "key": {"worker_id": "W-2"},
            "value": envelope("c", None, {**WORKER_1, "worker_id": "W-2", "hours": "8"}, SOURCE),
        },
        None,
    ),
    (
        {
            "topic": "cdc.psa.time_entry",
            "key": {"time_entry_id": "TE-2"},
            "value": envelope("c", None, {**TIME_ENTRY, "hours": "7.125"}, TE_SOURCE),
        },
        None,
    ),
    ("", None),
    (
        {
            "topic": "cdc.hr.worker",
            "key": {"worker_id": "W-1"},
            "value": envelope("u", WORKER_1, WORKER_1_LEAVE, {**SOURCE, "lsn": 260}),
        },
        (
            "cdc.hr.worker",
            {"worker_id": "W-1"},
            envelope(
                "u",
                {**WORKER_1, "termination_date": None, "manager_id": None},
                {**WORKER_1_LEAVE, "termination_date": None},
                {**SOURCE, "lsn": 260},
                ts_ms=None,
            ),
        ),
    ),
    ('{"topic": "cdc.hr.worker", "key": ', None),
    (
        {"topic": "cdc.hr.worker", "key": {"worker_id": "W-1"}, "value": None},
        ("cdc.hr.worker", {"worker_id": "W-1"}, None),
    ),
]


def create_topics(settings: Settings, topics: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    new = [NewTopic(settings.topic(t), num_partitions=1, replication_factor=1) for t in topics]
    for future in admin.create_topics(new, operation_timeout=30).values():
        future.result()


@pytest.mark.kafka
def test_produce_reports_bad_lines_and_consume_reads_back_the_good(
    settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    settings = settings_factory()
    env = cli_env(settings)
    topics = ["cdc.hr.worker", "cdc.psa.time_entry"]
    create_topics(settings, topics)
    jsonl = tmp_path / "input.jsonl"
    jsonl.write_text("".join((t if isinstance(t, str) else json.dumps(t)) + "\n" for t, _ in LINES))

    produced = pssync("produce", "--file", str(jsonl), env=env)

    assert produced.returncode == 1, produced.stderr
    errors = [line for line in produced.stderr.splitlines() if line.startswith("error: ")]
    assert errors[0] == "error: line 3: value.after.hours: unknown field"
    assert errors[1].startswith("error: line 4: value.after.hours: '7.125' has more than 2")
    assert errors[2].startswith("error: line 7: not valid JSON")
    assert len(errors) == 3
    assert produced.stderr.splitlines()[-1] == (
        "sent 4 records (cdc.hr.worker=3, cdc.psa.time_entry=1); 3 lines rejected"
    )

    consumed = pssync(
        "consume", *topics, "--from-beginning", "--idle-timeout", "3", env=env, timeout=180
    )

    assert consumed.returncode == 0, consumed.stderr
    records = [json.loads(line) for line in consumed.stdout.splitlines()]
    got = sorted(records, key=lambda r: (topics.index(r["topic"]), r["offset"]))
    expected = [e for _, e in LINES if e is not None]
    expected.sort(key=lambda e: topics.index(e[0]))
    assert [(r["topic"], r["key"], r["value"]) for r in got] == expected
    assert [r["offset"] for r in got] == [0, 1, 2, 0]
    assert {r["partition"] for r in got} == {0}
    assert all("error" not in r for r in got)
    assert got[0]["headers"] == {"correlation_id": "corr-42"}
    assert all(r["headers"]["correlation_id"] for r in got)
    assert set(records[0]) == {"topic", "partition", "offset", "key", "value", "headers"}


def topic_configs(admin: AdminClient, names: list[str]) -> dict[str, str]:
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    out = {}
    for resource, future in admin.describe_configs(resources).items():
        out[resource.name] = future.result()["cleanup.policy"].value
    return out


@pytest.mark.kafka
def test_topics_create_is_idempotent_and_compacts_reconciled(
    settings_factory: SettingsFactory,
) -> None:
    settings = settings_factory()
    env = cli_env(settings)

    first = pssync("topics", "create", "--partitions", "2", env=env)
    second = pssync("topics", "create", "--partitions", "2", env=env)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    first_lines = first.stdout.splitlines()
    second_lines = second.stdout.splitlines()
    assert len(first_lines) == len(ALL_TOPICS) == len(second_lines)
    for topic, line1, line2 in zip(ALL_TOPICS, first_lines, second_lines, strict=True):
        detail = "2 partitions, compacted" if topic in COMPACTED_TOPICS else "2 partitions"
        assert line1.split()[0] == "created"
        assert line1.endswith(f" {settings.topic(topic)} ({detail})")
        assert line2.split()[0] == "exists"
        assert line2.endswith(f" {settings.topic(topic)} ({detail})")

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    metadata = admin.list_topics(timeout=10).topics
    names = [settings.topic(t) for t in ALL_TOPICS]
    assert {name: len(metadata[name].partitions) for name in names} == dict.fromkeys(names, 2)
    assert {name for name in metadata if name.startswith(settings.topic_prefix)} == set(names)
    policies = topic_configs(admin, names)
    assert {n for n, policy in policies.items() if policy == "compact"} == {
        settings.topic(t) for t in COMPACTED_TOPICS
    }
    assert {policies[settings.topic(t)] for t in ALL_TOPICS if t not in COMPACTED_TOPICS} == {
        "delete"
    }


@pytest.mark.kafka
def test_topics_rejects_a_bad_partitions_for(settings_factory: SettingsFactory) -> None:
    result = pssync(
        "topics", "list", "--partitions-for", "cdc.hr.worker=0", env=cli_env(settings_factory())
    )

    assert result.returncode == 1
    assert "--partitions-for 'cdc.hr.worker=0'" in result.stderr
