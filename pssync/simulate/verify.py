"""Detected versus injected: compares what the worker emitted with the simulator's truth.

Every expected finding (rule on entity) must have been emitted; every finding
emitted must have an injected cause (expected or allowed on that entity); the
POST_TIME_ENTRY and dead-letter counts must match the truth's summary (dead letters
counted once per original record, as a crash or rebalance may send one twice).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Finding = tuple[str, str, str]  # rule, entity_type, entity_id


@dataclass(slots=True)
class Verdict:
    expected: set[Finding] = field(default_factory=set)
    detected: set[Finding] = field(default_factory=set)
    missing: set[Finding] = field(default_factory=set)
    unexpected: set[Finding] = field(default_factory=set)
    posts: int = 0
    expected_posts: int = 0
    dlq: int = 0
    expected_dlq: int = 0
    injected: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return (
            not self.missing
            and not self.unexpected
            and self.posts == self.expected_posts
            and self.dlq == self.expected_dlq
        )

    def lines(self) -> list[str]:
        """A readable report, one line each."""
        by_rule_expected = Counter(rule for rule, _, _ in self.expected)
        by_rule_found = Counter(rule for rule, _, _ in self.expected - self.missing)
        out = [f"  {'rule':34} {'injected':>8} {'detected':>8}"]
        for rule in sorted(by_rule_expected):
            out.append(f"  {rule:34} {by_rule_expected[rule]:8d} {by_rule_found[rule]:8d}")
        out.append(f"  {'POST_TIME_ENTRY':34} {self.expected_posts:8d} {self.posts:8d}")
        out.append(f"  {'dead letters':34} {self.expected_dlq:8d} {self.dlq:8d}")
        for rule, etype, eid in sorted(self.missing):
            out.append(f"  missing: {rule} on {etype} {eid}")
        for rule, etype, eid in sorted(self.unexpected):
            out.append(f"  without an injected cause: {rule} on {etype} {eid}")
        return out


def load_truth(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def compare(truth: list[dict[str, Any]], outputs: Iterable[dict[str, Any]]) -> Verdict:
    """`outputs`: consumed records (`pssync consume` JSON) of sync.drift, sync.exceptions,
    sync.dlq and erp.cmd.time_entry."""
    verdict = Verdict()
    summary = truth[0].get("summary", {}) if truth else {}
    expected_counts = summary.get("expected", {})
    verdict.expected_posts = int(expected_counts.get("POST_TIME_ENTRY", 0))
    verdict.expected_dlq = int(expected_counts.get("dlq", 0))
    allowed: set[Finding] = set()
    for fault in truth[1:]:
        verdict.injected[fault["fault"]] += 1
        for rule in fault.get("also_allowed", []):
            allowed.add((rule, fault["entity_type"], fault["entity_id"]))
        if fault.get("expect_rule") and fault.get("kind") in ("alert", "exception"):
            verdict.expected.add((fault["expect_rule"], fault["entity_type"], fault["entity_id"]))
    dead: set[tuple[Any, ...]] = set()
    posted: set[str] = set()
    for record in outputs:
        value = record.get("value")
        topic = record.get("topic")
        if topic == "sync.dlq":
            # one per bad input: a dead letter re-sent after a crash or rebalance (at least
            # once) names the same original position
            position = (value or {}).get("original_topic"), (value or {}).get("offset")
            dead.add(
                (*position, (value or {}).get("partition"), len(dead) if None in position else 0)
            )
            verdict.dlq = len(dead)
        elif not value:
            continue
        elif topic in ("sync.drift", "sync.exceptions"):
            verdict.detected.add((value["rule"], value["entity_type"], value["entity_id"]))
        elif topic == "erp.cmd.time_entry" and value["type"] == "POST_TIME_ENTRY":
            posted.add(value["command_id"])  # a command re-sent after a crash counts once
            verdict.posts = len(posted)
    verdict.missing = verdict.expected - verdict.detected
    verdict.unexpected = verdict.detected - verdict.expected - allowed
    return verdict


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """An output record without its Kafka positions (the `partition` and `offset` in
    `causation`): what must be equal between two runs over the same source changes,
    which may sit at other offsets in another import (the simulator's undecodable
    records go through a producer of their own)."""
    out = dict(record)
    if isinstance(out.get("causation"), list):
        out["causation"] = [
            {k: v for k, v in ref.items() if k not in ("partition", "offset")}
            for ref in out["causation"]
        ]
    return out
