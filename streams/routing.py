"""Where a change goes on the internal keyed topics: pure routing decisions.

Used by the ingest agents and by the tests that replay the same routing
without Kafka.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pssync.streams.changes import Change
from pssync.streams.rules.common import is_newer, remember
from pssync.streams.rules.workers import join_key_of_erp

Record = dict[str, Any]
JoinKey = Callable[[Record], str | None]


def new_link() -> Record:
    return {"key": None, "seen": {}}


def link_targets(link: Record, change: Change, join_key: JoinKey) -> list[str]:
    """Join keys a change must reach; updates `link` (the entity's last join key).

    The new join key, plus the previous one when the entity moved to another
    key or was deleted, so the old owner drops it. The previous key comes from
    the link table, since Debezium's default replica identity gives no
    before-image.
    """
    new_key = join_key(change.after) if change.after else None
    targets = {k for k in (new_key, link["key"]) if k}
    if not targets and change.before:
        old = join_key(change.before)
        if old:
            targets.add(old)
    if is_newer(link["seen"], change.source):
        remember(link["seen"], change.source)
        link["key"] = new_key
    return sorted(targets)


def erp_employee_targets(link: Record, change: Change) -> list[str]:
    """ERP employees join HR on worker_id, or on `erp:<id>` when unlinked."""
    return link_targets(link, change, join_key_of_erp)


def field_key(name: str, prefix: str = "") -> JoinKey:
    """A join key read from one field of the image (None when the field is empty)."""

    def key(image: Record) -> str | None:
        value = image.get(name)
        return f"{prefix}{value}" if value else None

    return key


def erp_project_key(image: Record) -> str | None:
    """ERP projects join PSA on project_id, or on `erp:<id>` when unlinked."""
    return str(image["project_id"]) if image.get("project_id") else f"erp:{image['erp_project_id']}"
