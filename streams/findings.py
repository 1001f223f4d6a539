"""Level-triggered alert, exception and command lifecycles, shared by every rule set.

Rules say what *should* hold now (a list of `Finding`s and `CommandDraft`s);
`settle` compares that with what is open in state and emits only the
differences: OPEN for a new finding, RESOLVED (same ID) for one that ended,
a re-sent OPEN when an open finding's facts changed, and each command once.
Evaluating from the whole state, not from the last event, is what makes the
result independent of arrival order. Pure: every instant written into a
record is the trigger's event time (`Trigger.at_ms`), so a replay writes the
same records.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from pssync.avro.contract import DRIFT_TOPIC, EXCEPTIONS_TOPIC
from pssync.avro.jsonform import format_instant
from pssync.streams.changes import SourceRef
from pssync.streams.outputs import Emit, causation, stable_id

Record = dict[str, Any]

ISSUED_MEMORY = 64


def iso(ms: int) -> str:
    return format_instant(dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC))


def digest(value: Any) -> str:
    raw = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True)
class FieldDiff:
    field: str
    owner: str
    values: dict[str, str | None]

    def to_json(self) -> Record:
        return {"field": self.field, "owner": self.owner, "values": dict(self.values)}


@dataclass(frozen=True, slots=True)
class Finding:
    """A condition that holds now: a drift alert (kind="alert") or an exception."""

    kind: str
    rule: str
    entity_type: str
    entity_id: str
    remediation: str
    severity: str = "WARNING"
    fields: tuple[FieldDiff, ...] = ()
    reason: str = ""
    context: tuple[tuple[str, str | None], ...] = ()

    @property
    def slot(self) -> str:
        return f"{self.kind}|{self.rule}|{self.entity_type}|{self.entity_id}"

    def facts(self) -> Any:
        if self.kind == "alert":
            return [f.to_json() for f in self.fields], self.severity
        return self.reason, dict(self.context)


@dataclass(frozen=True, slots=True)
class CommandDraft:
    """A command that should be issued; `basis` = identities of the source
    versions its payload is built from (see outputs.py on command_id)."""

    topic: str
    type: str
    entity_id: str
    key: str
    payload: Record
    basis: tuple[str, ...]
    rule: str
    # the source versions the payload is built from (SourceRef JSON), for causation
    sources: tuple[Record, ...] = ()
    # when the business SLA this command ends began (ISO instant), for metrics
    sla_start: str | None = None

    @property
    def command_id(self) -> str:
        return stable_id("cmd", self.type, self.entity_id, *self.basis, digest(self.payload))


@dataclass(slots=True)
class Trigger:
    """What caused this evaluation: for correlation, causation and the instants written.

    `at_ms` is the event time records are stamped with (`detected_at`, `issued_at`,
    ...): the source commit time of a change, or the due time of a timer.
    `identity` names the cause in the IDs of the findings it opens, so it must be
    stable across replays: a source identity, or `timer:<key>:<due>`.
    """

    correlation_id: str
    refs: list[SourceRef] = field(default_factory=list)
    source_ts_ms: int | None = None
    at_ms: int = 0

    @property
    def identity(self) -> str:
        return self.refs[0].identity if self.refs else self.correlation_id

    @classmethod
    def timer(cls, key: str, due_ms: int, at_ms: int) -> Trigger:
        """A timer's trigger: its identity comes from the entity and the due time."""
        return cls(f"timer:{key}:{due_ms}", [], None, at_ms)


def settle_findings(
    open_findings: dict[str, Record],
    desired: list[Finding],
    trigger: Trigger,
    owner: str | None = None,
    ops: Record | None = None,
) -> list[Emit]:
    """Mutates `open_findings` (slot -> last emitted record) and returns the emits.

    `owner` is written on exceptions (where their entity's state lives: what an action
    on one is keyed by). `ops` is the entity's operations state (`streams.actions`):
    people's decisions the lifecycle honours. Intents an action left (`dismiss`,
    `assign`, `resolving`: slot -> what) are carried out here and cleared; a dismissed
    exception stays dismissed while its condition holds (`dismissed`: slot -> id), and
    once the condition ends its dismissal is forgotten, so a recurrence is a new
    exception with a new ID.
    """
    emits: list[Emit] = []
    wanted = {f.slot: f for f in desired}
    ops = ops if ops is not None else {}
    resolving: dict[str, Record] = ops.pop("resolving", {})
    dismissing: dict[str, Record] = ops.pop("dismiss", {})
    assigning: dict[str, str | None] = ops.pop("assign", {})
    dismissed: dict[str, str] = ops.get("dismissed", {})
    for slot in sorted(set(open_findings) - set(wanted)):
        emits.append(_resolved(open_findings.pop(slot), trigger, resolving.get(slot)))
    for slot in sorted(set(dismissed) - set(wanted)):
        del dismissed[slot]
    for slot, finding in sorted(wanted.items()):
        current = open_findings.get(slot)
        if slot in dismissing and current is not None:
            dismissed[slot] = current["exception_id"]
            record = _public(open_findings.pop(slot)) | {
                "state": "DISMISSED",
                "resolution": dismissing[slot],
                "correlation_id": trigger.correlation_id,
                "causation": causation(trigger.refs),
            }
            emits.append(_emit("exception", record, trigger))
            continue
        if slot in dismissed:
            continue
        if current is not None and slot in assigning:
            current["assignee"] = assigning[slot]
            current["_facts"] = None  # re-sent below with the assignee
        if current is not None and current.get("_facts") == digest(finding.facts()):
            continue
        record = _opened(finding, current, trigger, owner)
        open_findings[slot] = record
        emits.append(_emit(finding.kind, _public(record), trigger))
    if dismissed:
        ops["dismissed"] = dismissed
    return emits


def public_record(record: Record) -> Record:
    """A finding as it was emitted (without the lifecycle's private fields)."""
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _public(record: Record) -> Record:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _emit(kind: str, record: Record, trigger: Trigger) -> Emit:
    if kind == "alert":
        return Emit(
            DRIFT_TOPIC,
            record["alert_id"],
            record,
            trigger.correlation_id,
            "alert",
            trigger.source_ts_ms,
        )
    return Emit(
        EXCEPTIONS_TOPIC,
        record["exception_id"],
        record,
        trigger.correlation_id,
        "exception",
        trigger.source_ts_ms,
    )


def _opened(
    finding: Finding, last: Record | None, trigger: Trigger, owner: str | None = None
) -> Record:
    id_field = "alert_id" if finding.kind == "alert" else "exception_id"
    if last is not None:
        finding_id = last[id_field]
    else:
        finding_id = stable_id(
            finding.kind, finding.rule, finding.entity_type, finding.entity_id, trigger.identity
        )
    common: Record = {
        id_field: finding_id,
        "rule": finding.rule,
        "state": "OPEN",
        "entity_type": finding.entity_type,
        "entity_id": finding.entity_id,
        "remediation": finding.remediation,
        "correlation_id": trigger.correlation_id,
        "causation": causation(trigger.refs),
    }
    if finding.kind == "alert":
        common |= {
            "severity": finding.severity,
            "fields": [f.to_json() for f in finding.fields],
            "detected_at": last["detected_at"] if last else iso(trigger.at_ms),
            "resolved_at": None,
        }
    else:
        common |= {
            "reason": finding.reason,
            "context": dict(finding.context),
            "created_at": last["created_at"] if last else iso(trigger.at_ms),
            "resolution": None,
            "owner": owner,
            "assignee": last.get("assignee") if last else None,
        }
    common["_facts"] = digest(finding.facts())
    return common


def _resolved(last: Record, trigger: Trigger, resolution: Record | None = None) -> Emit:
    record = _public(last) | {
        "state": "RESOLVED",
        "correlation_id": trigger.correlation_id,
        "causation": causation(trigger.refs),
    }
    if "alert_id" in record:
        record["resolved_at"] = iso(trigger.at_ms)
        return _emit("alert", record, trigger)
    record["resolution"] = resolution or {
        "who": "pssync",
        "action": "AUTO_RESOLVED",
        "note": "the condition no longer holds",
        "when": iso(trigger.at_ms),
    }
    return _emit("exception", record, trigger)


def issue_commands(issued: list[str], drafts: list[CommandDraft], trigger: Trigger) -> list[Emit]:
    """Emit each draft whose command_id was not issued before; mutates `issued`."""
    emits = []
    for draft in drafts:
        command_id = draft.command_id
        if command_id in issued:
            continue
        issued.append(command_id)
        record = {
            "command_id": command_id,
            "type": draft.type,
            "entity_id": draft.entity_id,
            "payload": draft.payload,
            "correlation_id": trigger.correlation_id,
            "causation": causation(trigger.refs + [SourceRef.from_json(s) for s in draft.sources]),
            "issued_at": iso(trigger.at_ms),
            "rule": draft.rule,
        }
        emits.append(
            Emit(
                draft.topic,
                draft.key,
                record,
                trigger.correlation_id,
                "command",
                trigger.source_ts_ms,
                draft.sla_start,
            )
        )
    del issued[:-ISSUED_MEMORY]
    return emits
