"""The demo's feed: the simulator (`pssync.simulate`) in-process, and what it injected.

`DemoFeed` streams a seeded firm's HR, ERP, CRM and PSA changes with the
simulator's own functions (`run`, `paced`, `send_items`), with a fault mix
that makes every rule fire within a short demo, and keeps the truth (what was
injected, and what the worker should make of it) in memory as it goes. Its
`report` compares the truth with what the worker emitted (`verify.compare`):
detected versus injected.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any, Final

from pssync.avro.codec import Codec
from pssync.settings import Settings
from pssync.simulate import cli as simulate_cli
from pssync.simulate.cli import Progress, config_from, paced, send_items
from pssync.simulate.feed import Group
from pssync.simulate.model import DEFAULT_START, Firm, SimConfig
from pssync.simulate.story import run
from pssync.simulate.truth import KINDS, TRANSPORT_KINDS, TruthLog, iso
from pssync.simulate.verify import Finding, Verdict, compare

Record = dict[str, Any]

# every rule's fault often enough to occur in 35 simulated days (the default seed, 12,
# injects every kind), and a little transport noise: redeliveries and garbage bytes
RULE_FAULT_RATE: Final = 0.35
TRANSPORT_FAULT_RATES: Final = {"DUPLICATE": 0.02, "UNDECODABLE": 0.02}
CUSTOMERS: Final = 6
# rules that fire on the worker's own clock, and the setting that times each
TIMED_RULES: Final = {
    "ERP_EMPLOYEE_WITHOUT_HR_WORKER": "orphan_grace_s",
    "SOW_SIGNED_WITHOUT_PROJECT": "project_setup_sla_s",
    "DEPENDENCY_TIMEOUT": "dependency_timeout_s",
}
VERIFIED: Final = ("sync.drift", "sync.exceptions", "sync.dlq", "erp.cmd.time_entry")
SETTLE_S: Final = 5.0  # beyond alignment and a timer: batches, ticks, the tail


def demo_faults() -> list[str]:
    """The demo's mix as `--fault KIND=P` items (every kind not named: 0)."""
    rules = [f"{k}={RULE_FAULT_RATE}" for k in KINDS if k not in TRANSPORT_KINDS]
    return rules + [f"{k}={p}" for k, p in TRANSPORT_FAULT_RATES.items()]


def sim_config(args: argparse.Namespace) -> SimConfig:
    """The simulator's config from the demo's flags, validated by the simulator."""
    sim_args = argparse.Namespace(
        seed=args.seed,
        start=DEFAULT_START.isoformat(),
        workers=args.workers,
        customers=CUSTOMERS,
        rate=args.rate,
        fault=demo_faults(),
        fault_rate=0.0,
    )
    if args.days is not None and args.days < 1:
        raise ValueError(f"--days {args.days}: expected at least 1")
    return config_from(sim_args)


class Stopper(simulate_cli.Stopper):
    """First ^C asks for a clean stop (the feed after a whole event); a second one
    interrupts the wind-down."""

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\n[demo] ^C: stopping (press ^C again to skip the wind-down)", flush=True)


class DemoFeed:
    """The simulated firm streamed to Kafka; the truth of what was sent, kept in memory."""

    def __init__(self, config: SimConfig, days: int | None, rate: float, stopper: Stopper) -> None:
        self.config, self.days, self.rate, self.stopper = config, days, rate, stopper
        self.firm = Firm(config)
        self.truth = TruthLog()
        self.progress = Progress(self.truth, 0)  # 0: quiet; the demo's summary says it
        self.sent_at: dict[str, float] = {}  # fault id -> when its changes were sent
        self.started: float | None = None
        self.ended: float | None = None
        self.ran_out = False  # the simulated days ran out (not --duration or ^C)
        self.stopped = False  # `between` said stop
        self.problems = 0

    def stream(
        self,
        settings: Settings,
        codec: Codec,
        duration_s: float | None,
        between: Callable[[], bool],
    ) -> None:
        """Send the changes through the produce path until the days run out, `duration_s`
        passes or ^C; `between` runs before each business event and stops the feed if
        it returns False (the truth then holds every event sent: a consistent moment)."""
        self.started = time.monotonic()

        def groups() -> Iterator[Group]:
            for group in run(self.firm, self.days):
                self.stamp()
                if not between():
                    self.stopped = True
                    return
                yield group

        items = paced(groups(), self.rate, duration_s, self.stopper, self.truth, self.progress)
        try:
            self.problems += send_items(items, settings, codec)
        finally:
            self.stamp()
            self.ended = time.monotonic()
            self.ran_out = (
                not self.stopped
                and not self.stopper.requested
                and (duration_s is None or self.ended - self.started < duration_s)
            )

    def stamp(self) -> None:
        """Note when each newly recorded fault's changes went out."""
        if len(self.sent_at) < len(self.truth.faults):
            now = time.monotonic()
            for fault in self.truth.faults[len(self.sent_at) :]:
                self.sent_at.setdefault(fault.fault_id, now)

    # -- what it says -------------------------------------------------------
    def line(self) -> str:
        if self.started is None:
            return "feed: not started"
        if self.ended is None:
            state = "streaming"
        elif self.ran_out:
            state = f"done: the {self.days} simulated days are sent"
        else:
            state = "stopped"
        t = self.truth
        rate = t.changes / max((self.ended or time.monotonic()) - self.started, 1e-9)
        sim = f", simulated clock at {iso(t.last_ms)}" if t.last_ms is not None else ""
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(t.by_kind().items())) or "none yet"
        return f"feed ({state}): {t.changes} changes ({rate:.0f}/s{sim}); faults: {kinds}"

    def intro(self, settings: Settings) -> list[str]:
        c = self.config
        days = f"{self.days} simulated days" if self.days else "simulated days without end"
        rate = f"{self.rate:g} changes/s" if self.rate else "as fast as possible"
        timers = ", ".join(f"{r} after {getattr(settings, s):g}s" for r, s in TIMED_RULES.items())
        return [
            f"the simulated firm: seed {c.seed}, {c.workers} workers, {c.customers} customers, "
            f"from {iso(int(c.start.timestamp() * 1000))}; {days} at {rate}",
            f"faults injected: every rule's at {RULE_FAULT_RATE:g} per eligible event, "
            + ", ".join(f"{k} {p:g}" for k, p in TRANSPORT_FAULT_RATES.items())
            + " per change; the truth is kept in memory",
            f"timed rules on event time (simulated while streaming): {timers}",
        ]

    def truth_records(self) -> list[Record]:
        """The truth as `verify.load_truth` reads it from a truth file."""
        records: list[Record] = [{"summary": self.truth.summary()}]
        return records + [r for fault in self.truth.faults for r in fault.records()]

    def verdict(self, outputs: Sequence[Record]) -> Verdict:
        return compare(self.truth_records(), outputs)

    def due_at(self, rule: str, fault_id: str, settings: Settings) -> float:
        """When a finding of `rule` for this fault should be out, at the latest."""
        timer = float(getattr(settings, TIMED_RULES[rule])) if rule in TIMED_RULES else 0.0
        sent = self.sent_at.get(fault_id, time.monotonic())
        return sent + settings.source_idle_s + 2 * settings.tick_interval_s + timer + SETTLE_S

    def report(self, outputs: Sequence[Record], settings: Settings, final: bool) -> list[str]:
        """Detected versus injected; a missing finding not due yet is `pending`."""
        verdict = self.verdict(outputs)
        now = time.monotonic()
        faults = {
            (r["expect_rule"], r["entity_type"], r["entity_id"]): r["fault_id"]
            for r in self.truth_records()[1:]
            if r.get("expect_rule")
        }
        pending: list[tuple[Finding, float]] = []
        missing: list[tuple[Finding, float]] = []
        for finding in sorted(verdict.missing):
            due = self.due_at(finding[0], faults.get(finding, ""), settings)
            (pending if due > now else missing).append((finding, due))
        title = "detected versus injected" + ("" if final else ", so far")
        out = [f"{title}: the simulator's truth against what the worker emitted"]
        table = [line for line in verdict.lines() if not line.startswith("  missing: ")]
        out += table
        if pending and not final:  # waiting for alignment, or a timer running: one line
            rules = Counter(rule for (rule, _, _), _ in pending)
            shown = ", ".join(f"{r} {n}" for r, n in sorted(rules.items()))
            out.append(f"  not due yet (alignment, timers): {len(pending)}: {shown}")
        for (rule, etype, eid), due in pending if final else []:
            out.append(f"  not due yet: {rule} on {etype} {eid} (by ~{due - now:.0f}s from now)")
        for (rule, etype, eid), _ in missing:
            out.append(f"  missing: {rule} on {etype} {eid}")
        in_flight = self.ended is None or now < self.ended + self._longest_wait(settings)
        counts_off = verdict.posts != verdict.expected_posts or verdict.dlq != verdict.expected_dlq
        if verdict.ok:
            out.append("  every injected fault detected, nothing without a cause, counts match")
        elif not missing and not verdict.unexpected and (pending or (counts_off and in_flight)):
            out.append("  nothing wrong so far: the rest is still on its way")
        else:
            out.append(
                f"  {len(missing)} missing, {len(verdict.unexpected)} without an injected cause"
                + (", counts differ" if counts_off else "")
            )
        return out

    def _longest_wait(self, settings: Settings) -> float:
        timers = max(float(getattr(settings, s)) for s in TIMED_RULES.values())
        return settings.source_idle_s + 2 * settings.tick_interval_s + timers + SETTLE_S
