"""One run of the chaos bench: a seeded firm streamed into fresh topics, two workers, and
(for the chaos run) the faults of a seeded schedule injected while it streams.

A run creates its topics (its own prefix and group), an ERP inbox database with the
JDBC sink writing into it, and two worker slots; starts the simulator; executes the
schedule (SIGKILLs, with or without the local state; one broker restart; one registry
restart; the sink stopped for a while); waits until every input, the keyed topics and
the sink are drained and the last timers have fired; and reads back every output, the
inbox rows, the group's lag and memory over time, and the simulator's truth.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.backlog import env_of, outcome
from bench.chaos.stack import ChaosStack, Inbox, say
from bench.chaos.workers import KEYED, Kill, Sample, Sampler, WorkerSlot
from pssync.avro.contract import CDC_TOPICS
from pssync.connectors.kafka import wait_drained
from pssync.settings import Settings
from pssync.simulate.verify import Verdict, compare, load_truth


@dataclass(frozen=True)
class Firm:
    seed: int = 7
    workers: int = 1000
    customers: int = 100
    count: int = 108_000


@dataclass(frozen=True)
class Timers:
    """In simulated seconds, as bench.backlog: short enough to wait for at the end."""

    orphan_grace_s: float = 60
    project_setup_sla_s: float = 60
    dependency_timeout_s: float = 60
    wait_s: float = 65  # wall seconds after draining, for the last timers to come due


@dataclass
class Event:
    at_s: float  # planned, since the stream started
    kind: str  # kill, broker, registry, sink-stop, sink-resume
    slot: int = 0
    wipe: bool = False
    done_at_s: float = float("nan")
    took_s: float = float("nan")


def schedule(
    seed: int, stream_s: float, sink_outage_s: float, kill_every_s: tuple[float, float]
) -> list[Event]:
    """The faults, from `seed`: SIGKILLs at random intervals over the stream (each worker
    at least once; a third of them, and at least one, with the local state deleted), the
    sink stopped from 15% of the stream for `sink_outage_s`, the broker restarted at 45%
    and the registry at 65%."""
    rng = random.Random(seed)
    events = [
        Event(0.15 * stream_s, "sink-stop"),
        Event(0.15 * stream_s + sink_outage_s, "sink-resume"),
        Event(0.45 * stream_s, "broker"),
        Event(0.65 * stream_s, "registry"),
    ]
    at = rng.uniform(*kill_every_s) / 2
    kills: list[Event] = []
    while at < 0.9 * stream_s:
        kills.append(Event(at, "kill", slot=rng.randrange(2), wipe=rng.random() < 1 / 3))
        at += rng.uniform(*kill_every_s)
    if kills and not any(k.wipe for k in kills):
        kills[len(kills) // 2].wipe = True
    if len(kills) > 1 and len({k.slot for k in kills}) == 1:
        kills[1].slot = 1 - kills[1].slot  # both members die at least once
    return sorted(events + kills, key=lambda e: e.at_s)


@dataclass
class RunResult:
    name: str
    settings: Settings
    seconds: float  # first change offered -> everything drained (before the timer wait)
    records: list[dict[str, Any]]
    commands: set[str]
    sent: int
    findings: dict[str, Any]
    golden: dict[tuple[str, str], Any]
    verdict: Verdict
    inbox: dict[str, tuple[int, int]]
    sink_dead_letters: int  # commands the ERP sink skipped into erp.cmd.dlq
    events: list[Event] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    generations: set[int] = field(default_factory=set)  # the group's, as workers joined
    deaths: list[tuple[int, float, int]] = field(default_factory=list)  # slot, when, exit
    samples: list[Sample] = field(default_factory=list)
    per_topic: Counter[str] = field(default_factory=Counter)
    offered_s: float = float("nan")  # first change offered -> last change sent


class Run:
    def __init__(
        self,
        name: str,
        stack: ChaosStack,
        root: Path,
        firm: Firm,
        timers: Timers,
        rate: float,
        events: list[Event],
        lines: Path | None = None,
        guarantee: str = "at_least_once",
    ) -> None:
        tag = f"{name}-{uuid.uuid4().hex[:6]}"
        self.name, self.firm, self.timers, self.rate = name, firm, timers, rate
        self.events = events
        self.root = root / tag
        self.root.mkdir(parents=True)
        self.settings = Settings.from_env(
            {},
            kafka_bootstrap=stack.bootstrap,
            schema_registry_url=stack.registry_url,
            topic_prefix=f"chaos.{tag}.",
            app_id=f"pssync-chaos-{tag}",
            data_dir=self.root,
            orphan_grace_s=timers.orphan_grace_s,
            project_setup_sla_s=timers.project_setup_sla_s,
            dependency_timeout_s=timers.dependency_timeout_s,
            processing_guarantee=guarantee,
        )
        self.env = env_of(self.settings)
        self.stack = stack
        self.slots = [WorkerSlot(self.settings, i, self.root) for i in range(2)]
        self.kills: list[Kill] = []
        self.offered_s = float("nan")
        self.truth = self.root / "truth.jsonl"
        self.lines = lines  # a firm written beforehand: sent with `pssync produce` at once

    def generate(self) -> None:
        """The firm as lines (without undecodable records, which `produce` rejects) and
        its truth, before anything runs: what `lines=` takes."""
        assert self.lines is not None
        cmd = [*self.firm_args(), "--rate", "0", "--fault", "UNDECODABLE=0"]
        cmd += ["--output", str(self.lines), "--truth", str(self.truth)]
        with open(self.root / "simulate.log", "wb") as log:
            subprocess.run(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, check=True)

    def firm_args(self) -> list[str]:
        f = self.firm
        cmd = [sys.executable, "-m", "pssync", "simulate", "--seed", str(f.seed)]
        cmd += ["--workers", str(f.workers), "--customers", str(f.customers)]
        return [*cmd, "--count", str(f.count), "--progress", "30"]

    def simulate(self) -> subprocess.Popen[bytes]:
        if self.lines is not None:
            cmd = [sys.executable, "-m", "pssync", "produce", "--file", str(self.lines)]
        else:
            cmd = [*self.firm_args(), "--rate", str(self.rate), "--truth", str(self.truth)]
        with open(self.root / "simulate.log", "wb") as log:
            return subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def watch(self) -> None:
        """A worker that exited by itself is a finding: record it and start it again."""
        for slot in self.slots:
            if slot.revive():
                say(f"{self.name}: worker {slot.index} DIED by itself (see {slot.log}); restarted")

    def execute(
        self, event: Event, inbox: Inbox, started: float, streaming: Callable[[], bool]
    ) -> None:
        say(f"{self.name}: t={time.monotonic() - started:5.0f}s {event.kind} {event.slot}")
        began = time.monotonic()
        if event.kind == "kill":
            kill = Kill(began - started, event.slot, event.wipe)
            self.kills.append(self.slots[event.slot].crash_and_restart(kill, streaming))
        elif event.kind == "broker":
            self.stack.restart_broker()
        elif event.kind == "registry":
            self.stack.restart_registry()
        elif event.kind == "sink-stop":
            inbox.stop()
        elif event.kind == "sink-resume":
            inbox.resume()
        event.done_at_s = time.monotonic() - started
        event.took_s = time.monotonic() - began

    def start_workers(self) -> None:
        for slot in self.slots:
            slot.start()
        for slot in self.slots:
            slot.wait_ready()

    def stream(self, inbox: Inbox, sampler: Sampler) -> float:
        """Workers first, then the firm offered at the run's rate while the schedule's
        faults are injected; returns when the stream started."""
        self.start_workers()
        sampler.start()
        started = time.monotonic()
        sim = self.simulate()
        for event in self.events:
            while time.monotonic() - started < event.at_s:
                if sim.poll() not in (None, 0):
                    raise RuntimeError(f"simulate failed: {self.root / 'simulate.log'}")
                self.watch()
                time.sleep(0.2)
            self.execute(event, inbox, started, lambda: sim.poll() is None)
        while sim.poll() is None:
            self.watch()
            time.sleep(0.2)
        if sim.wait() != 0:
            raise RuntimeError(f"simulate failed: see {self.root / 'simulate.log'}")
        self.offered_s = time.monotonic() - started
        say(f"{self.name}: stream done after {self.offered_s:.0f}s; draining")
        return started

    def preload(self, sampler: Sampler) -> float:
        """The burst: the whole firm in Kafka before the workers start (arriving faster
        than any multiple of a sustained rate); returns when the workers started."""
        produced = time.monotonic()
        if self.simulate().wait() != 0:
            raise RuntimeError(f"produce failed: see {self.root / 'simulate.log'}")
        self.offered_s = time.monotonic() - produced
        say(f"{self.name}: {self.firm.count} changes in Kafka ({self.offered_s:.0f}s); workers")
        sampler.start()
        started = time.monotonic()
        self.start_workers()
        return started

    def drain(self, topics: list[str]) -> None:
        """Until the group has processed everything (workers revived meanwhile)."""
        done = threading.Event()
        errors: list[BaseException] = []

        def wait() -> None:
            try:
                wait_drained(self.settings, topics, timeout_s=3600)
            except BaseException as exc:  # re-raised in the caller
                errors.append(exc)
            finally:
                done.set()

        threading.Thread(target=wait, name="drain", daemon=True).start()
        while not done.wait(0.5):
            self.watch()
        if errors:
            raise errors[0]

    def go(self, sample_s: float = 1.0) -> RunResult:
        subprocess.run(
            [sys.executable, "-m", "pssync", "topics", "create"],
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        inbox = self.stack.inbox_database(self.settings)
        sampler = Sampler(self.settings, self.slots, sample_s)
        try:
            inbox.apply(self.env)
            started = self.preload(sampler) if self.lines else self.stream(inbox, sampler)
            topics = [self.settings.topic(t) for t in CDC_TOPICS]
            topics += [self.settings.internal_topic(t) for t in KEYED]
            self.drain(topics)
            seconds = time.monotonic() - started
            time.sleep(self.timers.wait_s)
            self.drain(topics)
            inbox.wait_drained()
            result = outcome(self.settings)
            rows = inbox.rows()
            sink_dead = inbox.dead_letters()
        finally:
            sampler.stop()
            stoppers = [threading.Thread(target=s.stop) for s in self.slots]
            for t in stoppers:
                t.start()
            for t in stoppers:
                t.join()
            inbox.drop()
        verdict = compare(load_truth(self.truth), result["records"])
        say(
            f"{self.name}: {len(result['commands'])} commands ({result['sent']} sent), "
            f"{len(rows)} in the inbox, truth ok={verdict.ok}, {seconds:.0f}s"
        )
        return RunResult(
            name=self.name,
            settings=self.settings,
            seconds=seconds,
            records=result["records"],
            commands=result["commands"],
            sent=result["sent"],
            findings=result["findings"],
            golden=result["golden"],
            verdict=verdict,
            inbox=rows,
            sink_dead_letters=sink_dead,
            events=self.events,
            kills=self.kills,
            samples=sampler.samples,
            per_topic=Counter(r["topic"] for r in result["records"]),
            offered_s=self.offered_s,
            generations=set().union(*(s.generations() for s in self.slots)),
            deaths=[(s.index, at, code) for s in self.slots for at, code in s.deaths],
        )
