"""Same input, same outputs, at any speed and in any arrival order (no Kafka).

A seeded firm with every fault kind goes through the in-process pipeline
(`streams.offline`: the agents' routing, event-time alignment and keyed flows on
real RocksDB stores) read in very different ways: a trickle in source order, a
backlog read topic by topic with the PSA first, and random interleavings of the
source partitions with random batch sizes. Each must give the same command IDs,
the same final alert and exception states and the same golden records, and
match the simulator's truth. The same check on the real stack, streamed versus
produced before the worker starts, is in `test_e2e_backlog.py`.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pssync.simulate import RULE_KINDS, Line, SimConfig, TruthLog, simulate
from pssync.simulate.verify import compare
from pssync.streams.changes import Change
from pssync.streams.flow import FlowConfig
from pssync.streams.offline import OfflinePipeline, Source, change_from_line, source_partition

# (seed, days, fault rates): the e2e simulator test's two firms, which between them hold
# every fault kind (late hires, the only out-of-order case, are rare: a firm of their own)
FIRMS = {
    "every-rule": (
        12,
        35,
        {kind: 0.35 for kind in RULE_KINDS} | {"DUPLICATE": 0.02, "UNDECODABLE": 0.02},
    ),
    "out-of-order": (3, 20, {"OUT_OF_ORDER": 1.0, "DUPLICATE": 0.05}),
}
CONFIG = FlowConfig(
    orphan_grace_ms=900_000, dependency_timeout_ms=900_000, project_setup_sla_ms=86_400_000
)
SOURCE_PARTITIONS = 2


def firm(name: str) -> tuple[list[Change], list[dict[str, Any]]]:
    """The changes of a seeded firm in source order (what decodes), and the truth."""
    seed, days, rates = FIRMS[name]
    truth = TruthLog()
    changes: list[Change] = []
    for group in simulate(SimConfig(seed=seed, workers=30, customers=6, fault_rates=rates), days):
        for item in group.items:
            if isinstance(item, Line):
                changes.append(change_from_line(json.loads(item.text), len(changes)))
                truth.count(item.topic, item.ts_ms)
        truth.add(group.faults, group.posts, group.approved)
    records = [json.loads(line) for line in truth.lines()]
    return changes, records


def by_source(changes: Sequence[Change]) -> dict[Source, list[Change]]:
    out: dict[Source, list[Change]] = defaultdict(list)
    for change in changes:
        out[(change.topic, source_partition(change, SOURCE_PARTITIONS))].append(change)
    return out


def trickle(changes: Sequence[Change]) -> Iterator[tuple[Source, list[Change]]]:
    for change in changes:
        yield (change.topic, source_partition(change, SOURCE_PARTITIONS)), [change]


def topic_by_topic(changes: Sequence[Change]) -> Iterator[tuple[Source, list[Change]]]:
    """A backlog read one topic after another, the PSA's time entries first."""
    queues = by_source(changes)
    for source in sorted(queues, reverse=True):
        queue = queues[source]
        for i in range(0, len(queue), 500):
            yield source, queue[i : i + 500]


def shuffled(changes: Sequence[Change], seed: int) -> Iterator[tuple[Source, list[Change]]]:
    """Source partitions read in a random interleaving, in batches of random sizes."""
    rng = random.Random(seed)
    queues = {s: list(q) for s, q in by_source(changes).items()}
    while queues:
        source = rng.choice(sorted(queues))
        size = rng.choice((1, 7, 50, 300, 2000))
        batch, queues[source] = queues[source][:size], queues[source][size:]
        if not queues[source]:
            del queues[source]
        yield source, batch


def outcome(pipeline: OfflinePipeline) -> dict[str, Any]:
    commands: Counter[str] = Counter()
    findings: dict[str, Any] = {}
    golden: dict[tuple[str, str], Any] = {}
    for emit in pipeline.emits:
        value = emit.value
        if emit.kind == "command" and value is not None:
            commands[value["command_id"]] += 1
        elif emit.kind in ("alert", "exception") and value is not None:
            findings[emit.key] = value  # the whole record: causation, instants, facts
        elif emit.kind == "golden":
            golden[(emit.topic, str(emit.key))] = value
    assert max(commands.values()) == 1, "a command was issued twice"
    return {"commands": set(commands), "findings": findings, "golden": golden}


def run(
    changes: Sequence[Change],
    batches: Iterator[Any],
    path: Path,
    every: int = 1,
    cap: int = 0,
    timer_cap: int = 0,
) -> Any:
    """A trickle is produced as it is read; any other schedule reads a backlog. `cap`
    limits the changes a keyed batch applies, `timer_cap` the timers it fires (the rest
    wait for the next batch)."""
    produced = "just-in-time" if every == 1 else "upfront"
    config = replace(CONFIG, max_release=cap) if cap else CONFIG
    config = replace(config, max_timers=timer_cap) if timer_cap else config
    pipeline = OfflinePipeline(path, config, partitions=3, source_partitions=SOURCE_PARTITIONS)
    try:
        pipeline.run(batches, deliver_every=every, produced=produced)
        pipeline.finish(idle_for_ms=2 * 86_400_000)
        outputs = [{"topic": e.topic, "key": e.key, "value": e.value} for e in pipeline.emits]
        return outcome(pipeline), outputs, pipeline.counters
    finally:
        pipeline.close()


@pytest.fixture(scope="module", params=sorted(FIRMS))
def the_firm(request: pytest.FixtureRequest) -> tuple[list[Change], list[dict[str, Any]]]:
    return firm(request.param)


def test_every_fault_kind_is_in_the_firms() -> None:
    injected = {r["fault"] for name in FIRMS for r in firm(name)[1][1:]}
    assert set(RULE_KINDS) | {"DUPLICATE", "OUT_OF_ORDER"} <= injected


def test_a_trickle_matches_the_simulators_truth(
    the_firm: tuple[list[Change], list[dict[str, Any]]], tmp_path: Path
) -> None:
    changes, truth = the_firm
    _, outputs, counters = run(changes, trickle(changes), tmp_path / "trickle")
    verdict = compare(truth, outputs)
    report = "\n".join(verdict.lines())
    assert verdict.missing == set(), report
    assert verdict.unexpected == set(), report
    assert verdict.posts == verdict.expected_posts > 0, report
    assert sum(r.late for r in counters.results) == 0


@pytest.mark.parametrize(
    "schedule",
    [
        "topic-by-topic",
        "shuffled-1",
        "shuffled-2",
        "topic-by-topic-capped",
        "topic-by-topic-timers-capped",
    ],
)
def test_any_reading_order_and_batching_gives_the_same_outputs(
    the_firm: tuple[list[Change], list[dict[str, Any]]], tmp_path: Path, schedule: str
) -> None:
    changes, truth = the_firm
    expected, _, _ = run(changes, trickle(changes), tmp_path / "trickle")
    if schedule.startswith("topic-by-topic"):
        cap = 37 if schedule == "topic-by-topic-capped" else 0
        timer_cap = 3 if schedule == "topic-by-topic-timers-capped" else 0
        got, outputs, counters = run(
            changes, topic_by_topic(changes), tmp_path / schedule, 5, cap, timer_cap
        )
    else:
        seed = int(schedule.rsplit("-", 1)[1])
        got, outputs, counters = run(changes, shuffled(changes, seed), tmp_path / schedule, 3)
    assert got["commands"] == expected["commands"]
    assert got["findings"] == expected["findings"]
    assert got["golden"] == expected["golden"]
    verdict = compare(truth, outputs)
    assert verdict.missing == verdict.unexpected == set(), "\n".join(verdict.lines())
    assert sum(r.late for r in counters.results) == 0
