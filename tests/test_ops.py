"""Operations files: the Prometheus rules pass promtool, and the dashboard queries only
metrics the worker really exports (or recording rules defined next to them)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from pssync.streams.metrics import Metrics, StateCollector

OPS = Path(__file__).parent.parent / "ops"
RULES = OPS / "prometheus" / "rules.yml"
DASHBOARD = OPS / "grafana" / "pssync-dashboard.json"
PROMQL_WORDS = {
    "sum",
    "by",
    "rate",
    "increase",
    "histogram_quantile",
    "or",
    "vector",
    "le",
    "deriv",
    "and",
    "offset",
    "without",
    "max",
    "min",
    "avg",
}


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is needed (Debian package prometheus; ./run test installs it)"
    return path


def test_rules_pass_promtool_check() -> None:
    proc = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_rules_unit_tests_pass() -> None:
    proc = subprocess.run(
        [promtool(), "test", "rules", "rules_test.yml"],
        capture_output=True,
        text=True,
        cwd=RULES.parent,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def exported_names() -> set[str]:
    metrics = Metrics()
    metrics.add_collector(
        StateCollector(
            lambda: {"open": {}, "parked": {}, "keys": {}, "lag": {}, "assigned": 0, "ready": False}
        )
    )
    names = set()
    for family in metrics.registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_count", "_sum")}
        else:
            names.add(family.name)
    return names


def recorded_names() -> set[str]:
    rules = yaml.safe_load(RULES.read_text())
    return {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def metric_names(expr: str) -> set[str]:
    unquoted = re.sub(r'"[^"]*"', "", expr)
    return {w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", unquoted) if w.startswith("pssync")}


def test_every_dashboard_query_names_an_exported_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    known = exported_names() | recorded_names()
    seen = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, f"{panel['title']}: no pssync metric in {target['expr']}"
            assert names <= known, f"{panel['title']}: unknown {names - known}"
            seen |= names
    wanted = {
        "pssync_open_alerts",
        "pssync_open_exceptions",
        "pssync_dlq_records_total",
        "pssync_consumer_lag",
        "pssync_end_to_end_latency_seconds_bucket",
        "pssync:time_to_post_seconds:p95",
        "pssync:project_setup_latency_seconds:p95",
        "pssync:sync_success_ratio:rate15m",
    }
    assert wanted <= seen


def test_rules_use_only_exported_metrics() -> None:
    known = exported_names() | recorded_names()
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert metric_names(rule["expr"]) <= known, rule


def test_metric_names_follow_prometheus_conventions() -> None:
    for name in exported_names():
        assert name.startswith("pssync_")
        assert re.fullmatch(r"[a-z_]+", name), name
    metrics = Metrics()
    for family in metrics.registry.collect():
        for label in getattr(family, "samples", []):
            assert "id" not in label.labels
    labels = {
        lbl
        for m in (
            metrics.commands,
            metrics.alerts,
            metrics.exceptions,
            metrics.input_records,
            metrics.dlq,
            metrics.latency,
        )
        for lbl in m._labelnames
    }
    assert labels <= {"type", "rule", "state", "topic", "op", "reason", "output"}
