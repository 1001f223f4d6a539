"""Rebuild from changelogs: the time to restore N keys into empty stores, against the ceiling.

On the local stack (`pssync dev up`, or `PSSYNC_KAFKA_BOOTSTRAP`):

1. a fresh compacted changelog topic (unique name, deleted at the end) with
   `--partitions` partitions gets the records a table of `--keys` time-entry
   states would have left: key = the state key (`te/<id>`), value = the state as
   `tables.store.encode` makes it (`--value-bytes` long, about), on the key's
   partition (`stable_partition`), produced with the output producer's
   configuration and flushed every `COMMIT_EVERY` records like batch commits.
   Keys come in no order; every key is written, then one in `UPDATED_EVERY` gets
   a newer value and `keys / DELETED_PER` more keys are tombstoned, so the
   changelog holds more records than keys (the topic is new: nothing compacted);
2. each run measures, on an empty temp dir:
   - **ceiling**: one bare confluent-kafka consumer assigned every partition,
     reading to the end offsets, doing nothing with the records;
   - **rebuild**: pssync's recovery as the worker runs it: a `Table`, and a
     `Restorer` over `connectors.kafka.read_partition` started for every
     partition at once (each in the default executor), until all are done;
     then (not timed) the stores must hold exactly the N keys, with their last
     values, no deleted key, and each partition's offset = its last record.

Prints the median seconds of the runs, keys/s, and the rebuild's time as a
multiple of the ceiling's measured in the same run, then the same as one JSON line.
`python -m bench.rebuild --keys 1000000 [--partitions 3] [--value-bytes 200] [--runs 3]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from pssync.connectors.kafka import (
    TopicSpec,
    admin,
    check_kafka,
    client_config,
    ensure_topics,
    read_partition,
    stable_partition,
)
from pssync.settings import Settings
from pssync.tables.restore import Restorer
from pssync.tables.store import Table, encode

UPDATED_EVERY = 20  # one key in 20 has an older version before its last one
DELETED_PER = 50  # keys / 50 more keys are written, then tombstoned
COMMIT_EVERY = 1000  # the producer is flushed every so many records, like batch commits
# what `connectors.kafka.OutputProducer` configures (it also writes the changelogs)
PRODUCER_CONFIG: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 500_000,
}
# the ceiling's consumer: librdkafka's defaults but for one. Once it holds
# `queued.min.messages` (100,000) records of a partition, a consumer waits
# `fetch.queue.backoff.ms` (1 s) before fetching it again: small records are read in
# well under that, so with the default a bare consumer takes about 4x as long here.
# Larger fetches (`fetch.max.bytes`, `max.partition.fetch.bytes`) made no difference.
CEILING_CONFIG: dict[str, Any] = {"enable.auto.commit": False, "fetch.queue.backoff.ms": 10}


def say(msg: str) -> None:
    print(f"[rebuild] {msg}", file=sys.stderr, flush=True)


def state_key(i: int) -> str:
    return f"te/T{i:08d}"


REC_FIELDS = (
    "time_entry_id",
    "worker_id",
    "work_date",
    "hours",
    "project_id",
    "status",
    "billable",
)


def _state(i: int, version: int, fields: int = len(REC_FIELDS), pad: int = 0) -> dict[str, Any]:
    """A time entry's state as `streams.worker_flow` keeps it: the first `fields` fields
    of its record, and a description of `pad` characters."""
    rec = {
        "time_entry_id": f"T{i:08d}",
        "worker_id": f"W{i % 3000:05d}",
        "work_date": f"2026-03-{1 + i % 28:02d}",
        "hours": "7.50" if version == 0 else "8.00",
        "project_id": f"P{i % 400:04d}",
        "status": "APPROVED",
        "billable": True,
    }
    state: dict[str, Any] = {
        "id": f"T{i:08d}",
        "rec": {k: rec[k] for k in REC_FIELDS[:fields]},
        "open": {},
        "issued": [],
        "changed_ms": 1_780_000_000_000 + i + version,
    }
    if pad:
        text = "Implementation workshop at the client's site. " * (pad // 46 + 1)
        state["rec"]["description"] = text[:pad]
    return state


@dataclass(frozen=True)
class Shape:
    """How much of a state the values carry, to be about `value_bytes` long."""

    fields: int
    pad: int

    @classmethod
    def of(cls, value_bytes: int) -> Shape:
        fields = len(REC_FIELDS)
        while fields > 1 and len(encode(_state(0, 0, fields))) > value_bytes:
            fields -= 1
        plain = len(encode(_state(0, 0, fields, pad=1))) - 1
        return cls(fields, max(0, value_bytes - plain))


def state_value(i: int, version: int, shape: Shape) -> bytes:
    """The encoded state of key `i` (`version` 1 is the last of an updated key)."""
    return encode(_state(i, version, shape.fields, shape.pad))


def expected_value(i: int, keys: int, shape: Shape) -> bytes | None:
    """What the store must hold for key `i` after the rebuild (None: deleted)."""
    if i >= keys:
        return None
    return state_value(i, 1 if i % UPDATED_EVERY == 0 else 0, shape)


def deleted_keys(keys: int) -> range:
    return range(keys, keys + keys // DELETED_PER)


@dataclass
class Changelog:
    """What was produced, and what a rebuild must end with."""

    topic: str
    table: str
    partitions: int
    keys: int
    shape: Shape
    records: int = 0
    value_bytes: int = 0  # total bytes of the values produced (tombstones: 0)
    # per partition: the last offset, the live keys, and a digest of (key, value) pairs
    last_offset: dict[int, int] = field(default_factory=dict)
    live: dict[int, int] = field(default_factory=dict)
    digest: dict[int, int] = field(default_factory=dict)


def _digest(key: bytes, value: bytes) -> int:
    return hash((key, value)) & 0xFFFF_FFFF_FFFF_FFFF


def produce_changelog(
    settings: Settings, keys: int, partitions: int, value_bytes: int
) -> Changelog:
    """A new compacted changelog topic with the records of `keys` live keys (module doc)."""
    name = f"rebuild-{uuid.uuid4().hex[:8]}"
    topic = settings.internal_topic(f"{name}-changelog")
    ensure_topics(settings, [TopicSpec(topic, partitions, compacted=True)])
    out = Changelog(topic, name, partitions, keys, Shape.of(value_bytes))
    out.live = dict.fromkeys(range(partitions), 0)
    out.digest = dict.fromkeys(range(partitions), 0)
    producer = Producer(client_config(settings, **PRODUCER_CONFIG))
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    def send(i: int, value: bytes | None) -> None:
        key = state_key(i).encode()
        p = stable_partition(state_key(i), partitions)
        while True:
            try:
                producer.produce(topic, key=key, value=value, partition=p, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        out.records += 1
        out.value_bytes += len(value or b"")
        if out.records % COMMIT_EVERY == 0:
            producer.flush(60)

    # keys in no order (as entities change), each first written, then the updates and
    # deletes, in another order
    rng = random.Random(keys)
    first = list(range(keys + len(deleted_keys(keys))))
    rng.shuffle(first)
    for i in first:
        send(i, state_value(i, 0, out.shape))
    later = [i for i in first if i >= keys or i % UPDATED_EVERY == 0]
    rng.shuffle(later)
    for i in later:
        send(i, expected_value(i, keys, out.shape))
    for i in range(keys):
        value = expected_value(i, keys, out.shape)
        assert value is not None
        p = stable_partition(state_key(i), partitions)
        out.live[p] += 1
        out.digest[p] = (out.digest[p] + _digest(state_key(i).encode(), value)) & (2**64 - 1)
    if producer.flush(120) or errors:
        raise KafkaException(f"changelog not produced: {errors[:3]}")
    consumer = Consumer(client_config(settings, **{"group.id": f"{name}-probe"}))
    try:
        for p in range(partitions):
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            out.last_offset[p] = high - 1
    finally:
        consumer.close()
    return out


def delete_topic(settings: Settings, topic: str) -> None:
    client = admin(settings)  # referenced until the futures are done
    for future in client.delete_topics([topic], operation_timeout=30).values():
        future.result()


def ceiling(settings: Settings, log: Changelog) -> float:
    """Seconds for one bare consumer to read every partition to its end."""
    started = time.perf_counter()
    consumer = Consumer(
        client_config(settings, **{"group.id": f"{settings.app_id}-ceiling", **CEILING_CONFIG})
    )
    try:
        todo = {p for p, last in log.last_offset.items() if last >= 0}
        consumer.assign([TopicPartition(log.topic, p, OFFSET_BEGINNING) for p in sorted(todo)])
        read = 0
        while todo:
            # a batch returns when full or at the timeout: short, not to wait at the end
            msgs = consumer.consume(10_000, timeout=0.05)
            read += len(msgs)
            for msg in msgs:
                error = msg.error()
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(error)
                if msg.offset() == log.last_offset[msg.partition()]:
                    todo.discard(msg.partition())
        seconds = time.perf_counter() - started
    finally:
        consumer.close()
    if read != log.records:
        raise AssertionError(f"ceiling read {read} records of {log.records}")
    return seconds


def rebuild(settings: Settings, log: Changelog, data_dir: Path) -> tuple[float, Table]:
    """Seconds for pssync's recovery of every partition into `data_dir`, and the table.

    As the worker: `Runtime.table` makes the table, `Runtime.partition_view` starts
    the partition's restore (`Restorer.start`: the default executor) for each
    partition assigned; a worker that got them all waits for all."""

    async def restore_all() -> Table:
        restorer = Restorer(
            lambda *args: read_partition(settings, *args),
            stall_timeout_s=settings.restore_stall_timeout_s,
        )
        table = Table(log.table, data_dir, log.topic)
        await asyncio.gather(*(restorer.start(table, p) for p in range(log.partitions)))
        if not restorer.done():
            raise AssertionError("restorer not done")
        return table

    started = time.perf_counter()
    table = asyncio.run(restore_all())
    return time.perf_counter() - started, table


def verify(table: Table, log: Changelog) -> dict[str, Any]:
    """Raise unless the stores hold exactly the live keys, with their last values."""
    found: dict[str, Any] = {}
    for p in range(log.partitions):
        store = table.partition(p)
        n, digest = 0, 0
        for key, raw in store.raw_items(""):
            n += 1
            digest = (digest + _digest(key.encode(), raw)) & (2**64 - 1)
        offset = store.changelog_offset
        found[str(p)] = {"keys": n, "offset": offset}
        if (n, digest, offset) != (log.live[p], log.digest[p], log.last_offset[p]):
            raise AssertionError(
                f"partition {p}: {n} keys (want {log.live[p]}), offset {offset} "
                f"(want {log.last_offset[p]}), digest {'ok' if digest == log.digest[p] else 'bad'}"
            )
    return found


def run(
    keys: int, partitions: int, value_bytes: int, runs: int, settings: Settings
) -> dict[str, Any]:
    """Produce the changelog, measure `runs` times (ceiling, then rebuild), clean up."""
    check_kafka(settings)
    started = time.perf_counter()
    log = produce_changelog(settings, keys, partitions, value_bytes)
    say(
        f"produced {log.records} records ({keys} keys) to {log.topic} "
        f"in {time.perf_counter() - started:.1f}s"
    )
    ceilings: list[float] = []
    rebuilds: list[float] = []
    stores: dict[str, Any] = {}
    try:
        for n in range(runs):
            ceilings.append(ceiling(settings, log))
            with tempfile.TemporaryDirectory(prefix="pssync-rebuild-") as tmp:
                state_dir = Path(tmp) / f"{settings.topic_prefix}{settings.app_id}"
                seconds, table = rebuild(settings, log, state_dir)
                try:
                    stores = verify(table, log)
                finally:
                    table.close()
            rebuilds.append(seconds)
            say(f"run {n + 1}/{runs}: ceiling {ceilings[-1]:.2f}s, rebuild {seconds:.2f}s")
    finally:
        delete_topic(settings, log.topic)
    ceiling_s = statistics.median(ceilings)
    rebuild_s = statistics.median(rebuilds)
    return {
        "bench": "rebuild",
        "keys": keys,
        "records": log.records,
        "partitions": partitions,
        "value_bytes": round(log.value_bytes / max(1, log.records - len(deleted_keys(keys)))),
        "runs": runs,
        "ceiling_s": round(ceiling_s, 3),
        "rebuild_s": round(rebuild_s, 3),
        "ceiling_runs_s": [round(s, 3) for s in ceilings],
        "rebuild_runs_s": [round(s, 3) for s in rebuilds],
        "ceiling_keys_per_s": round(keys / ceiling_s),
        "rebuild_keys_per_s": round(keys / rebuild_s),
        "ratio": round(rebuild_s / ceiling_s, 2),
        "verified": True,
        "stores": stores,
    }


def table_lines(result: dict[str, Any]) -> list[str]:
    keys = result["keys"]
    lines = [f"{'':<9} {'keys':>9} {'records':>9} {'seconds':>8} {'keys/s':>9} {'x ceiling':>9}"]
    for name in ("ceiling", "rebuild"):
        seconds = result[f"{name}_s"]
        lines.append(
            f"{name:<9} {keys:>9} {result['records']:>9} {seconds:>8.2f} "
            f"{result[f'{name}_keys_per_s']:>9} {seconds / result['ceiling_s']:>9.2f}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rebuild",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--keys", type=int, default=1_000_000, help="live keys in the table")
    parser.add_argument("--partitions", type=int, default=3, help="changelog partitions")
    parser.add_argument("--value-bytes", type=int, default=200, help="encoded state size, about")
    parser.add_argument("--runs", type=int, default=3, help="measurements (median)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = run(args.keys, args.partitions, args.value_bytes, args.runs, Settings.from_env())
    print("\n".join(table_lines(result)))
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
