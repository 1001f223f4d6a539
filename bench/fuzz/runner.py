"""Running cases: each through decode, routing and the keyed flows (or `parse_line`), bounded
in time, with what came out counted as outcomes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import time
import traceback
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
from pssync.streams.flow import FlowConfig, FlowResult, KeyedFlow
from pssync.streams.messages import Routed
from pssync.streams.offline import OfflinePipeline

# -- running cases ----------------------------------------------------------------------------


class Hang(BaseException):
    """A case (or a delivery) ran past its time bound. Not an `Exception`: the keyed flows
    dead-letter a change or timer whose processing raises one and carry on, which would
    swallow the bound of a case that spins in their release loop. `where` says what was
    running when the bound expired."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(message)
        self.where = where


@dataclass(slots=True)
class HangReport:
    """A case or delivery stopped by its time bound: which, how long it ran, and where."""

    case: int  # the case's index in the run (0-based); for the end of the run, the count
    kind: str  # the case's kind ("finish": the end of the run)
    topic: str
    stage: str  # "decode", "route", "delivery" (the keyed flows), "line" or "finish"
    seconds: float
    delivery: int | None = None  # the delivery's number in the run (1-based)
    batch: tuple[int, int] | None = None  # the first and last case whose changes it held
    where: str = ""
    detail: dict[str, Any] | str = ""  # the case as a corpus entry (or what it was)

    def describe(self) -> str:
        what = f"case {self.case} ({self.kind} on {self.topic})"
        if not self.topic:
            what = f"case {self.case} ({self.kind})"
        if self.stage == "finish":
            what = f"the end of the run, after {self.case} cases"
        if self.delivery is not None:
            what += f", delivery {self.delivery}"
            if self.batch is not None:
                what += f" (the changes of cases {self.batch[0]}-{self.batch[1]})"
        return f"{what}: {self.stage} stopped after {self.seconds:.2f} s; {self.where}"


@dataclass(slots=True)
class Delivery:
    """What one delivery to the keyed flows did, and how long it took."""

    number: int = 0
    case: int = 0  # the case whose batch made it due
    seconds: float = 0.0
    released: int = 0  # changes applied
    timers: int = 0  # timers fired

    def describe(self) -> str:
        return (
            f"{self.seconds:.1f} s (delivery {self.number}, at case {self.case}: "
            f"{self.released} changes applied, {self.timers} timers fired)"
        )


@dataclass(slots=True)
class Outcomes:
    """What a run saw: counts per kind and outcome, failures, the slowest case and
    delivery."""

    cases: int = 0
    by_kind: Counter[tuple[str, str]] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    crashes: list[tuple[str, str, dict[str, Any] | str]] = field(default_factory=list)
    hangs: list[HangReport] = field(default_factory=list)
    wrong: list[tuple[str, str, dict[str, Any] | str]] = field(default_factory=list)
    flow_failures: Counter[str] = field(default_factory=Counter)
    routed: int = 0
    emits: int = 0
    slowest: tuple[float, str, str] = (0.0, "", "")
    deliveries: int = 0
    slowest_delivery: Delivery = field(default_factory=Delivery)

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

    def __init__(
        self,
        root: Path,
        seed: int,
        case_timeout_s: float = 10.0,
        huge: int = 1 << 20,
        delivery_timeout_s: float = 60.0,
    ):
        self.decoder = make_decoder()
        self.cases = Cases(self.decoder, seed, huge)
        config = FlowConfig(orphan_grace_ms=900_000, dependency_timeout_ms=900_000)
        self.pipeline = OfflinePipeline(root, config)
        self.case_timeout_s = case_timeout_s
        self.delivery_timeout_s = delivery_timeout_s
        self.out = Outcomes()
        self.offset = 0
        self.pending = 0
        self.batch_from = 0  # the first case whose changes wait for the next delivery
        self.forms = Forms()
        # one event loop for every decode (asyncio.run per case costs more than a decode)
        self.loop = asyncio.new_event_loop()

    def close(self) -> None:
        self.pipeline.close()
        self.loop.close()

    # time bound: a SIGALRM interrupts a case that runs too long (main thread only). Bounds
    # nest: an inner one never outlasts the outer, which runs on after it.
    def _bounded(self, fn: Callable[[], Any], seconds: float | None = None) -> Any:
        bound = self.case_timeout_s if seconds is None else seconds
        previous = signal.getsignal(signal.SIGALRM)
        outer_left, _ = signal.getitimer(signal.ITIMER_REAL)
        if outer_left and outer_left < bound:
            bound, inner = outer_left, False  # the outer bound expires first: its Hang
        else:
            inner = True

        def expired(signum: int, frame: FrameType | None) -> None:
            if not inner and callable(previous):
                previous(signum, frame)
            raise Hang(f"over {bound:g}s", where_it_was(frame))

        started = time.monotonic()
        signal.signal(signal.SIGALRM, expired)
        signal.setitimer(signal.ITIMER_REAL, bound)
        try:
            return fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            if outer_left and inner:  # (not inner: the outer bound expired, its Hang is out)
                left = outer_left - (time.monotonic() - started)
                signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))

    def run_ingest(self, case: Case) -> None:
        """The hostile record, then a good one of the same topic, as one batch; every 25
        batches with changes, a delivery to the keyed flows (bounded on its own: it is
        the flows' work for those 25 cases, and the timers they bring due)."""
        index = self.out.cases
        self.out.cases += 1
        _, good_value, gk, gv = self.cases.good(case.topic)
        good = Case(
            "good", case.topic, gk, gv, "change", self.cases.expected_after(case.topic, good_value)
        )
        records = [self._inbound(case), self._inbound(good)]
        started = time.perf_counter()
        stage = "decode"
        try:
            decoded = self._bounded(
                lambda: self.loop.run_until_complete(self.decoder.decode(records))
            )
            self._check(case, good, records, decoded)
            stage = "route"
            due = self._bounded(lambda: self._route(index, case.topic, decoded))
            self.out.note_time(time.perf_counter() - started, case.kind, _brief(case))
            if due:
                stage, started = "delivery", time.perf_counter()
                self.deliver(index)
        except Hang as exc:
            self._hang(exc, index, case, stage, time.perf_counter() - started)
        except Exception as exc:
            self.out.crashes.append((case.kind, f"{type(exc).__name__}: {exc}"[:500], _small(case)))
            self.out.by_kind[(case.kind, "crash")] += 1
            self.out.note_time(time.perf_counter() - started, case.kind, _brief(case))

    def _hang(self, exc: Hang, index: int, case: Case, stage: str, seconds: float) -> None:
        report = HangReport(index, case.kind, case.topic, stage, seconds, where=exc.where)
        report.detail = case.to_json() if len(case.value or b"") < 4096 else _small(case)
        if stage == "delivery":
            report.delivery, report.batch = self.out.deliveries, (self.batch_from, index)
        else:
            self.out.by_kind[(case.kind, "hang")] += 1
            self.out.note_time(seconds, case.kind, _brief(case))
        self.out.hangs.append(report)
        if stage == "decode":  # the decode left behind on the loop, stopped
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
        else:
            self.drop_batch()

    def drop_batch(self) -> None:
        """After a hang in the keyed flows: drop the batch that hung (the partition that
        hung committed none of it) and what the flows keep in memory, so that the run goes
        on from the last committed state rather than hanging on that batch at every case.
        (A hang there is reported with its delivery and the cases whose changes it held,
        the 25 routed before it, not only the case whose batch made it due.)"""
        self.pipeline.inbox.clear()
        self.pending = 0
        for flow in self.pipeline.flows.values():
            for partition in range(self.pipeline.partitions):
                flow.forget(partition)

    def finish(self, idle_for_ms: int) -> None:
        """The end of a run: what is pending is delivered, and stream time runs on until
        every timer due has fired, bounded in time (that of a run's worth of cases)."""

        def run_out() -> None:
            self._deliver()
            self.pipeline.finish(idle_for_ms)

        started = time.perf_counter()
        try:
            self._bounded(run_out, 60 * self.case_timeout_s)
        except Hang as exc:
            seconds = time.perf_counter() - started
            self.out.hangs.append(
                HangReport(self.out.cases, "finish", "", "finish", seconds, where=exc.where)
            )
            self.drop_batch()
        self._deliver()

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

    def _route(self, index: int, topic: str, decoded: Decoded) -> bool:
        """Route the case's changes; whether a delivery is due (every 25 cases routed)."""
        if not decoded.changes:
            return False
        self.pipeline.ingest((topic, 0), decoded.changes)
        self.out.routed += len(decoded.changes)
        if self.pending == 0:
            self.batch_from = index
        self.pending += 1
        return self.pending >= 25

    def deliver(self, index: int | None = None) -> None:
        """Deliver what is pending to the keyed flows, within the delivery time bound
        (`Hang` past it), and note how long it took; `index` is the case that made it
        due (default: the last one run)."""
        self.out.deliveries += 1
        started = time.perf_counter()
        released, timers = self._bounded(self._deliver, self.delivery_timeout_s)
        seconds = time.perf_counter() - started
        if seconds > self.out.slowest_delivery.seconds:
            case = self.out.cases - 1 if index is None else index
            self.out.slowest_delivery = Delivery(
                self.out.deliveries, case, seconds, released, timers
            )

    def _deliver(self) -> tuple[int, int]:
        """Deliver what is pending; count what every batch since the last count did
        (those of `pipeline.finish` too): the changes applied and timers fired."""
        self.pipeline.wall_ms += 1_000
        self.pipeline.idle_except(())
        self.pipeline.deliver()
        self.pending = 0
        results: list[FlowResult] = self.pipeline.counters.results
        for result in results:
            self.out.emits += len(result.emits)
            for failure in result.failures:
                self.out.flow_failures[
                    f"{type(failure.error).__name__}: {failure.error}"[:200]
                ] += 1
        counts = sum(r.released for r in results), sum(r.timers for r in results)
        del results[:]
        return counts

    def run_line(self, kind: str, text: str) -> None:
        """One produce line: rejected with a clear message, or encoded and decoded back."""
        index = self.out.cases
        self.out.cases += 1
        started = time.perf_counter()
        try:
            outcome = self._bounded(lambda: self._line(text))
            self.out.by_kind[(kind, outcome)] += 1
        except Hang as exc:
            seconds = time.perf_counter() - started
            self.out.hangs.append(
                HangReport(index, kind, "", "line", seconds, where=exc.where, detail=text[:2000])
            )
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


def _brief(case: Case) -> str:
    return json.dumps(_small(case))[:300]


# -- where a bound expired ---------------------------------------------------------------------

_ROOT = str(Path(__file__).resolve().parents[2])


def where_it_was(frame: FrameType | None) -> str:
    """What was running when a time bound expired: in a keyed flow's release loop, the
    timer it was firing or the change it was applying, and its progress (changes applied,
    timers fired and due, stream time); and the innermost frames of this repository."""
    parts = []
    f = frame
    while f is not None:
        name, local = f.f_code.co_name, f.f_locals
        flow = local.get("self")
        if isinstance(flow, KeyedFlow):
            if name == "_fire":
                parts.append(
                    f"firing timer {str(local.get('key'))[:60]!r} due {_day(local.get('due'))}"
                )
            elif name == "_apply" and isinstance(local.get("routed"), Routed):
                change = local["routed"].change
                parts.append(
                    f"applying a change of {change.topic} {change.entity_id[:60]!r} "
                    f"at {_day(local.get('at'))}"
                )
            elif name == "_release" and isinstance(local.get("result"), FlowResult):
                result, clock = local["result"], local.get("clock") or {}
                parts.append(
                    f"{type(flow).__name__}._release: {result.released} changes applied, "
                    f"{result.timers} timers fired, {len(local.get('heap') or ())} due left; "
                    f"stream time {_day(clock.get('stream'))}, "
                    f"aligned time {_day(clock.get('aligned'))}"
                )
                break
        f = f.f_back
    ours = [
        fs
        for fs in traceback.extract_stack(frame)
        if fs.filename.startswith(_ROOT) and "/bench/fuzz/" not in fs.filename
    ]
    inner = " < ".join(f"{Path(fs.filename).name}:{fs.lineno} {fs.name}" for fs in ours[::-1][:4])
    return "; ".join([*parts[::-1], f"in {inner or 'the runner'}"])


def _day(ms: Any) -> str:
    """An event time (ms since the epoch) as its instant, for a report."""
    if not isinstance(ms, int):
        return str(ms)
    try:
        return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="seconds")
    except (OverflowError, ValueError, OSError):
        return f"{ms} ms"


def _small(case: Case) -> dict[str, Any] | str:
    if len(case.value or b"") > 8192:
        return f"{case.kind} on {case.topic}: a {len(case.value or b'')}-byte value"
    return case.to_json()
