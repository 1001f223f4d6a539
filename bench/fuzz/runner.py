"""Running cases: each through decode, routing and the keyed flows (or `parse_line`), bounded
in time, with what came out counted as outcomes."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from bench.fuzz.cases import Case, Cases
from bench.fuzz.wire import make_decoder
from pssync.connectors.jsonl import Forms, LineError, parse_line
from pssync.streams.decode import Decoded, Inbound
from pssync.streams.flow import FlowConfig
from pssync.streams.offline import OfflinePipeline

# -- running cases ----------------------------------------------------------------------------


class Hang(BaseException):
    """A case ran past its time bound. Not an `Exception`: the keyed flows dead-letter a
    change or timer whose processing raises one and carry on, which would swallow the
    bound of a case that spins in their release loop."""


@dataclass(slots=True)
class Outcomes:
    """What a run saw: counts per kind and outcome, failures, the slowest case."""

    cases: int = 0
    by_kind: Counter[tuple[str, str]] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    crashes: list[tuple[str, str, dict[str, Any] | str]] = field(default_factory=list)
    hangs: list[tuple[str, dict[str, Any] | str]] = field(default_factory=list)
    wrong: list[tuple[str, str, dict[str, Any] | str]] = field(default_factory=list)
    flow_failures: Counter[str] = field(default_factory=Counter)
    routed: int = 0
    emits: int = 0
    slowest: tuple[float, str, str] = (0.0, "", "")

    def note_time(self, seconds: float, kind: str, detail: str) -> None:
        if seconds > self.slowest[0]:
            self.slowest = (seconds, kind, detail)

    @property
    def ok(self) -> bool:
        return not (self.crashes or self.hangs or self.wrong or self.flow_failures)


def reason_of(letter_value: dict[str, Any]) -> str:
    return f"{letter_value['stage']}:{letter_value['error_class']}"


class Runner:
    """Runs cases through decode -> validate -> route -> keyed flows, and produce lines
    through parse -> encode -> decode, checking every outcome."""

    def __init__(self, root: Path, seed: int, case_timeout_s: float = 10.0, huge: int = 1 << 20):
        self.decoder = make_decoder()
        self.cases = Cases(self.decoder, seed, huge)
        config = FlowConfig(orphan_grace_ms=900_000, dependency_timeout_ms=900_000)
        self.pipeline = OfflinePipeline(root, config)
        self.case_timeout_s = case_timeout_s
        self.out = Outcomes()
        self.offset = 0
        self.pending = 0
        self.forms = Forms()

    def close(self) -> None:
        self.pipeline.close()

    # time bound: a SIGALRM interrupts a case that runs too long (main thread only)
    def _bounded(self, fn: Callable[[], Any], seconds: float | None = None) -> Any:
        bound = self.case_timeout_s if seconds is None else seconds

        def expired(signum: int, frame: FrameType | None) -> None:
            raise Hang(f"over {bound}s")

        previous = signal.signal(signal.SIGALRM, expired)
        signal.setitimer(signal.ITIMER_REAL, bound)
        try:
            return fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    def run_ingest(self, case: Case) -> None:
        """The hostile record, then a good one of the same topic, as one batch."""
        self.out.cases += 1
        _, good_value, gk, gv = self.cases.good(case.topic)
        good = Case(
            "good", case.topic, gk, gv, "change", self.cases.expected_after(case.topic, good_value)
        )
        records = [self._inbound(case), self._inbound(good)]
        started = time.perf_counter()
        try:
            decoded = self._bounded(lambda: asyncio.run(self.decoder.decode(records)))
            self._check(case, good, records, decoded)
            self._bounded(lambda: self._route(case.topic, decoded))
        except Hang as exc:
            self.out.hangs.append(
                (case.kind, case.to_json() if len(case.value or b"") < 4096 else str(exc))
            )
            self.out.by_kind[(case.kind, "hang")] += 1
            self.drop_batch()
        except Exception as exc:
            self.out.crashes.append((case.kind, f"{type(exc).__name__}: {exc}"[:500], _small(case)))
            self.out.by_kind[(case.kind, "crash")] += 1
        self.out.note_time(time.perf_counter() - started, case.kind, json.dumps(_small(case))[:300])

    def drop_batch(self) -> None:
        """After a hang in the keyed flows: drop the batch that hung (the partition that
        hung committed none of it) and what the flows keep in memory, so that the run goes
        on from the last committed state rather than hanging on that batch at every case.
        (A hang there is reported at the case whose batch was delivered, not necessarily
        the one that caused it: the cases of a batch are the 25 before it.)"""
        self.pipeline.inbox.clear()
        self.pending = 0
        for flow in self.pipeline.flows.values():
            for partition in range(self.pipeline.partitions):
                flow.forget(partition)

    def finish(self, idle_for_ms: int) -> None:
        """The end of a run: what is pending is delivered, and stream time runs on until
        every timer due has fired, bounded in time (that of a run's worth of cases)."""

        def run_out() -> None:
            self.deliver()
            self.pipeline.finish(idle_for_ms)

        try:
            self._bounded(run_out, 60 * self.case_timeout_s)
        except Hang as exc:
            self.out.hangs.append(("finish", str(exc)))
            self.drop_batch()
        self.deliver()

    def _inbound(self, case: Case) -> Inbound:
        self.offset += 1
        headers = (("correlation_id", f"fuzz-{self.offset}".encode()),)
        return Inbound(case.topic, 0, self.offset, case.key, case.value, headers)

    def _check(self, case: Case, good: Case, records: list[Inbound], decoded: Decoded) -> None:
        seen: dict[int, list[str]] = {r.offset: [] for r in records}
        changes = {}
        for change in decoded.changes:
            seen[change.source.offset].append("change")
            changes[change.source.offset] = change
        for letter in decoded.dead:
            value = letter.value or {}
            seen[value["offset"]].append("dead")
            if not (value.get("error_class") and value.get("error_message") and value.get("stage")):
                self.out.wrong.append((case.kind, "dead letter without a reason", _small(case)))
            self.out.reasons[reason_of(value)] += 1
        tombstones = [r.offset for r in records if r.value is None]
        for offset in tombstones:
            seen[offset].append("tombstone")
        if decoded.tombstones != len(tombstones) or any(len(v) != 1 for v in seen.values()):
            self.out.wrong.append((case.kind, f"outcomes {seen}", _small(case)))
            return
        for c, record in ((case, records[0]), (good, records[1])):
            (got,) = seen[record.offset]
            if c is case:
                self.out.by_kind[(case.kind, got)] += 1
            if c.expect is not None and got != c.expect:
                what = f"expected {c.expect}, got {got}"
                if got == "dead":
                    letter = next(
                        d.value
                        for d in decoded.dead
                        if d.value and d.value["offset"] == record.offset
                    )
                    what += f" ({letter['error_class']}: {letter['error_message'][:200]})"
                self.out.wrong.append((c.kind, what, _small(c)))
            elif got == "change" and c.after is not None:
                change = changes[record.offset]
                if change.after != c.after:
                    self.out.wrong.append(
                        (c.kind, "change differs from what was written", _small(c))
                    )

    def _route(self, topic: str, decoded: Decoded) -> None:
        if not decoded.changes:
            return
        self.pipeline.ingest((topic, 0), decoded.changes)
        self.out.routed += len(decoded.changes)
        self.pending += 1
        if self.pending >= 25:
            self.deliver()

    def deliver(self) -> None:
        """Deliver what is pending; count what every batch since the last count did
        (those of `pipeline.finish` too)."""
        self.pipeline.wall_ms += 1_000
        self.pipeline.idle_except(())
        self.pipeline.deliver()
        self.pending = 0
        for result in self.pipeline.counters.results:
            self.out.emits += len(result.emits)
            for failure in result.failures:
                self.out.flow_failures[
                    f"{type(failure.error).__name__}: {failure.error}"[:200]
                ] += 1
        del self.pipeline.counters.results[:]

    def run_line(self, kind: str, text: str) -> None:
        """One produce line: rejected with a clear message, or encoded and decoded back."""
        self.out.cases += 1
        started = time.perf_counter()
        try:
            outcome = self._bounded(lambda: self._line(text))
            self.out.by_kind[(kind, outcome)] += 1
        except Hang:
            self.out.hangs.append((kind, text[:2000]))
            self.out.by_kind[(kind, "hang")] += 1
        except Exception as exc:
            self.out.crashes.append((kind, f"{type(exc).__name__}: {exc}"[:500], text[:2000]))
            self.out.by_kind[(kind, "crash")] += 1
        self.out.note_time(time.perf_counter() - started, kind, text[:300])

    def _line(self, text: str) -> str:
        try:
            topic, key, value, headers = parse_line(self.forms, 7, text)
        except LineError as exc:
            message = str(exc)
            if not message.startswith("line 7: ") or len(message) > 2_000 or "Traceback" in message:
                self.out.wrong.append(("line", f"unclear message {message[:300]!r}", text[:2000]))
            self.out.reasons["line:" + _message_kind(message)] += 1
            return "rejected"
        codec = self.decoder.codec
        key_bytes = None if key is None else codec.encode_key(topic, key)
        value_bytes = None if value is None else codec.encode_value(topic, value)
        for _, v in headers:
            v.decode()
        if value_bytes is not None:
            back = self.forms.get(topic, "value").to_json(codec.decode_value(topic, value_bytes))
            sent = self.forms.get(topic, "value").to_json(value)
            if back != sent:
                self.out.wrong.append(
                    ("line", "value changed on the way through Avro", text[:2000])
                )
        if key_bytes is not None:
            codec.decode_key(topic, key_bytes)
        return "sent"


def _message_kind(message: str) -> str:
    """A short class of a LineError message, for the counts (the field-free part)."""
    body = message.split(": ", 1)[1] if ": " in message else message
    for marker in (
        "not valid JSON",
        "unknown field",
        "missing required field",
        "may not be null",
        "is not a contract topic",
        "expected",
        "exceeds precision",
        "decimal places",
        "not a date",
        "out of range",
        "not valid UTF-8",
        "not a decimal",
        "not a finite",
        "too deeply nested",
        "not one of",
        "base64",
        "time zone",
        "instant",
    ):
        if marker in body:
            return marker
    return body[:40]


def _small(case: Case) -> dict[str, Any] | str:
    if len(case.value or b"") > 8192:
        return f"{case.kind} on {case.topic}: a {len(case.value or b'')}-byte value"
    return case.to_json()
