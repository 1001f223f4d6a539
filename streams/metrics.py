"""Prometheus metrics of one worker: what it processed, and what the partitions it owns hold.

Counters and histograms count what this process did since it started; sum them
across workers (`sum by (...)`). Gauges describe the partitions this process
owns right now (open findings, parked records, keys, lag), read at scrape time
from per-partition counts kept in state (`streams.flow`), so they move with a
partition on rebalance: sum them across workers too. Labels are bounded sets
(topics, rules, severities, command types, dependency kinds): never an entity id.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pssync.streams.outputs import Emit

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
SLA_BUCKETS = (60, 300, 900, 1800, 3600, 4 * 3600, 8 * 3600, 86400, 3 * 86400, 7 * 86400)


def _seconds_since_iso(value: str, now: float) -> float | None:
    try:
        started = dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return max(0.0, now - started)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.input_records = Counter(
            "pssync_input_records",
            "CDC records consumed, by topic and Debezium op "
            "(tombstone, or none when not decodable).",
            ["topic", "op"],
            registry=r,
        )
        self.commands = Counter(
            "pssync_commands", "ERP commands issued, by type.", ["type"], registry=r
        )
        self.alerts = Counter(
            "pssync_alerts",
            "Drift alert transitions emitted, by rule and state.",
            ["rule", "state"],
            registry=r,
        )
        self.exceptions = Counter(
            "pssync_exceptions",
            "Exception transitions emitted, by rule and state.",
            ["rule", "state"],
            registry=r,
        )
        self.dlq = Counter(
            "pssync_dlq_records",
            "Records dead-lettered to sync.dlq, by reason.",
            ["reason"],
            registry=r,
        )
        self.golden = Counter(
            "pssync_golden_records", "Golden records emitted, by topic.", ["topic"], registry=r
        )
        self.duplicates = Counter(
            "pssync_duplicate_changes",
            "Redelivered or out-of-date source changes skipped.",
            registry=r,
        )
        self.late = Counter(
            "pssync_late_changes",
            "Changes applied after their partition's stream time had passed them: a source "
            "idle longer than PSSYNC_SOURCE_IDLE_S, skewed clocks, or a redelivery.",
            registry=r,
        )
        self.timers = Counter(
            "pssync_timers_fired",
            "Event-time timers fired (grace periods, SLAs, dependency timeouts, retention).",
            registry=r,
        )
        self.sync_outcomes = Counter(
            "pssync_sync_outcomes",
            "Sync decisions: a command issued (synced), an exception "
            "opened for a human, or a record dead-lettered.",
            ["outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "pssync_end_to_end_latency_seconds",
            "Source commit (source.ts_ms) to the output being sent, by output kind.",
            ["output"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "pssync_batch_processing_seconds",
            "Time to process one batch, by agent.",
            ["agent"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.project_setup = Histogram(
            "pssync_project_setup_latency_seconds",
            "Business SLA: SOW signed to CREATE_PROJECT issued.",
            buckets=SLA_BUCKETS,
            registry=r,
        )
        self.time_to_post = Histogram(
            "pssync_time_to_post_seconds",
            "Business SLA: time entry approved to POST_TIME_ENTRY issued.",
            buckets=SLA_BUCKETS,
            registry=r,
        )

    def observe(self, emits: Iterable[Emit], now: float | None = None) -> None:
        now = time.time() if now is None else now
        for emit in emits:
            value = emit.value or {}
            if emit.kind == "command":
                kind = value.get("type", "?")
                self.commands.labels(kind).inc()
                self.sync_outcomes.labels("synced").inc()
                if emit.sla_start:
                    waited = _seconds_since_iso(emit.sla_start, now)
                    if waited is not None and kind == "POST_TIME_ENTRY":
                        self.time_to_post.observe(waited)
                    elif waited is not None and kind == "CREATE_PROJECT":
                        self.project_setup.observe(waited)
            elif emit.kind == "alert":
                self.alerts.labels(value.get("rule", "?"), value.get("state", "?")).inc()
            elif emit.kind == "exception":
                state = value.get("state", "?")
                self.exceptions.labels(value.get("rule", "?"), state).inc()
                if state == "OPEN":
                    self.sync_outcomes.labels("exception").inc()
            elif emit.kind == "golden":
                self.golden.labels(emit.topic).inc()
            elif emit.kind == "dlq":
                self.sync_outcomes.labels("dead_letter").inc()
            if emit.source_ts_ms:
                self.latency.labels(emit.kind).observe(max(0.0, now - emit.source_ts_ms / 1000))

    def add_collector(self, collector: Collector) -> None:
        self.registry.register(collector)


class StateCollector(Collector):
    """Gauges read at scrape time from the partitions this worker owns."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        alerts = GaugeMetricFamily(
            "pssync_open_alerts",
            "Open drift alerts in the partitions this worker owns.",
            labels=["rule", "severity"],
        )
        exceptions = GaugeMetricFamily(
            "pssync_open_exceptions",
            "Open exceptions in the partitions this worker owns.",
            labels=["rule"],
        )
        for name, count in sorted(snap["open"].items()):
            kind, rule, severity = name.split("|")
            if kind == "alert":
                alerts.add_metric([rule, severity], count)
            else:
                exceptions.add_metric([rule], count)
        parked = GaugeMetricFamily(
            "pssync_parked_records",
            "Records waiting for a dependency, by what is missing.",
            labels=["dependency"],
        )
        for dependency, count in sorted(snap["parked"].items()):
            parked.add_metric([dependency], count)
        keys = GaugeMetricFamily(
            "pssync_table_keys",
            "Keys in state tables (RocksDB estimate), owned partitions.",
            labels=["table"],
        )
        for table, count in sorted(snap["keys"].items()):
            keys.add_metric([table], count)
        lag = GaugeMetricFamily(
            "pssync_consumer_lag",
            "Records not yet processed, by topic, owned partitions.",
            labels=["topic"],
        )
        for topic, count in sorted(snap["lag"].items()):
            lag.add_metric([topic], count)
        assigned = GaugeMetricFamily(
            "pssync_assigned_partitions",
            "Partitions assigned to this worker.",
            value=snap["assigned"],
        )
        ready = GaugeMetricFamily(
            "pssync_ready",
            "1 once partitions are assigned and state is recovered.",
            value=1 if snap["ready"] else 0,
        )
        yield from (alerts, exceptions, parked, keys, lag, assigned, ready)
