"""The Quix Streams peer (`bench/peers/quix_worker.py`) computes what the simulator's truth
says, on the real stack: a small seeded firm is simulated onto fresh topics, the peer runs
as its CLI, and its result and its output topic are compared with the truth file.

Compared: the POST_TIME_ENTRY count (the truth summary's `expected.POST_TIME_ENTRY`), the
workers whose WORKER_MISSING_IN_ERP / WORKER_FIELD_DRIFT alert is open at the end (the
truth's expectations on entity type `worker`; the WORKER_INVALID_COST_CENTER fault's
companion line expects WORKER_MISSING_IN_ERP too), the undecodable records on the peer's
input topics, and every POST's cost amount. The peer raises no exceptions, so the
truth's exception lines are not compared.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.conftest import SettingsFactory, settings_env

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[1]
# the peer's input topics (bench.peers.quix_worker.INPUT_TOPICS; not imported here: Quix
# Streams' import chain emits a deprecation warning, which this suite turns into an error)
INPUT_TOPICS = (
    "cdc.hr.worker",
    "cdc.erp.employee",
    "cdc.erp.cost_rate",
    "cdc.psa.time_entry",
    "cdc.erp.project",
    "cdc.erp.period",
)
WORKER_RULES = ("WORKER_MISSING_IN_ERP", "WORKER_FIELD_DRIFT")


def _offsets(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex}"})
    try:
        meta = consumer.list_topics(timeout=15)
        return {
            (t, p): consumer.get_watermark_offsets(TopicPartition(t, p), timeout=15)[1]
            for t in topics
            for p in meta.topics[t].partitions
        }
    finally:
        consumer.close()


def _read_all(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    ends = _offsets(bootstrap, [topic])
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([TopicPartition(t, p, 0) for (t, p) in ends])
        pending = {p for (_, p), end in ends.items() if end > 0}
        records = []
        while pending:
            msg = consumer.poll(10)
            assert msg is not None, f"{topic}: nothing more to read, partitions {pending} short"
            assert msg.error() is None, msg.error()
            records.append(json.loads(msg.value()))
            if msg.offset() + 1 >= ends[(topic, msg.partition())]:
                pending.discard(msg.partition())
        return records
    finally:
        consumer.close()


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param([], id="default-faults"),
        pytest.param(
            [
                "--fault",
                "WORKER_FIELD_DRIFT=0.4",
                "--fault",
                "WORKER_MISSING_IN_ERP=0.3",
                "--fault",
                "OUT_OF_ORDER=0.5",
                "--fault",
                "TIME_MISSING_COST_RATE=0.3",
            ],
            id="worker-faults",
        ),
    ],
)
def test_quix_peer_matches_the_truth(
    settings_factory: SettingsFactory, tmp_path: Path, faults: list[str]
) -> None:
    settings = settings_factory()
    prefix, bootstrap = settings.topic_prefix, settings.kafka_bootstrap
    connection = ["--bootstrap", bootstrap, "--registry-url", settings.schema_registry_url]
    truth_path = tmp_path / "truth.jsonl"
    sim = subprocess.run(
        [
            *(sys.executable, "-m", "pssync", "simulate", "--workers", "30", "--count", "3000"),
            *("--rate", "0", "--truth", str(truth_path), "--topic-prefix", prefix),
            *connection,
            *faults,
        ],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sim.returncode == 0, sim.stderr

    peer = subprocess.run(
        [
            *(sys.executable, "-m", "bench.peers.quix_worker", "--topic-prefix", prefix),
            *("--timeout", "240", *connection),
        ],
        cwd=REPO,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert peer.returncode == 0, peer.stderr[-5000:]
    lines = peer.stdout.strip().splitlines()
    assert len(lines) == 1, peer.stdout
    result = json.loads(lines[0])
    assert result["complete"], result

    truth = [json.loads(line) for line in truth_path.read_text().splitlines() if line.strip()]
    expected_posts = truth[0]["summary"]["expected"]["POST_TIME_ENTRY"]
    faults_seen = truth[1:]
    expected_open = {
        rule: {
            f["entity_id"]
            for f in faults_seen
            if f["expect_rule"] == rule and f["entity_type"] == "worker"
        }
        for rule in WORKER_RULES
    }
    undecodable = sum(
        1
        for f in faults_seen
        if f["fault"] == "UNDECODABLE" and f["detail"]["topic"] in INPUT_TOPICS
    )
    inputs = _offsets(bootstrap, [prefix + t for t in INPUT_TOPICS])

    # what the peer says it did
    assert result["records"] == sum(inputs.values())
    assert result["dlq"] == undecodable
    assert result["outputs"]["POST_TIME_ENTRY"] == expected_posts
    assert result["reversed"] == 0
    for rule in WORKER_RULES:
        assert set(result["open"][rule]) == expected_open[rule], rule
    if faults:
        assert expected_open["WORKER_FIELD_DRIFT"], "the fault rates injected no field drift"

    # what is on its output topic
    records = _read_all(bootstrap, result["output_topic"])
    posts = [r for r in records if r["kind"] == "command" and r["type"] == "POST_TIME_ENTRY"]
    assert len(posts) == expected_posts
    assert len({p["command_id"] for p in posts}) == expected_posts
    assert len({p["entity_id"] for p in posts}) == expected_posts
    for post in posts:
        payload = post["payload"]
        amount = (Decimal(payload["hours"]) * Decimal(payload["cost_rate"])).quantize(
            Decimal("0.01"), rounding=ROUND_HALF_UP
        )
        assert payload["cost_amount"] == str(amount), payload
        assert payload["erp_employee_id"], payload
        assert payload["erp_project_id"], payload
        assert payload["period_id"].endswith(payload["work_date"][:7]), payload
    last_state: dict[tuple[str, str], str] = {}
    for r in records:
        if r["kind"] == "alert":
            last_state[(r["rule"], r["entity_id"])] = r["state"]
    for rule in WORKER_RULES:
        on_topic = {e for (ru, e), state in last_state.items() if ru == rule and state == "OPEN"}
        assert on_topic == expected_open[rule], rule
