"""Rebuilding state from changelogs (`bench.rebuild`, CI-sized) on the real Kafka.

What the rebuild must end with, checked on the stores themselves: every live key
with its last value, no tombstoned key, each partition's offset at its last
record; and that what a restore wrote without RocksDB's write-ahead log is on
disk when it reports done (a process killed right after keeps it all).
No timings are asserted: `python -m bench.rebuild` measures.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from bench import rebuild as bench
from pssync.connectors.kafka import client_config, read_partition, stable_partition
from pssync.settings import Settings
from pssync.tables.restore import Restorer
from pssync.tables.store import Table, encode
from tests.conftest import SettingsFactory, settings_env

pytestmark = pytest.mark.kafka

KEYS = 20_000
PARTITIONS = 3


@pytest.fixture
def changelog(settings_factory: SettingsFactory) -> Iterator[tuple[Settings, bench.Changelog]]:
    settings = settings_factory()
    log = bench.produce_changelog(settings, KEYS, PARTITIONS, value_bytes=200)
    yield settings, log
    bench.delete_topic(settings, log.topic)


def high_watermarks(settings: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer(client_config(settings, **{"group.id": f"{settings.app_id}-probe"}))
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in range(PARTITIONS)
        }
    finally:
        consumer.close()


def restore(settings: Settings, table: Table) -> None:
    async def run() -> None:
        restorer = Restorer(lambda *args: read_partition(settings, *args), stall_timeout_s=30)
        await asyncio.gather(*(restorer.start(table, p) for p in range(PARTITIONS)))
        assert restorer.done()

    asyncio.run(run())


def assert_holds_exactly(
    table: Table, log: bench.Changelog, changed: dict[int, bytes | None]
) -> None:
    """Every key of the changelog with its last value (or the one in `changed`), in its
    partition only, deleted keys nowhere, and no other key."""
    live = 0
    for i in [*range(KEYS), *bench.deleted_keys(KEYS)]:
        key = bench.state_key(i)
        want = changed[i] if i in changed else bench.expected_value(i, KEYS, log.shape)
        home = stable_partition(key, PARTITIONS)
        for p in range(PARTITIONS):
            assert table.partition(p).get_raw(key) == (want if p == home else None), (key, p)
        live += want is not None
    assert sum(table.partition(p).count() for p in range(PARTITIONS)) == live


def test_the_benchmark_rebuilds_exactly_the_keys_of_the_changelog(
    settings_factory: SettingsFactory,
) -> None:
    settings = settings_factory()
    result = bench.run(KEYS, PARTITIONS, value_bytes=200, runs=1, settings=settings)
    assert result["verified"] is True
    # every key, one in UPDATED_EVERY twice, the deleted keys written then tombstoned
    deleted = KEYS // bench.DELETED_PER
    assert result["records"] == KEYS + KEYS // bench.UPDATED_EVERY + 2 * deleted
    stores = result["stores"]
    assert sum(s["keys"] for s in stores.values()) == KEYS
    assert sum(s["offset"] + 1 for s in stores.values()) == result["records"]
    assert 150 <= result["value_bytes"] <= 250
    # the topic is gone
    topics = bench.admin(settings).list_topics(timeout=10).topics
    assert not [t for t in topics if t.startswith(settings.internal_topic("rebuild-"))]


def test_a_rebuilt_table_holds_each_key_s_last_value_and_no_deleted_key(
    changelog: tuple[Settings, bench.Changelog], tmp_path: Path
) -> None:
    settings, log = changelog
    _, table = bench.rebuild(settings, log, tmp_path / "state")
    try:
        assert_holds_exactly(table, log, {})
        highs = high_watermarks(settings, log.topic)
        assert {p: table.partition(p).changelog_offset for p in range(PARTITIONS)} == {
            p: high - 1 for p, high in highs.items()
        }
        assert bench.verify(table, log)  # the bench's own check agrees
    finally:
        table.close()


def test_a_store_that_has_most_of_the_changelog_catches_up_with_the_rest(
    changelog: tuple[Settings, bench.Changelog], tmp_path: Path
) -> None:
    settings, log = changelog
    _, table = bench.rebuild(settings, log, tmp_path / "state")
    # more changes after the rebuild: new values, a deletion, a key deleted then back
    changed: dict[int, bytes | None] = {
        3: encode({"id": "T00000003", "v": 2}),
        4: None,
        KEYS: encode({"id": "back"}),
        KEYS + 1: None,
    }
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for i, value in changed.items():
        key = bench.state_key(i)
        producer.produce(
            log.topic, key=key.encode(), value=value, partition=stable_partition(key, PARTITIONS)
        )
    assert producer.flush(30) == 0
    try:
        restore(settings, table)
        assert_holds_exactly(table, log, changed)
        assert {p: table.partition(p).changelog_offset for p in range(PARTITIONS)} == {
            p: high - 1 for p, high in high_watermarks(settings, log.topic).items()
        }
    finally:
        table.close()


KILLED_AFTER_RESTORE = """
import asyncio, os, sys
from pathlib import Path
from pssync.connectors.kafka import read_partition
from pssync.settings import Settings
from pssync.tables.restore import Restorer
from pssync.tables.store import Table

settings = Settings.from_env()
table = Table(sys.argv[1], Path(sys.argv[2]), sys.argv[3])

async def run():
    restorer = Restorer(lambda *args: read_partition(settings, *args))
    await asyncio.gather(*(restorer.start(table, p) for p in range(int(sys.argv[4]))))

asyncio.run(run())
os._exit(0)  # as a crash: no close, nothing flushed on the way out
"""


def test_what_a_restore_wrote_without_the_log_survives_a_crash_right_after(
    changelog: tuple[Settings, bench.Changelog], tmp_path: Path
) -> None:
    settings, log = changelog
    state = tmp_path / "state"
    done = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_RESTORE, log.table, str(state), log.topic, "3"],
        env=settings_env(settings),
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    table = Table(log.table, state, log.topic)
    try:
        assert_holds_exactly(table, log, {})
        assert bench.verify(table, log)
    finally:
        table.close()
