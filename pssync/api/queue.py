"""The operations queue as a read model of the output topics: pure, no Kafka, no clock.

`QueueView.apply` takes output records as the feed reads them (`sync.exceptions`,
`sync.drift`, `ops.action_outcomes`, values in the contract's JSON form) and keeps:
- the latest version of every exception, its history (each version's state, event
  time, resolution, assignee and correlation, and the outcomes of actions on it) and
  its trail (the correlation ids and source positions that caused its versions);
- the open drift alerts;
- the firm's stream time `S`: the highest event time any of those records carries
  (created_at, resolution.when, detected_at, resolved_at, an outcome's at). Ages are
  measured on it, not on the wall clock, so a replayed firm ages as it did live, and
  an action is placed at it in event time (`ops.actions` `at`).

Guarantees:
- Order: listings are oldest first by (created_at, exception_id), which never changes
  for an exception; a cursor names the last item's place in that order, so paging is
  stable while new exceptions arrive (they land after or between, never shift a page
  already read) and a cursor stays valid across workers (every worker's view sorts
  alike).
- Duplicates: the output topics are at-least-once; a version already seen (same value)
  adds nothing, even when it arrives again after newer versions, and an outcome counts
  once per action id.
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

from pssync.avro.contract import DRIFT_TOPIC, EXCEPTIONS_TOPIC, OUTCOMES_TOPIC
from pssync.avro.jsonform import format_instant

Record = dict[str, Any]

STATES = ("OPEN", "RESOLVED", "DISMISSED")
# age buckets on the firm's stream time: (name, upper bound in ms, exclusive; None = any)
AGE_BUCKETS: tuple[tuple[str, int | None], ...] = (
    ("under_1h", 3_600_000),
    ("1h_to_1d", 86_400_000),
    ("1d_to_7d", 7 * 86_400_000),
    ("over_7d", None),
)
AGE_NAMES = tuple(name for name, _ in AGE_BUCKETS)
SEVERITIES = ("INFO", "WARNING", "CRITICAL")
_CURSOR_TEXT = r"[0-9]{1,15}\.[A-Za-z0-9_.:-]{1,200}"
_CURSOR = re.compile(f"^{_CURSOR_TEXT}$")
# as a query parameter: empty means the first page
CURSOR_PATTERN = f"^({_CURSOR_TEXT})?$"


class CursorError(ValueError):
    """A cursor that is not one this API hands out."""


def instant_ms(value: Any) -> int | None:
    """An ISO-8601 instant (the JSON form) as epoch milliseconds; None if absent."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)


def iso(ms: int) -> str:
    return format_instant(dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC))


def encode_cursor(created_ms: int, exception_id: str) -> str:
    return f"{created_ms}.{exception_id}"


def decode_cursor(cursor: str) -> tuple[int, str]:
    if not _CURSOR.match(cursor):
        raise CursorError("not a cursor this API handed out")
    ms, _, exception_id = cursor.partition(".")
    return int(ms), exception_id


def age_bucket(age_ms: int) -> str:
    for name, bound in AGE_BUCKETS:
        if bound is None or age_ms < bound:
            return name
    return AGE_NAMES[-1]


@dataclass(frozen=True, slots=True)
class Filters:
    """Listing filters; None (or "") means any."""

    state: str | None = None
    rule: str | None = None
    entity_type: str | None = None
    entity_id: str | None = None
    assignee: str | None = None
    age: str | None = None
    # at least this old (seconds, on the firm's stream time)
    min_age_s: float | None = None

    def match(self, record: Record, age: str, age_ms: int = 0) -> bool:
        return (
            (not self.state or record.get("state") == self.state)
            and (not self.rule or record.get("rule") == self.rule)
            and (not self.entity_type or record.get("entity_type") == self.entity_type)
            and (not self.entity_id or record.get("entity_id") == self.entity_id)
            and (not self.assignee or record.get("assignee") == self.assignee)
            and (not self.age or age == self.age)
            and (self.min_age_s is None or age_ms >= self.min_age_s * 1000)
        )


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Record]
    next: str | None

    def to_json(self) -> Record:
        return {"items": self.items, "next": self.next}


def _digest(value: Record) -> str:
    raw = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()


@dataclass(slots=True)
class _Entry:
    """One line of an exception's history, with where it sorts."""

    recorded_ms: int
    seq: int
    line: Record


class QueueView:
    """The read model; feed it with `apply`, ask it with the rest."""

    def __init__(self) -> None:
        self._exceptions: dict[str, Record] = {}
        self._created: dict[str, int] = {}
        self._order: list[tuple[int, str]] = []
        self._seen: dict[str, set[str]] = {}
        self._history: dict[str, list[_Entry]] = {}
        self._outcomes: dict[str, Record] = {}
        self._alerts: dict[str, Record] = {}
        self._open: set[str] = set()
        self._seq = itertools.count()
        self.stream_ms: int | None = None
        self.records = 0

    # -- feeding ------------------------------------------------------------
    def apply(
        self,
        topic: str,
        key: Any,
        value: Record | None,
        timestamp_ms: int,
        offset: int,
        partition: int = 0,
    ) -> None:
        """One output record (logical topic, JSON form). Tombstones change nothing."""
        self.records += 1
        if value is None:
            return
        if topic == EXCEPTIONS_TOPIC:
            self._apply_exception(value, timestamp_ms)
        elif topic == DRIFT_TOPIC:
            self._apply_alert(value)
        elif topic == OUTCOMES_TOPIC:
            self._apply_outcome(value, timestamp_ms)

    def _advance(self, *instants: Any) -> None:
        for value in instants:
            ms = instant_ms(value)
            if ms is not None and (self.stream_ms is None or ms > self.stream_ms):
                self.stream_ms = ms

    def _apply_exception(self, value: Record, timestamp_ms: int) -> None:
        exception_id = value.get("exception_id")
        if not isinstance(exception_id, str):
            return
        resolution = value.get("resolution") or None
        self._advance(value.get("created_at"), resolution and resolution.get("when"))
        seen = self._seen.setdefault(exception_id, set())
        digest = _digest(value)
        if digest in seen:
            return
        seen.add(digest)
        first = exception_id not in self._exceptions
        self._exceptions[exception_id] = value
        if first:
            created = instant_ms(value.get("created_at")) or 0
            self._created[exception_id] = created
            bisect.insort(self._order, (created, exception_id))
        if value.get("state") == "OPEN":
            self._open.add(exception_id)
        else:
            self._open.discard(exception_id)
        when = resolution.get("when") if resolution else None
        if when is None and first:
            when = value.get("created_at")
        self._history.setdefault(exception_id, []).append(
            _Entry(
                timestamp_ms,
                next(self._seq),
                {
                    "kind": "state",
                    "state": value.get("state"),
                    "at": when,
                    "resolution": resolution,
                    "assignee": value.get("assignee"),
                    "correlation_id": value.get("correlation_id"),
                    "causation": value.get("causation") or [],
                    "recorded_at": iso(timestamp_ms),
                },
            )
        )

    def _apply_alert(self, value: Record) -> None:
        alert_id = value.get("alert_id")
        if not isinstance(alert_id, str):
            return
        self._advance(value.get("detected_at"), value.get("resolved_at"))
        if value.get("state") == "OPEN":
            self._alerts[alert_id] = value
        else:
            self._alerts.pop(alert_id, None)

    def _apply_outcome(self, value: Record, timestamp_ms: int) -> None:
        action_id = value.get("action_id")
        exception_id = value.get("exception_id")
        if not isinstance(action_id, str) or not isinstance(exception_id, str):
            return
        self._advance(value.get("at"))
        if action_id in self._outcomes:
            return
        self._outcomes[action_id] = value
        self._history.setdefault(exception_id, []).append(
            _Entry(
                timestamp_ms,
                next(self._seq),
                {
                    "kind": "action",
                    "action_id": action_id,
                    "action": value.get("action"),
                    "outcome": value.get("outcome"),
                    "detail": value.get("detail"),
                    "who": value.get("who"),
                    "note": value.get("note"),
                    "at": value.get("at"),
                    "correlation_id": value.get("correlation_id"),
                    "recorded_at": iso(timestamp_ms),
                },
            )
        )

    # -- asking -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._exceptions)

    def exception(self, exception_id: str) -> Record | None:
        """The latest version of an exception (a copy), or None if unknown."""
        record = self._exceptions.get(exception_id)
        return None if record is None else dict(record)

    def outcome(self, action_id: str) -> Record | None:
        """The outcome of an action, once the flow that applied it has written it."""
        record = self._outcomes.get(action_id)
        return None if record is None else dict(record)

    def history(self, exception_id: str) -> list[Record]:
        """Its versions and the outcomes of actions on it, oldest first (by when each was
        written, then by the order read)."""
        entries = sorted(self._history.get(exception_id, []), key=lambda e: (e.recorded_ms, e.seq))
        return [{k: v for k, v in e.line.items() if k != "causation"} for e in entries]

    def trail(self, exception_id: str) -> list[Record]:
        """The lineage: per correlation id (in the order its versions were written), the
        distinct source positions that caused them."""
        out: list[Record] = []
        by_correlation: dict[str, Record] = {}
        seen: set[tuple[Any, ...]] = set()
        entries = sorted(self._history.get(exception_id, []), key=lambda e: (e.recorded_ms, e.seq))
        for entry in entries:
            if entry.line["kind"] != "state":
                continue
            correlation = str(entry.line.get("correlation_id"))
            step = by_correlation.get(correlation)
            if step is None:
                step = by_correlation[correlation] = {
                    "correlation_id": correlation,
                    "causation": [],
                }
                out.append(step)
            for ref in entry.line.get("causation") or []:
                identity = (ref.get("topic"), ref.get("partition"), ref.get("offset"))
                if identity not in seen:
                    seen.add(identity)
                    step["causation"].append(ref)
        return out

    def age_ms(self, exception_id: str) -> int:
        """An exception's age on the firm's stream time."""
        created = self._created.get(exception_id, 0)
        return max(0, (self.stream_ms or created) - created)

    def age(self, exception_id: str) -> str:
        """The age bucket of an exception on the firm's stream time."""
        return age_bucket(self.age_ms(exception_id))

    def page(self, filters: Filters, limit: int, cursor: str | None = None) -> Page:
        """Matching exceptions (latest versions), oldest first, `limit` at most, after
        `cursor`; `next` is the cursor of the last item when more may follow."""
        start = 0
        if cursor:
            start = bisect.bisect_right(self._order, decode_cursor(cursor))
        items: list[Record] = []
        last: tuple[int, str] | None = None
        for place in itertools.islice(self._order, start, None):
            exception_id = place[1]
            record = self._exceptions[exception_id]
            age_ms = self.age_ms(exception_id)
            if not filters.match(record, age_bucket(age_ms), age_ms):
                continue
            if len(items) == limit:
                return Page(items, encode_cursor(*last) if last else None)
            items.append(dict(record))
            last = place
        return Page(items, None)

    def open_alerts(self) -> list[Record]:
        """Open drift alerts, oldest first (detected_at, alert_id)."""
        return sorted(
            (dict(a) for a in self._alerts.values()),
            key=lambda a: (instant_ms(a.get("detected_at")) or 0, str(a.get("alert_id"))),
        )

    def summary(self) -> Record:
        """Open exceptions by rule and age bucket, open alerts by rule and severity."""
        exceptions: dict[str, dict[str, int]] = {}
        for exception_id in self._open:
            rule = str(self._exceptions[exception_id].get("rule"))
            buckets = exceptions.setdefault(rule, dict.fromkeys(AGE_NAMES, 0))
            buckets[self.age(exception_id)] += 1
        alerts: dict[str, dict[str, int]] = {}
        for alert in self._alerts.values():
            severities = alerts.setdefault(str(alert.get("rule")), dict.fromkeys(SEVERITIES, 0))
            severity = str(alert.get("severity"))
            severities[severity] = severities.get(severity, 0) + 1
        return {
            "stream_time": None if self.stream_ms is None else iso(self.stream_ms),
            "open_exceptions": {
                "total": len(self._open),
                "by_rule": dict(sorted(exceptions.items())),
            },
            "open_alerts": {
                "total": len(self._alerts),
                "by_rule": dict(sorted(alerts.items())),
            },
        }
