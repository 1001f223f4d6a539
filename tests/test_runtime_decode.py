"""Runtime.decode without Kafka: tombstones, and what reaches the DLQ, as data."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pssync.avro.codec import Codec
from pssync.avro.registry import RegistryClient
from pssync.settings import Settings
from pssync.streams.decode import Inbound
from pssync.streams.runtime import Runtime


class NoProducer:
    """decode() must not send anything; any call fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"decode used the producer ({name})")


def runtime(tmp_path: Path) -> Runtime:
    settings = Settings(data_dir=tmp_path, schema_registry_url="http://127.0.0.1:9/unused")
    codec = Codec(RegistryClient(settings.schema_registry_url, timeout_s=0.5))
    return Runtime(settings, codec, NoProducer())  # type: ignore[arg-type]


def test_a_tombstone_is_counted_and_produces_nothing(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    tombstone = Inbound("cdc.hr.worker", 1, 42, b"\x00\x00\x00\x00\x01\x06W-1", None)
    decoded = asyncio.run(rt.decoder.decode([tombstone]))
    assert decoded.changes == []
    assert decoded.dead == []
    assert decoded.tombstones == 1
    assert rt.stats.records_in == {"cdc.hr.worker": 1}


def test_bytes_without_the_wire_format_become_a_dead_letter_as_data(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    record = Inbound("cdc.hr.worker", 2, 7, None, b"\x01garbage", (("correlation_id", b"c-9"),))
    decoded = asyncio.run(rt.decoder.decode([record]))
    (dead,) = decoded.dead
    assert dead.topic == "sync.dlq"
    assert dead.correlation_id == "c-9"
    assert dead.value is not None
    assert dead.value["value"] == b"\x01garbage"
    assert (dead.value["partition"], dead.value["offset"]) == (2, 7)
    assert dead.value["error_class"] == "DecodeError"
    assert "magic byte 1" in dead.value["error_message"]
    assert rt.stats.dlq == {"undecodable": 1}
