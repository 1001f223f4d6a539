"""Pieces every rule set shares: evaluations, timing, parking on missing dependencies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pssync.streams.changes import Change, SourceRef
from pssync.streams.findings import CommandDraft, Finding

Record = dict[str, Any]


@dataclass(slots=True)
class Evaluation:
    findings: list[Finding] = field(default_factory=list)
    commands: list[CommandDraft] = field(default_factory=list)
    # dependency name -> why it is needed (parked until it arrives)
    waiting_for: dict[str, str] = field(default_factory=dict)
    # the next instant (ms) at which evaluation could change with time alone
    deadline_ms: int | None = None

    def due(self, at_ms: int) -> None:
        self.deadline_ms = at_ms if self.deadline_ms is None else min(self.deadline_ms, at_ms)


@dataclass(frozen=True, slots=True)
class Timing:
    now_ms: int
    orphan_grace_ms: int
    dependency_timeout_ms: int
    project_setup_sla_ms: int = 86_400_000


def is_newer(seen: Mapping[str, Any], ref: SourceRef) -> bool:
    """True if `ref` is a newer version of its source row than any applied before.

    Ordered by the source log position (`lsn`) where both have one, else by
    the source commit time. A redelivered change (same lsn) is not newer.
    """
    last = seen.get(f"{ref.topic}|{ref.key}")
    if last is None:
        return True
    last_lsn, last_ts = last
    if ref.lsn is not None and last_lsn is not None:
        return bool(ref.lsn > last_lsn)
    if ref.ts_ms is not None and last_ts is not None:
        return bool(ref.ts_ms > last_ts)
    return True


def remember(seen: dict[str, Any], ref: SourceRef) -> None:
    seen[f"{ref.topic}|{ref.key}"] = [ref.lsn, ref.ts_ms]


def accept(state: Record, change: Change) -> bool:
    """Record `change` as seen in `state`; False for a duplicate or out-of-date version."""
    seen = state.setdefault("seen", {})
    if not is_newer(seen, change.source):
        return False
    remember(seen, change.source)
    return True


def identity(src: Record | None) -> str:
    return SourceRef.from_json(src).identity if src else "none"


class Parking:
    """Tracks how long each missing dependency has been waited for (in `state["since"]`)."""

    def __init__(self, state: Record, out: Evaluation, timing: Timing) -> None:
        self.since: dict[str, int] = state.setdefault("since", {})
        self.out = out
        self.timing = timing
        self.live: set[str] = set()

    def wait(self, dependency: str, why: str) -> bool:
        """Park on `dependency`; True once the dependency timeout has passed."""
        self.out.waiting_for[dependency] = why
        return self.timer(dependency, self.timing.dependency_timeout_ms)

    def timer(self, name: str, after_ms: int) -> bool:
        """Start (once) a timer; True once `after_ms` has passed since it started."""
        self.live.add(name)
        started = self.since.setdefault(name, self.timing.now_ms)
        due = started + after_ms
        if self.timing.now_ms >= due:
            return True
        self.out.due(due)
        return False

    def started(self, name: str) -> int:
        return self.since[name]

    def done(self) -> None:
        """Forget timers of dependencies no longer waited for."""
        for name in list(self.since):
            if name not in self.live:
                del self.since[name]


def dependency_timeout(
    entity_type: str, entity_id: str, missing: list[str], why: str, since_ms: int
) -> Finding:
    names = ", ".join(m.replace(":", " ", 1) for m in missing)
    return Finding(
        kind="exception",
        rule="DEPENDENCY_TIMEOUT",
        entity_type=entity_type,
        entity_id=entity_id,
        reason=f"waited too long for {names}",
        context=(
            ("missing", ",".join(missing)),
            ("needed_for", why),
            ("waiting_since_ms", str(since_ms)),
        ),
        remediation=(
            f"Make sure {names} reaches pssync (check the source system and its connector); "
            "this resolves itself once it arrives."
        ),
    )
