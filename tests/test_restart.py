"""Restarts: a worker killed (SIGKILL) and started again is ready with its state, as the
same static group member; a second consumer with the same instance id is an error.

The Kafka tests run real `pssync worker` processes on the dev stack (they fail, never
skip, without it). No timing is asserted: `bench.restart` measures.
"""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from pssync.avro.contract import ACTIONS_TOPIC, CDC_TOPICS
from pssync.settings import Settings, SettingsError, default_instance_id
from pssync.worker import FencingWatch, WorkerConflict, check_port
from tests import scenarios
from tests.conftest import (
    SettingsFactory,
    WorkerHandle,
    free_port,
)
from tests.kafka_helpers import cdc_line, collect, create_topics, produce_cli, wait_drained
from tests.worker_harness import ERP_PROJECT, TIME, erp_project, time_entry

Start = Callable[[Settings], WorkerHandle]


# -- the instance id, without Kafka -------------------------------------------------------
def test_default_instance_id_is_host_and_port() -> None:
    a = Settings.from_env({"PSSYNC_WEB_PORT": "7001"})
    b = Settings.from_env({"PSSYNC_WEB_PORT": "7002", "PSSYNC_DATA_DIR": "/elsewhere"})
    assert a.group_instance_id == default_instance_id(7001)
    assert a.group_instance_id.endswith("-7001")
    assert re.fullmatch(r"[A-Za-z0-9._-]+", a.group_instance_id)
    # stable: the same settings give the same id; two workers on one host differ by port
    assert Settings.from_env({"PSSYNC_WEB_PORT": "7001"}).group_instance_id == a.group_instance_id
    assert b.group_instance_id != a.group_instance_id
    # a data dir shared by two workers (as the multi-worker tests do) does not matter
    c = Settings.from_env({"PSSYNC_WEB_PORT": "7002"})
    assert c.group_instance_id == b.group_instance_id


def test_instance_id_explicit_none_and_invalid() -> None:
    assert Settings.from_env({"PSSYNC_INSTANCE_ID": "pssync-0"}).group_instance_id == "pssync-0"
    assert Settings.from_env({"PSSYNC_INSTANCE_ID": "none"}).group_instance_id is None
    with pytest.raises(SettingsError, match="PSSYNC_INSTANCE_ID=a b"):
        Settings.from_env({"PSSYNC_INSTANCE_ID": "a b"})
    with pytest.raises(SettingsError, match="PSSYNC_SESSION_TIMEOUT_S=1"):
        Settings.from_env({"PSSYNC_SESSION_TIMEOUT_S": "1"})


def refusal(message: str) -> logging.LogRecord:
    return logging.LogRecord(
        "aiokafka.consumer.group_coordinator", logging.WARNING, __file__, 1, message, None, None
    )


HEARTBEAT = "Heartbeat failed: local member_id was not recognized; resetting and re-joining group"
COMMIT = (
    "OffsetCommit failed for group g due to group error "
    "([Error 25] UnknownMemberIdError: g), will rejoin"
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_fencing_watch_fires_once_on_repeated_refusals() -> None:
    settings = Settings.from_env({"PSSYNC_INSTANCE_ID": "w-1", "PSSYNC_SESSION_TIMEOUT_S": "30"})
    reasons: list[str] = []
    clock = Clock()
    watch = FencingWatch(settings, reasons.append, clock=clock)
    for message in (COMMIT, COMMIT, COMMIT, HEARTBEAT, "Heartbeat failed: rebalancing"):
        watch.emit(refusal(message))  # one refusal, seen by several requests at once
    clock.now += 3
    watch.emit(refusal(HEARTBEAT))
    assert reasons == []  # twice: a session that expired and came back, say
    for _ in range(3):
        clock.now += 3
        watch.emit(refusal(COMMIT))
    assert len(reasons) == 1
    assert "'w-1'" in reasons[0]
    assert "PSSYNC_INSTANCE_ID" in reasons[0]


def test_fencing_watch_forgets_refusals_older_than_a_session() -> None:
    settings = Settings.from_env({"PSSYNC_INSTANCE_ID": "w-1", "PSSYNC_SESSION_TIMEOUT_S": "30"})
    reasons: list[str] = []
    clock = Clock()
    watch = FencingWatch(settings, reasons.append, clock=clock)
    for _ in range(5):
        watch.emit(refusal(HEARTBEAT))
        clock.now += 20
    assert reasons == []


def test_a_taken_port_stops_the_worker_before_it_joins() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings.from_env({"PSSYNC_WEB_PORT": str(port), "PSSYNC_WEB_HOST": "127.0.0.1"})
        with pytest.raises(WorkerConflict, match=f"PSSYNC_WEB_PORT={port}"):
            check_port(settings)


# -- real workers ---------------------------------------------------------------------------
def drained(settings: Settings) -> None:
    topics = [settings.topic(t) for t in CDC_TOPICS]
    internal = [settings.internal_topic(t) for t in ("worker-keyed", "project-keyed")]
    wait_drained(settings, topics + internal)


def joined_generation(handle: WorkerHandle) -> int:
    found = re.findall(r"Joined group '[^']+' \(generation (\d+)\)", handle.log(tail=0))
    assert found, handle.log()
    return int(found[-1])


@pytest.mark.kafka
def test_after_a_sigkill_the_restarted_worker_is_ready_with_its_state(
    settings_factory: SettingsFactory, start_worker: Start, tmp_path: Path
) -> None:
    settings = settings_factory(web_port=free_port(), web_host="127.0.0.1")
    create_topics(settings)
    first = start_worker(settings)
    # W1 with its rates, the open periods; T9 (W1, 2026-03-13) waits for its project P9
    produce_cli(settings, scenarios.reference_and_erp() + scenarios.psa_and_hr()[:4], tmp_path)
    produce_cli(
        settings, [cdc_line(TIME, time_entry("T9", "W1", "P9", "2026-03-13"), lsn=500)], tmp_path
    )
    drained(settings)
    assert collect(settings, ["erp.cmd.time_entry"], idle_s=1) == []
    generation = joined_generation(first)

    first.proc.kill()  # SIGKILL: no shutdown, no commit beyond what was committed
    first.proc.wait(30)
    second = start_worker(settings)  # same data dir, same port: the same instance id

    assert f"instance_id={settings.group_instance_id}" in second.log(tail=0)
    # the same static member came back: the broker handed it the partitions without a
    # rebalance (a new member would have made a new generation, after a session timeout)
    assert joined_generation(second) == generation
    status, body = second.get("/ready")
    assert status == 200
    assert body["assigned_partitions"] > 0

    # the inputs from before the kill are not read again (their offsets were committed):
    # only the state from before knows W1's rate and the parked T9
    produce_cli(settings, [cdc_line(ERP_PROJECT, erp_project("EP9", "P9"), lsn=501)], tmp_path)
    drained(settings)
    posted = collect(settings, ["erp.cmd.time_entry"], idle_s=1)
    assert [(c["value"]["type"], c["key"]) for c in posted] == [("POST_TIME_ENTRY", "T9")]
    payload = posted[0]["value"]["payload"]
    # W1's ERP employee and its rate on 2026-03-13, both known only from before the kill
    assert (payload["erp_employee_id"], payload["cost_rate"]) == ("E1", "80.00")


IMPOSTOR = """
import asyncio, sys
from aiokafka import AIOKafkaConsumer

async def main(bootstrap, group, instance, topics):
    consumer = AIOKafkaConsumer(
        *topics.split(","), bootstrap_servers=bootstrap, group_id=group,
        group_instance_id=instance, session_timeout_ms=10000, heartbeat_interval_ms=1000,
        enable_auto_commit=False,
    )
    await consumer.start()
    while True:
        await consumer.getmany(timeout_ms=500)

asyncio.run(main(*sys.argv[1:5]))
"""


@pytest.mark.kafka
def test_a_second_consumer_with_the_same_instance_id_stops_the_worker_with_a_clear_error(
    settings_factory: SettingsFactory, start_worker: Start, tmp_path: Path
) -> None:
    settings = settings_factory(
        web_port=free_port(), web_host="127.0.0.1", instance_id=f"dup-{uuid.uuid4().hex[:8]}"
    )
    create_topics(settings)
    worker = start_worker(settings)
    # another consumer of the group, subscribed like the worker, with the worker's id
    topics = [settings.topic(t) for t in (*CDC_TOPICS, ACTIONS_TOPIC)] + [
        settings.internal_topic(t) for t in ("worker-keyed", "project-keyed")
    ]
    args = [settings.kafka_bootstrap, settings.group_id, settings.instance_id, ",".join(topics)]
    with open(tmp_path / "impostor.log", "wb") as impostor_log:
        impostor = subprocess.Popen(
            [sys.executable, "-c", IMPOSTOR, *args],
            stdout=subprocess.DEVNULL,
            stderr=impostor_log,
        )
    try:
        worker.proc.wait(120)  # not a silent loop: the worker gives up
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker kept running with a duplicate instance id:\n{worker.log()}")
    finally:
        impostor.kill()
        impostor.wait(30)
    log = worker.log(tail=0)
    assert worker.proc.returncode != 0, log
    assert f"uses this worker's instance id {settings.instance_id!r}" in log, log
    assert "PSSYNC_INSTANCE_ID" in log
