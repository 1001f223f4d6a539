"""People's actions on exceptions (`ops.actions`), applied by the flow that owns the entity.

An operator's action (dismiss, retry, post_to_next_open_period, assign) is a record
on `ops.actions`, keyed by the owner's join key (the exception's `owner`, e.g.
`worker:W1` -> key `W1`), written by the API once it has checked the action against
its view of the queue. The `ops.actions` ingest agent turns each into a `Change`
(`to_action_change`) and routes it to the keyed partition that owns the entity, like
any source change, so an action is:

- **ordered with the data**: it waits in the buffer under its event time `at` (the
  stream time the operator's view had reached when the API accepted it), after the
  changes of that instant (`ops.actions` ranks after every CDC topic), and `ops.actions`
  is one of the sources the alignment waits for. Replayed as a backlog, the action is
  applied to the state the operator saw, whatever the reading speed. Live, an action
  whose `at` the partition's stream time has already passed is applied at once (it is
  late, and counted so): after changes the operator had not seen, as it must be;
- **durable**: the API answers 202 only once the broker has it; the keyed flow applies
  it from the internal topic under the same commit protocol as data, so a crash
  before the commit re-applies it to the restored state;
- **idempotent by its action id**: the entity remembers the ids it applied
  (`ops.acted`), so a redelivery or a client's retry does nothing more.

What an action did is one record on `ops.action_outcomes` (APPLIED, or
NOT_APPLICABLE with the reason: the exception was no longer open when its turn came,
the period it would post to is no longer open, ...), and its effect is on the usual
output topics: the exception DISMISSED or RESOLVED with `resolution` {who, action,
note, when}, a POST_TIME_ENTRY into the next open period, the exception re-sent
with its assignee. `apply_action` is pure over a state view, like the rest of a flow.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Protocol

from pssync.avro.contract import ACTIONS, ACTIONS_TOPIC, EXCEPTIONS_TOPIC, OUTCOMES_TOPIC
from pssync.streams.changes import Change, SourceRef, ValidationError
from pssync.streams.findings import Trigger, iso
from pssync.streams.messages import Routed
from pssync.streams.outputs import Emit
from pssync.tables.view import StateView

Record = dict[str, Any]

# action ids an entity remembers having applied (a redelivery comes soon after)
ACTED_MEMORY = 64
FLOWS = ("worker", "project")


def _ms(value: Any, name: str) -> int:
    if isinstance(value, int):
        return value
    try:
        instant = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"{name}: {value!r} is not an instant") from None
    return int(instant.timestamp() * 1000)


def to_action_change(
    key: Any, value: Record, partition: int, offset: int, correlation: str | None
) -> Change:
    """Validate a decoded `ops.actions` record (JSON form) and make it a Change whose
    event time is the action's `at`; `ValidationError` names what is wrong."""
    action = value.get("action")
    if action not in ACTIONS:
        raise ValidationError(f"action: {action!r} is not one of {list(ACTIONS)}")
    for name in ("action_id", "exception_id", "entity_type", "entity_id", "who"):
        if not value.get(name):
            raise ValidationError(f"{name}: must be set")
    flow, _, owner_key = str(value.get("owner") or "").partition(":")
    if flow not in FLOWS or not owner_key:
        raise ValidationError(f"owner: {value.get('owner')!r} is not worker:<key> or project:<key>")
    if key is not None and key != owner_key:
        raise ValidationError(f"key: {key!r} does not match owner {value['owner']!r}")
    at = _ms(value.get("at"), "at")
    ref = SourceRef(ACTIONS_TOPIC, partition, offset, str(value["action_id"]), None, at)
    return Change(
        topic=ACTIONS_TOPIC,
        entity_id=str(value["action_id"]),
        op="c",
        before=None,
        after=value,
        source=ref,
        correlation_id=correlation or f"action:{value['action_id']}",
    )


def owner_key(flow: str) -> Callable[[Record], str | None]:
    """The join key of an action for `flow`'s keyed topic (None: another flow's)."""

    def key(image: Record) -> str | None:
        name, _, owner = str(image.get("owner") or "").partition(":")
        return owner if name == flow and owner else None

    return key


class ActionTarget(Protocol):
    """What a keyed flow offers `apply_action`."""

    def entity_key(self, entity_type: str, entity_id: str, owner_key: str) -> str | None: ...

    def reevaluate(
        self, view: StateView, key: str, trigger: Trigger, now_ms: int
    ) -> list[Emit]: ...


def _outcome(action: Record, trigger: Trigger, outcome: str, detail: str) -> Emit:
    record = {
        "action_id": action["action_id"],
        "action": action["action"],
        "exception_id": action["exception_id"],
        "outcome": outcome,
        "detail": detail,
        "who": action["who"],
        "note": action.get("note"),
        "at": iso(trigger.at_ms),
        "correlation_id": trigger.correlation_id,
    }
    return Emit(
        OUTCOMES_TOPIC,
        action["exception_id"],
        record,
        trigger.correlation_id,
        "outcome",
        trigger.source_ts_ms,
    )


def _exception_emits(emits: list[Emit], exception_id: str) -> list[Record]:
    return [
        e.value
        for e in emits
        if e.topic == EXCEPTIONS_TOPIC and e.value and e.value["exception_id"] == exception_id
    ]


def apply_action(
    target: ActionTarget, view: StateView, routed: Routed, now_ms: int
) -> tuple[list[Emit], bool]:
    """Apply one action to the entity it names; (emits, duplicate)."""
    change = routed.change
    action: Record = change.after or {}
    ref = change.source
    trigger = Trigger(change.correlation_id, [ref], ref.ts_ms, now_ms)
    key = target.entity_key(action["entity_type"], action["entity_id"], routed.key or "")
    state = view.get(key) if key else None
    if key is None or state is None:
        return [_outcome(action, trigger, "NOT_APPLICABLE", "the entity is not in state")], False
    ops: Record = state.setdefault("ops", {})
    acted: list[str] = ops.setdefault("acted", [])
    if action["action_id"] in acted:
        return [], True
    acted.append(action["action_id"])
    del acted[:-ACTED_MEMORY]
    slot, record = _open_exception(state, action["exception_id"])
    if slot is None or record is None:
        view.put(key, state)
        detail = "the exception is no longer open"
        return [_outcome(action, trigger, "NOT_APPLICABLE", detail)], False
    resolution = {
        "who": action["who"],
        "action": action["action"],
        "note": action.get("note"),
        "when": iso(now_ms),
    }
    kind = action["action"]
    if kind == "post_to_next_open_period":
        period = (record.get("context") or {}).get("next_open_period")
        if record["rule"] != "TIME_IN_CLOSED_PERIOD" or not period:
            view.put(key, state)
            detail = "no next open period to post to"
            return [_outcome(action, trigger, "NOT_APPLICABLE", detail)], False
        ops["post_to"] = period
        ops.setdefault("resolving", {})[slot] = resolution
    elif kind == "dismiss":
        ops.setdefault("dismiss", {})[slot] = resolution
    elif kind == "assign":
        ops.setdefault("assign", {})[slot] = action.get("assignee")
    view.put(key, state)
    emits = target.reevaluate(view, key, trigger, now_ms)
    after = view.get(key) or {}
    # an intent the evaluation did not carry out must not linger for a later one
    left = after.get("ops") or {}
    for intent in ("resolving", "dismiss", "assign"):
        left.pop(intent, None)
    if kind == "post_to_next_open_period" and _open_exception(after, action["exception_id"])[0]:
        left.pop("post_to", None)
    if after:
        view.put(key, after)
    return [*emits, _outcome(action, trigger, *_what_happened(kind, action, emits))], False


def _open_exception(state: Record, exception_id: str) -> tuple[str | None, Record | None]:
    for slot, record in (state.get("open") or {}).items():
        if record.get("exception_id") == exception_id:
            return slot, record
    return None, None


def _what_happened(kind: str, action: Record, emits: list[Emit]) -> tuple[str, str]:
    records = _exception_emits(emits, action["exception_id"])
    states = [r["state"] for r in records]
    if kind == "dismiss":
        return ("APPLIED", "dismissed") if "DISMISSED" in states else _not("dismissed")
    if kind == "assign":
        who = action.get("assignee")
        return "APPLIED", f"assigned to {who}" if who else "unassigned"
    if kind == "post_to_next_open_period":
        posts = [
            e.value
            for e in emits
            if e.kind == "command" and e.value and e.value["type"] == "POST_TIME_ENTRY"
        ]
        if posts and "RESOLVED" in states:
            period = posts[-1]["payload"].get("period_id")
            return "APPLIED", f"posted to {period} ({posts[-1]['command_id']})"
        return _not("posted: the next open period is no longer open, or the entry changed")
    if "RESOLVED" in states:
        return "APPLIED", "evaluated again: the exception no longer holds"
    return "APPLIED", f"evaluated again: {len(emits)} output(s); the exception still holds"


def _not(what: str) -> tuple[str, str]:
    return "NOT_APPLICABLE", f"not {what}"
