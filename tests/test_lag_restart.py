"""Consumer lag after a restart comes from the group's position, not from this process.

A worker processes the scenario firm and stops; a new worker process starts on the
same group and state. Nothing new arrives, so every partition it owns is caught up:
its lag must read zero for every source topic for as long as nothing arrives (a
partition with no new record once reported its whole length: the process counted
from what it had seen itself, not from the group's committed offset). Then a new
record arrives and is processed: the lag goes back to zero.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from pssync.connectors.kafka import client_config
from pssync.settings import Settings
from tests import scenarios
from tests.conftest import SettingsFactory, free_port, launch_worker
from tests.kafka_helpers import create_topics, produce_cli, scrape
from tests.test_api_e2e import drained, eventually, feed_scenario

pytestmark = pytest.mark.kafka


def records_on(settings: Settings, topics: list[str]) -> dict[str, int]:
    """Records each topic holds (the sum of its partitions' high watermarks)."""
    consumer = Consumer(client_config(settings, **{"group.id": f"lag-{uuid.uuid4()}"}))
    try:
        out = {}
        for topic in topics:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            out[topic] = sum(
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions
            )
        return out
    finally:
        consumer.close()


def lags(url: str) -> dict[str, float]:
    samples = scrape(f"{url}/metrics")
    return {
        dict(labels)["topic"]: value
        for (name, labels), value in samples.items()
        if name == "pssync_consumer_lag"
    }


def test_a_restarted_worker_reports_no_lag_for_what_was_processed(
    settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    settings = settings_factory(tick_interval_s=0.5).model_copy(
        update={"web_port": free_port(), "web_host": "127.0.0.1", "instance_id": "lag-test"}
    )
    create_topics(settings)
    worker = launch_worker(settings, tmp_path / "worker-1.log")
    try:
        feed_scenario(settings, tmp_path)
        eventually("lag reported", lambda: lags(worker.url))
        eventually("no lag", lambda: len(lags(worker.url)) >= 12)
    finally:
        worker.stop()

    worker = launch_worker(settings, tmp_path / "worker-2.log")
    try:
        # the probe runs every tick: give it several, with nothing new arriving
        eventually("lag reported after the restart", lambda: len(lags(worker.url)) >= 11)
        physical = [settings.internal_topic(t) for t in ("worker-keyed", "project-keyed")]
        internal = [settings.logical(t) for t in physical]  # as the metric names them
        held = dict(zip(internal, records_on(settings, physical).values(), strict=True))
        for _ in range(6):
            time.sleep(settings.tick_interval_s)
            seen = lags(worker.url)
            sources = {t: v for t, v in seen.items() if t not in internal}
            assert len(sources) == 12  # the 11 CDC topics and ops.actions
            assert set(sources.values()) == {0}, {t: v for t, v in sources.items() if v}
            # the keyed topics get the worker's own ticks and watermarks all the time:
            # what is in flight at the probe, never what was processed before the restart
            for topic in internal:
                assert seen[topic] < 50 < held[topic], (topic, seen[topic], held[topic])
        produce_cli(settings, scenarios.reference_and_erp()[:1], tmp_path)
        drained(settings)
        eventually(
            "no lag after a new record",
            lambda: {v for t, v in lags(worker.url).items() if t not in internal} == {0},
        )
    finally:
        worker.stop()
