"""Nothing lost (DLQ) and identity (replay, redelivery), on the real stack."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import pytest
from confluent_kafka import Producer

from pssync.settings import Settings
from tests.conftest import SettingsFactory, WorkerFactory
from tests.kafka_helpers import cdc_line, collect, create_topics, produce_cli, wait_drained
from tests.worker_harness import cost_center, erp, hr

pytestmark = pytest.mark.kafka

HR, ERP, CC = "cdc.hr.worker", "cdc.erp.employee", "cdc.erp.cost_center"


def drained(settings: Settings) -> None:
    topics = [settings.topic(t) for t in (HR, ERP, CC)]
    wait_drained(settings, [*topics, settings.internal_topic("worker-keyed")])


def raw_send(settings: Settings, topic: str, key: bytes | None, value: bytes) -> tuple[int, int]:
    """Send bytes as they are; returns (partition, offset)."""
    delivered: list[tuple[int, int]] = []
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(
        settings.topic(topic),
        key=key,
        value=value,
        partition=0,
        headers=[("correlation_id", b"corr-raw")],
        on_delivery=lambda err, msg: delivered.append((msg.partition(), msg.offset())),
    )
    producer.flush(30)
    return delivered[0]


def test_bad_records_become_dlq_records_and_the_worker_keeps_going(
    settings_factory: SettingsFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    settings = settings_factory()
    worker = worker_factory(settings)
    garbage = b"this is not avro at all"
    unknown_id = b"\x00" + struct.pack(">I", 987_654_321) + b"\x02\x04"
    positions = {
        "garbage": raw_send(settings, HR, b"k1", garbage),
        "unknown": raw_send(settings, HR, None, unknown_id),
    }
    # decodable, but employment_status breaks the contract's enumeration
    produce_cli(settings, [cdc_line(HR, hr("W-BAD", status="RETIRED"), lsn=5)], tmp_path)
    # a tombstone is consumed quietly, and a good record after all of them is processed
    tombstone = {"topic": HR, "key": {"worker_id": "W-GONE"}, "value": None}
    produce_cli(
        settings,
        [tombstone, cdc_line(CC, cost_center("CC1"), lsn=1), cdc_line(HR, hr("W-OK"), lsn=6)],
        tmp_path,
    )
    drained(settings)

    dlq = collect(settings, ["sync.dlq"])
    by_class = {r["value"]["error_class"]: r["value"] for r in dlq}
    assert set(by_class) == {"DecodeError", "UnknownSchemaId", "ValidationError"}
    bad = by_class["DecodeError"]
    assert base64.b64decode(bad["value"]) == garbage
    assert base64.b64decode(bad["key"]) == b"k1"
    assert (bad["partition"], bad["offset"]) == positions["garbage"]
    assert bad["original_topic"] == settings.topic(HR)
    assert bad["stage"] == "decode"
    assert {"key": "correlation_id", "value": base64.b64encode(b"corr-raw").decode()} in bad[
        "headers"
    ]
    unknown = by_class["UnknownSchemaId"]
    assert base64.b64decode(unknown["value"]) == unknown_id
    assert (unknown["partition"], unknown["offset"]) == positions["unknown"]
    assert "987654321" in unknown["error_message"]
    invalid = by_class["ValidationError"]
    assert invalid["stage"] == "validate"
    assert "employment_status" in invalid["error_message"]
    assert "RETIRED" in invalid["error_message"]
    assert all(r["key"] == r["value"]["key"] for r in dlq)

    commands = collect(settings, ["erp.cmd.employee"])
    assert [(c["value"]["type"], c["key"]) for c in commands] == [("UPSERT_EMPLOYEE", "W-OK")]
    status, stats = worker.get("/stats")
    assert status == 200
    assert stats["dlq"] == {"undecodable": 1, "unknown_schema_id": 1, "invalid": 1}
    assert stats["tombstones"] == 1


def scenario() -> list[dict[str, object]]:
    return [
        cdc_line(CC, cost_center("CC1"), lsn=1, op="r"),
        cdc_line(CC, cost_center("CC2"), lsn=2, op="r"),
        cdc_line(ERP, erp("E-1", "W-1"), lsn=10, op="r"),
        cdc_line(ERP, erp("E-2", "W-2"), lsn=11, op="r"),
        cdc_line(HR, hr("W-1", cc="CC2"), lsn=100),
        cdc_line(HR, hr("W-2", status="TERMINATED"), lsn=101),
        cdc_line(HR, hr("W-3"), lsn=102),
        cdc_line(HR, hr("W-4", cc="CC2"), lsn=103),
    ]


def test_replay_under_fresh_app_id_yields_identical_command_ids_and_redelivery_none(
    settings_factory: SettingsFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    first = settings_factory()
    create_topics(first)
    produce_cli(first, scenario(), tmp_path)
    worker = worker_factory(first)
    drained(first)
    run1 = collect(first, ["erp.cmd.employee"])
    ids1 = sorted(r["value"]["command_id"] for r in run1)
    assert len(ids1) == 4  # drift W-1, deactivate W-2, upsert W-3, upsert W-4
    worker.stop()

    # the same input, replayed from the beginning by a fresh application
    second = first.model_copy(
        update={"app_id": first.app_id + "-replay", "data_dir": tmp_path / "replay-state"}
    )
    worker2 = worker_factory(second)
    drained(second)
    both = collect(second, ["erp.cmd.employee"])
    assert sorted(r["value"]["command_id"] for r in both) == sorted(ids1 * 2)

    # a redelivered source change (same lsn, new offset) yields nothing new
    produce_cli(
        second,
        [cdc_line(HR, hr("W-3"), lsn=102), cdc_line(HR, hr("W-4", cc="CC2"), lsn=103)],
        tmp_path,
    )
    drained(second)
    assert len(collect(second, ["erp.cmd.employee"])) == len(both)
    _, stats = worker2.get("/stats")
    assert stats["duplicates"] >= 2

    # while a genuine new change does
    produce_cli(second, [cdc_line(HR, hr("W-3", cc="CC2"), lsn=104, before=hr("W-3"))], tmp_path)
    drained(second)
    after = collect(second, ["erp.cmd.employee"])
    new = [r["value"] for r in after if r["value"]["command_id"] not in ids1]
    assert len(after) == len(both) + 1
    assert [(c["type"], c["entity_id"], c["payload"]["cost_center"]) for c in new] == [
        ("UPSERT_EMPLOYEE", "W-3", "CC2")
    ]


def test_a_corrupt_internal_message_is_dead_lettered_and_the_partition_goes_on(
    settings_factory: SettingsFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    settings = settings_factory()
    worker_factory(settings)
    keyed = settings.internal_topic("worker-keyed")
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for partition in range(settings.partitions):  # whichever partition W-OK lands on
        producer.produce(keyed, key=b"W-OK", value=b"{not json", partition=partition)
    producer.flush(30)
    produce_cli(
        settings,
        [cdc_line(CC, cost_center("CC1"), lsn=1), cdc_line(HR, hr("W-OK"), lsn=6)],
        tmp_path,
    )
    drained(settings)
    dead = [r["value"] for r in collect(settings, ["sync.dlq"])]
    assert len(dead) == settings.partitions
    assert {d["original_topic"] for d in dead} == {keyed}
    assert {base64.b64decode(d["value"]) for d in dead} == {b"{not json"}
    assert {d["error_class"] for d in dead} == {"MessageError"}
    commands = collect(settings, ["erp.cmd.employee"])
    assert [(c["value"]["type"], c["key"]) for c in commands] == [("UPSERT_EMPLOYEE", "W-OK")]
