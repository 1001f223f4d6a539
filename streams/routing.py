"""Where a change goes on the internal keyed topics: pure routing decisions.

Used by the ingest agents and by the tests that replay the same routing
without Kafka.

Link tables remember an entity's last join key (Debezium's default replica
identity sends no before-image), so a change that moves an entity to another
key, or deletes it, also reaches the previous owner. A link goes with its
entity's delete ("links of deleted records"), and a route may give links an
expiry in event time (`Route.expires`). A change that may have had an owner
pssync no longer knows of (an update or delete with no link and no
before-image) is also sent to every other partition, marked as not theirs,
so whichever holds the entity lets it go: nothing depends on a link being kept.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pssync.streams.changes import Change
from pssync.streams.rules.common import is_newer, remember
from pssync.streams.rules.workers import join_key_of_erp

Record = dict[str, Any]
_EPOCH_DAY = dt.date(1970, 1, 1)
JoinKey = Callable[[Record], str | None]
# event time (ms) after which an entity's link may be forgotten, from its after-image
Expiry = Callable[[Record, int], int | None]


def new_link() -> Record:
    return {"key": None, "seen": {}}


@dataclass(frozen=True, slots=True)
class Plan:
    """Where one change goes: its join keys, and whether others may hold it unknowingly."""

    targets: tuple[str, ...]
    elsewhere: bool  # also tell every other partition (previous owner unknown)
    link: Record | None  # the link to keep (None: forget it)


def plan_route(link: Record | None, change: Change, join_key: JoinKey) -> Plan:
    """The new join key, plus the previous one when the entity moved or was deleted.

    The previous key comes from the link, else from the before-image. With neither,
    an update or delete may concern an owner forgotten since: `elsewhere`.
    """
    new_key = join_key(change.after) if change.after else None
    previous = link["key"] if link else None
    if previous is None and change.before:
        previous = join_key(change.before)
    targets = tuple(sorted({k for k in (new_key, previous) if k}))
    elsewhere = link is None and change.before is None and change.op in ("u", "d")
    kept = dict(link) if link else new_link()
    kept["seen"] = dict(kept["seen"])
    if is_newer(kept["seen"], change.source):
        remember(kept["seen"], change.source)
        kept["key"] = new_key
        if change.after is None:
            return Plan(targets, elsewhere, None)
    return Plan(targets, elsewhere, kept)


def erp_employee_targets(link: Record, change: Change) -> list[str]:
    """ERP employees join HR on worker_id, or on `erp:<id>` when unlinked."""
    return list(plan_route(link, change, join_key_of_erp).targets)


def field_key(name: str, prefix: str = "") -> JoinKey:
    """A join key read from one field of the image (None when the field is empty)."""

    def key(image: Record) -> str | None:
        value = image.get(name)
        return f"{prefix}{value}" if value else None

    return key


def erp_project_key(image: Record) -> str | None:
    """ERP projects join PSA on project_id, or on `erp:<id>` when unlinked."""
    return str(image["project_id"]) if image.get("project_id") else f"erp:{image['erp_project_id']}"


@functools.lru_cache(maxsize=4096)
def month_end_ms(day: str) -> int:
    """The first instant of the month after the ISO date `day`, UTC, in ms (cached: a
    backlog asks for the same few hundred days hundreds of thousands of times)."""
    date = dt.date.fromisoformat(day)
    # in whole days: the month after December 9999 is not a date Python can hold
    days = (date.replace(day=1) - _EPOCH_DAY).days + calendar.monthrange(date.year, date.month)[1]
    return days * 86_400_000


def time_entry_link_expiry(after: Record, retention_ms: int) -> int | None:
    """A time entry's link may go once its month is over by the retention: by then its
    period is normally closed and the entry retired (if not, a later change reaches
    the owner anyway, sent everywhere)."""
    return month_end_ms(str(after["work_date"])) + retention_ms
