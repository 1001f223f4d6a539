"""Helpers for tests on the real stack: CDC lines, the CLI's produce, draining, collecting."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pssync.avro.codec import Codec
from pssync.avro.contract import ALL_TOPICS
from pssync.avro.registry import RegistryClient
from pssync.connectors import kafka
from pssync.connectors.jsonl import consume_records
from pssync.settings import Settings
from tests.conftest import settings_env

SOURCE_TS = 1_780_000_000_000


def cdc_line(
    topic: str,
    after: dict[str, Any] | None,
    *,
    lsn: int,
    op: str | None = None,
    before: dict[str, Any] | None = None,
    key: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    platform, table = topic.split(".")[1:]
    if op is None:
        op = "d" if after is None else ("u" if before is not None else "c")
    image = after if after is not None else before
    if key is None:
        assert image is not None
        key = {next(iter(image)): next(iter(image.values()))}
    line: dict[str, Any] = {
        "topic": topic,
        "key": key,
        "value": {
            "before": before,
            "after": after,
            "op": op,
            "ts_ms": SOURCE_TS + lsn,
            "source": {
                "version": "3.6.1.Final",
                "connector": "postgresql",
                "name": "cdc",
                "ts_ms": SOURCE_TS + lsn,
                "snapshot": "true" if op == "r" else "false",
                "db": "platforms",
                "schema": platform,
                "table": table,
                "txId": lsn,
                "lsn": lsn,
            },
        },
    }
    if headers:
        line["headers"] = headers
    return line


def produce_cli(settings: Settings, lines: Iterable[dict[str, Any]], tmp: Path) -> str:
    """Run `pssync produce --file` (the CLI's own path); returns its stderr."""
    path = tmp / f"input-{time.monotonic_ns()}.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    proc = subprocess.run(
        [sys.executable, "-m", "pssync", "produce", "--file", str(path)],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def pssync_cli(settings: Settings, *args: str, timeout_s: float = 60) -> str:
    """`pssync <args>` with exactly `settings` (fails the test on a non-zero exit);
    returns its stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "pssync", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def create_topics(settings: Settings) -> None:
    """`pssync topics create`, as a user would run it before producing."""
    pssync_cli(settings, "topics", "create")


def codec_for(settings: Settings) -> Codec:
    codec = Codec(RegistryClient.from_settings(settings), settings.topic_prefix)
    codec.register_all(ALL_TOPICS)
    return codec


def collect(settings: Settings, topics: list[str], idle_s: float = 2.0) -> list[dict[str, Any]]:
    """Every record on `topics` so far (decoded, JSON form)."""
    return list(consume_records(settings, codec_for(settings), topics, True, idle_s))


def wait_drained(settings: Settings, physical_topics: list[str], timeout_s: float = 90) -> None:
    """Wait until the app has processed everything sent so far (`connectors.kafka`)."""
    kafka.wait_drained(settings, physical_topics, timeout_s)


def latest_by_key(records: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in records:
        out[r["key"]] = r["value"]
    return out


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET a /metrics page: (sample name, sorted labels) -> value."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def metric(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """The sum of `name` over samples whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))
