"""pssync's worker slice on Quix Streams: a speed baseline for the benchmark.

`python -m bench.peers.quix_worker --topic-prefix P --bootstrap B --registry-url U
[--expect N] [--timeout S]` reads the CDC topics under prefix P with a consumer group
of its own, writes JSON to `<P>peer.out`, and once it has processed everything that
was on its input topics when it started (or N input records, with --expect) prints
one JSON line: `{"records", "seconds", "rate", "outputs": {...}, ...}`.
`run_peer(...)` returns the same dict, for the benchmark harness.

What it computes, and the worker-keyed step that computes it, are in
`bench/peers/quix_rules.py` (pure logic, no Kafka); this module holds the Quix Streams
side: decoding, the source-time gate, routing, completion, and the application's
wiring.

How (Quix Streams): one `Application`; a `StreamingDataFrame` per input topic decodes
(Confluent wire format, the writer schema fetched by ID from the registry once, fastavro,
as `pssync.avro.codec`); the six are merged with `concat` and re-keyed by worker_id with
`group_by` (one repartition topic: pssync's worker-keyed internal topic), then folded
into per-worker RocksDB state (changelogged) with `apply(stateful=True)`: `w` (HR record,
ERP employees, cost rates, open alerts), `te:<id>` (the entry and what is posted),
`parked`. Outputs go to `<P>peer.out` as JSON, keyed by entity id. Redelivered or
out-of-date versions are dropped by source `lsn` (else `ts_ms`) per source row, as pssync
does.

Arrival order: the consumer reads partitions unevenly (Quix's own timestamp alignment
only covers partitions with the same number), and deciding on arrival got posts and
alerts wrong (a rate change read after a later approval; HR read before the ERP
employee of the same hire). So the decoding step holds re-keyed changes in a source-time
gate (`Gate`) and releases them in (source time, topic rank, lsn) order once every input
partition has been read past that time or to its end offset at start: a reduced form of
pssync's `streams.alignment` (no idleness timers, no watermarks between processes).

Simplifications versus pssync (it is a baseline, not a second implementation):

- One process: the gate's held changes live in memory (a crash loses them after the
  offsets were committed), and a partition counts as caught up once it reached its end
  offset at start, so on a live stream (producer still running) the gate degrades to
  arrival order. ERP projects and periods (not keyed by worker) are kept in memory by
  the process as version histories by source time; an entry sees the ERP project's and
  the period's status as of its own source time, or the first later version that
  satisfies the rule (pssync parks and evaluates again when the dependency changes).
- No cost-center gate, UPSERT_EMPLOYEE/DEACTIVATE_EMPLOYEE commands, exceptions
  (TIME_*, WORKER_INVALID_COST_CENTER, DEPENDENCY_TIMEOUT), other worker rules,
  timers, golden records, ops actions, DLQ records or metrics: an undecodable record is
  counted (`dlq`) and skipped; a record that names no worker (an unlinked ERP
  employee, a delete without a before-image) is counted (`unroutable`) and skipped; a
  tombstone is counted. The contract's enum checks are not made.
- An ERP employee, cost rate or time entry whose worker_id changes is removed from the
  old worker using the Debezium before-image (pssync also keeps link tables).
- Command IDs are deterministic (action, entry, source position); outputs are plain JSON
  (no Avro, no registry), headers are what Quix carries along, nothing is retired.
- The topic prefix is at most 17 characters: Quix names its repartition and changelog
  topics after all six input topics, and Kafka allows 249.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import io
import json
import math
import os
import shutil
import struct
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from fastavro import parse_schema, schemaless_reader
from quixstreams import Application, message_context
from quixstreams.models import TopicConfig

from bench.peers.quix_rules import (
    DRIFT,
    EMP,
    HR,
    INPUT_TOPICS,
    MISSING,
    OUT_TOPIC,
    PERIOD,
    POST,
    PROJECT,
    RATE,
    REFERENCE_TOPICS,
    REVERSE,
    TE,
    WORKER_SHAPES,
    PeerStats,
    Record,
    ReferenceData,
    WorkerLogic,
)

# consume() waits this long to fill a batch: the 1 s default stalls every time a buffer runs dry
POLL_TIMEOUT_S = 0.05
# Quix names the repartition topic `repartition__<group>--<all input topics>--w` and its
# changelog longer still: 6 x prefix + 144 characters (group "pq" + 8 hex), Kafka's limit 249
MAX_PREFIX = 17
DEFAULT_REGISTRY = "http://127.0.0.1:8081/apis/ccompat/v7"
_HEADER = struct.Struct(">bI")


# -- decoding ------------------------------------------------------------------
class AvroDecoder:
    """Confluent wire format -> Python values with the writer schema, fetched by ID once."""

    def __init__(self, registry_url: str) -> None:
        self.url = registry_url.rstrip("/")
        self._schemas: dict[int, Any] = {}

    def _fetch(self, schema_id: int) -> Any:
        req = urllib.request.Request(
            f"{self.url}/schemas/ids/{schema_id}",
            headers={"Accept": "application/vnd.schemaregistry.v1+json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                text = json.loads(resp.read())["schema"]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise ValueError(f"schema id {schema_id} unknown to the registry") from exc
            raise
        parsed = parse_schema(json.loads(text))
        self._schemas[schema_id] = parsed
        return parsed

    def decode(self, data: bytes) -> Any:
        if len(data) < 5:
            raise ValueError("too short for the Confluent wire format")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != 0:
            raise ValueError(f"magic byte {magic}")
        schema = self._schemas.get(schema_id) or self._fetch(schema_id)
        fo = io.BytesIO(data)
        fo.seek(5)
        value = schemaless_reader(fo, schema, None)
        if fo.tell() != len(data):
            raise ValueError("trailing bytes after the Avro record")
        return value


# -- stage 1: decode, route, and release in source-time order ----------------------
# ties in source time: what a rule follows first (as `streams.alignment.TOPIC_RANK`)
RANK = {PERIOD: 0, RATE: 1, EMP: 2, PROJECT: 3, HR: 4, TE: 5}
_DECODE_ERRORS = (ValueError, EOFError, TypeError, KeyError, IndexError, struct.error)


class Gate:
    """A source-time gate over every input partition (Kafka Streams' stream-time
    synchronisation, reduced): a re-keyed change is released only once every input
    partition has been read past its source time, or to its end offset at start.
    Released changes leave in (source time, topic rank, lsn) order, so the worker-keyed
    step sees HR, ERP and PSA changes in the order they happened, whatever order the
    consumer fetched the partitions in. Held changes live in memory only (see the module
    docstring)."""

    def __init__(self, ends: dict[tuple[str, int], int]) -> None:
        self.ends = ends
        self.last: dict[tuple[str, int], float] = {
            tp: (math.inf if end == 0 else -1.0) for tp, end in ends.items()
        }
        self.low = min(self.last.values(), default=math.inf)
        self.heap: list[tuple[int, int, int, int, Record]] = []
        self.seq = 0

    def advance(self, topic: str, partition: int, offset: int, ts: int | None) -> None:
        tp = (topic, partition)
        old = self.last.get(tp)
        if old is None:
            return
        if offset + 1 >= self.ends[tp]:
            new = math.inf
        elif ts is not None and ts > old:
            new = float(ts)
        else:
            return
        self.last[tp] = new
        if old == self.low:
            self.low = min(self.last.values())

    def push(self, msgs: list[Record], rank: int) -> None:
        for msg in msgs:
            self.seq += 1
            heapq.heappush(self.heap, (msg["ts"], rank, msg["lsn"] or 0, self.seq, msg))

    def release(self) -> list[Record]:
        heap, low, out = self.heap, self.low, []
        while heap and heap[0][0] < low:
            out.append(heapq.heappop(heap)[-1])
        return out


class Router:
    """Decodes input records, keeps reference data, and re-keys worker records."""

    def __init__(
        self, decoder: AvroDecoder, stats: PeerStats, ref: ReferenceData, gate: Gate
    ) -> None:
        self.decoder = decoder
        self.stats = stats
        self.ref = ref
        self.gate = gate

    def _envelope(self, value: bytes | None) -> tuple[Record | None, int, int]:
        """(envelope or None, event time, lsn); counts tombstones and undecodables."""
        if value is None:
            self.stats.tombstones += 1
            return None, 0, 0
        try:
            env = self.decoder.decode(value)
        except _DECODE_ERRORS:
            self.stats.dlq += 1
            return None, 0, 0
        source = env.get("source") or {}
        snapshot = env.get("op") == "r" or str(source.get("snapshot") or "false") != "false"
        ts = 0 if snapshot else int(source.get("ts_ms") or env.get("ts_ms") or 0)
        lsn = source.get("lsn")
        return env, ts, (lsn if lsn is not None else ts)

    def _rekey(self, topic: str, env: Record, key: bytes | None, ts: int, lsn: int) -> list[Record]:
        kind, row_field, project = WORKER_SHAPES[topic]
        after, before = env.get("after"), env.get("before")
        image = after or before
        if image is None and kind == "hr" and key is not None:
            try:
                image = self.decoder.decode(key)  # the key record holds worker_id
            except _DECODE_ERRORS:
                image = None
        if image is None:
            self.stats.unroutable += 1
            return []
        row = image[row_field]
        new_w = after.get("worker_id") if after else None
        old_w = before.get("worker_id") if before else (None if after else image.get("worker_id"))
        out = []
        if new_w:
            out.append({"k": kind, "w": new_w, "r": row, "lsn": lsn, "ts": ts, "a": project(after)})
        if old_w and old_w != new_w:
            out.append({"k": kind, "w": old_w, "r": row, "lsn": lsn, "ts": ts, "a": None})
        if not out:
            self.stats.unroutable += 1
        return out

    def for_topic(self, topic: str) -> Callable[[Any, Any, int, Any], list[Record]]:
        rank = RANK[topic]
        reference = topic in REFERENCE_TOPICS

        def route(value: bytes | None, key: bytes | None, _ts: int, _h: Any) -> list[Record]:
            env, ts, lsn = self._envelope(value)
            routed: list[Record] = []
            if env is not None:
                if reference:
                    self.ref.add(topic, env, ts, lsn)
                else:
                    routed = self._rekey(topic, env, key, ts, lsn)
            ctx = message_context()
            self.gate.advance(ctx.topic, ctx.partition, ctx.offset, None if env is None else ts)
            if routed:
                self.gate.push(routed, rank)
            released = self.gate.release()
            self.stats.routed += len(released)
            return released

        return route


class Completion:
    """Stops the app once every input partition reached its end offset at start (and
    `expect` records were read, if given) and every released message was processed."""

    def __init__(
        self, ends: dict[tuple[str, int], int], stats: PeerStats, gate: Gate, expect: int | None
    ) -> None:
        self.inputs = {t for t, _ in ends}
        self.pending = {tp: end for tp, end in ends.items() if end > 0}
        self.stats = stats
        self.gate = gate
        self.expect = expect
        self.app: Application | None = None
        self.done = False

    def satisfied(self) -> bool:
        return (
            not self.pending
            and (self.expect is None or self.stats.records >= self.expect)
            and not self.gate.heap
            and self.stats.processed >= self.stats.routed
        )

    def on_processed(self, topic: str, partition: int, offset: int) -> None:
        stats = self.stats
        if topic in self.inputs:
            stats.records += 1
            if stats.first_t is None:
                stats.first_t = time.perf_counter()
            end = self.pending.get((topic, partition))
            if end is not None and offset + 1 >= end:
                del self.pending[(topic, partition)]
        stats.last_t = time.perf_counter()
        if not self.done and self.satisfied():
            self.done = True
            if self.app is not None:
                self.app.stop()


# -- wiring ---------------------------------------------------------------------
def end_offsets(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """High watermarks of every partition of `topics` now (raises if Kafka or a topic is
    missing)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"peer-probe-{uuid.uuid4().hex[:8]}"}
    )
    try:
        meta = consumer.list_topics(timeout=15)
        ends = {}
        for topic in topics:
            info = meta.topics.get(topic)
            if info is None or info.error is not None or not info.partitions:
                raise RuntimeError(f"input topic {topic} does not exist at {bootstrap}")
            for p in info.partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
                ends[(topic, p)] = high
        return ends
    finally:
        consumer.close()


def build(
    app: Application, prefix: str, router: Router, logic: WorkerLogic, partitions: int
) -> None:
    out_topic = app.topic(
        prefix + OUT_TOPIC,
        key_serializer="str",
        value_serializer="json",
        config=TopicConfig(num_partitions=partitions, replication_factor=1),
    )
    merged = None
    for topic in INPUT_TOPICS:
        sdf = app.dataframe(
            app.topic(prefix + topic, key_deserializer="bytes", value_deserializer="bytes")
        )
        sdf = sdf.apply(router.for_topic(topic), metadata=True, expand=True)
        merged = sdf if merged is None else merged.concat(sdf)
    assert merged is not None
    # one repartition topic keyed by worker_id (pssync's internal worker-keyed topic)
    by_worker = merged.group_by(lambda v: v["w"], name="w")
    by_worker = by_worker.apply(logic.step, stateful=True, expand=True)
    by_worker.to_topic(out_topic, key=lambda v: v["entity_id"])


def _drop_internal_topics(bootstrap: str, group: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [
        t
        for t in admin.list_topics(timeout=15).topics
        if t.startswith((f"repartition__{group}", f"changelog__{group}"))
    ]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            with contextlib.suppress(Exception):  # best effort: leftovers only cost disk
                future.result()


def run_peer(
    prefix: str,
    bootstrap: str,
    registry_url: str,
    timeout_s: float = 1800.0,
    expect: int | None = None,
    keep_internal_topics: bool = False,
) -> Record:
    """Run the Quix peer over what is on `prefix`'s input topics now; the result dict."""
    stats = PeerStats()
    ref = ReferenceData()
    if len(prefix) > MAX_PREFIX:
        raise ValueError(
            f"topic prefix {prefix!r} is longer than {MAX_PREFIX} characters: Quix Streams names "
            "its repartition and changelog topics after all six input topics, and Kafka allows "
            "249 characters"
        )
    ends = end_offsets(bootstrap, [prefix + t for t in INPUT_TOPICS])
    partitions = max(p for _, p in ends) + 1
    gate = Gate(ends)
    completion = Completion(ends, stats, gate, expect)
    group = f"pq{uuid.uuid4().hex[:8]}"
    state_dir = tempfile.mkdtemp(prefix="peer-quix-")
    timed_out = threading.Event()
    try:
        app = Application(
            broker_address=bootstrap,
            consumer_group=group,
            auto_offset_reset="earliest",
            state_dir=state_dir,
            loglevel="WARNING",
            consumer_poll_timeout=POLL_TIMEOUT_S,
            on_message_processed=completion.on_processed,
        )
        completion.app = app
        build(
            app,
            prefix,
            Router(AvroDecoder(registry_url), stats, ref, gate),
            WorkerLogic(stats, ref),
            partitions,
        )

        def give_up() -> None:
            timed_out.set()
            app.stop()

        timer = threading.Timer(timeout_s, give_up)
        timer.daemon = True
        started = time.perf_counter()
        if not completion.satisfied():
            timer.start()
            app.run()
            timer.cancel()
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
        if not keep_internal_topics:
            _drop_internal_topics(bootstrap, group)
    first = stats.first_t if stats.first_t is not None else started
    last = stats.last_t if stats.last_t is not None else first
    seconds = max(last - first, 1e-9)
    return {
        "records": stats.records,
        "seconds": round(seconds, 3),
        "rate": round(stats.records / seconds, 1) if stats.records else 0.0,
        "outputs": {k: stats.outputs.get(k, 0) for k in (POST, MISSING, DRIFT)},
        "reversed": stats.outputs.get(REVERSE, 0),
        "resolved": dict(stats.resolved),
        "open": {rule: sorted(ids) for rule, ids in stats.open.items()},
        "complete": completion.done and not timed_out.is_set(),
        "dlq": stats.dlq,
        "tombstones": stats.tombstones,
        "duplicates": stats.duplicates,
        "unroutable": stats.unroutable,
        "output_topic": prefix + OUT_TOPIC,
        "engine": "quixstreams",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers.quix_worker", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--topic-prefix", default=os.environ.get("PSSYNC_TOPIC_PREFIX", ""))
    parser.add_argument(
        "--bootstrap", default=os.environ.get("PSSYNC_KAFKA_BOOTSTRAP", "localhost:9092")
    )
    parser.add_argument(
        "--registry-url", default=os.environ.get("PSSYNC_SCHEMA_REGISTRY_URL", DEFAULT_REGISTRY)
    )
    parser.add_argument(
        "--expect",
        type=int,
        default=None,
        help="input records to read (default: what is there at start)",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up after S seconds")
    args = parser.parse_args(argv)
    result = run_peer(
        args.topic_prefix, args.bootstrap, args.registry_url, args.timeout, args.expect
    )
    print(json.dumps(result), flush=True)
    return 0 if result["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
