"""Recovery of any size: bounded by progress, retried, visible while it runs."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from pssync.connectors.kafka import TopicSpec, ensure_topics, read_partition
from pssync.tables.restore import Restorer
from pssync.tables.store import Table, encode
from tests.conftest import SettingsFactory

Record = tuple[bytes, bytes | None, int]


def changelog(n: int) -> list[Record]:
    return [(f"k/{i % 700}".encode(), encode({"i": i}), i) for i in range(n)]


def reader(records: list[Record], pause_s: float = 0.0, fail_once_at: int | None = None) -> Any:
    failed = threading.Event()

    def read(
        topic: str, partition: int, start: int, stall_s: float, on_total: Callable[[int], None]
    ) -> Iterator[Record]:
        todo = [r for r in records if r[2] >= start]
        on_total(len(todo))
        for key, value, offset in todo:
            if fail_once_at is not None and offset == fail_once_at and not failed.is_set():
                failed.set()
                raise ConnectionError("broker went away")
            if pause_s:
                time.sleep(pause_s)
            yield key, value, offset

    return read


def restore(restorer: Restorer, table: Table) -> None:
    async def run() -> None:
        await restorer.start(table, 0)

    asyncio.run(run())


def test_a_restore_longer_than_any_deadline_completes_while_it_progresses(tmp_path: Path) -> None:
    """The old code gave a whole changelog one deadline; here the deadline is 0.2 s of no
    progress, and the restore takes several times that."""
    records = changelog(12_000)
    restorer = Restorer(reader(records, pause_s=0.00005), stall_timeout_s=0.2)
    table = Table("workers", tmp_path, "cl")
    started = time.monotonic()
    restore(restorer, table)
    assert time.monotonic() - started > 0.4
    store = table.partition(0)
    assert store.changelog_offset == 11_999
    assert store.count() == 700
    assert store.get("k/5") == {"i": 11_905}
    assert restorer.done()


def test_a_failed_restore_is_retried_from_where_it_got_to(tmp_path: Path) -> None:
    records = changelog(12_000)
    restorer = Restorer(reader(records, fail_once_at=7_000), max_backoff_s=0.1)
    table = Table("workers", tmp_path, "cl")
    restore(restorer, table)
    store = table.partition(0)
    assert store.changelog_offset == 11_999
    assert store.get("k/0") == {"i": 11_900}
    (progress,) = restorer._progress.values()
    assert progress.attempts == 2
    assert progress.error == "ConnectionError: broker went away"
    assert (progress.done, progress.total) == (7_000, 7_000)  # resumed from the 5,000 written


def test_progress_is_shown_while_restoring(tmp_path: Path) -> None:
    records = changelog(6_000)
    restorer = Restorer(reader(records, pause_s=0.0005))
    table = Table("workers", tmp_path, "cl")
    seen: list[list[dict[str, object]]] = []

    async def run() -> None:
        future = restorer.start(table, 0)
        while not future.done():
            seen.append(restorer.progress())
            await asyncio.sleep(0.2)
        await future

    asyncio.run(run())
    during = [p[0] for p in seen if p]
    assert during, "no progress was visible while restoring"
    assert during[-1]["records_total"] == 6_000
    assert 0 < int(during[-1]["records_done"]) <= 6_000  # type: ignore[call-overload]
    assert restorer.progress() == []  # finished: nothing left to show


@pytest.mark.kafka
def test_a_real_changelog_restores_at_a_slow_pace_past_the_stall_timeout(
    settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    settings = settings_factory()
    topic = settings.internal_topic(f"restore-{uuid.uuid4().hex[:6]}-changelog")
    ensure_topics(settings, [TopicSpec(topic, 1, compacted=True)])
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for i in range(4_000):
        producer.produce(topic, key=f"k/{i % 300}".encode(), value=encode({"i": i}), partition=0)
    assert producer.flush(30) == 0

    def slowly(*args: object) -> Iterator[Record]:
        for n, record in enumerate(read_partition(settings, *args)):  # type: ignore[arg-type]
            if n % 500 == 0:
                time.sleep(0.4)  # a slow disk: longer than the stall timeout, in total
            yield record

    restorer = Restorer(slowly, stall_timeout_s=1.0)
    table = Table("workers", tmp_path, topic)
    started = time.monotonic()
    restore(restorer, table)
    assert time.monotonic() - started > 3.0
    assert table.partition(0).changelog_offset == 3_999
    assert table.partition(0).get("k/7") == {"i": 3_907}
