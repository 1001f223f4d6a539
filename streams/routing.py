"""Where a change goes on the internal keyed topic: pure routing decisions.

Used by the ingest agents and by the tests that replay the same routing
without Kafka.
"""

from __future__ import annotations

from typing import Any

from pssync.streams.changes import Change
from pssync.streams.rules.workers import is_newer, join_key_of_erp, remember

Record = dict[str, Any]


def new_link() -> Record:
    return {"key": None, "seen": {}}


def erp_employee_targets(link: Record, change: Change) -> list[str]:
    """Join keys an ERP employee change must reach; updates `link` (its last join key).

    The new join key, plus the previous one when the employee was relinked or
    deleted, so the old worker drops it. The previous key comes from the link
    table, since Debezium's default replica identity gives no before-image.
    """
    new_key = join_key_of_erp(change.after) if change.after else None
    targets = {k for k in (new_key, link["key"]) if k}
    if not targets and change.before:
        targets.add(join_key_of_erp(change.before))
    if is_newer(link["seen"], change.source):
        remember(link["seen"], change.source)
        link["key"] = new_key
    return sorted(targets)
