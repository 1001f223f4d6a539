"""`OpsService`: what the operations API does, independent of HTTP (the console calls it
in-process, the JSON routes over HTTP).

Guarantees:
- Reads of the queue (`list_exceptions`, `get_exception`, `summary`) come from this
  worker's `QueueView` (fed with every partition of the output topics, `api.feed`),
  so any worker answers them for the whole firm.
- Reads of an entity or a project validation come from the worker that owns the
  entity's partition: here if this worker holds it, else forwarded once to the
  owner (`api.forward`).
- `act` checks the action against the view (404 unknown exception; 409 not open,
  wrong rule, no next open period, no owner; 422 a bad request), then writes one
  record to `ops.actions` (key = the owner's join key, partition =
  `stable_partition(key, n)` as the ingest partitions, header
  `correlation_id: action:<action_id>`) and returns only once the broker has
  acknowledged it (`acks=all`, idempotent producer; the wait runs off the event loop).
  A 202 therefore means the action is durably recorded; the owning flow applies it
  in event-time order (`at` = the firm's stream time in the view) and writes its
  outcome to `ops.action_outcomes`.
- Retries: a client may name its action (`action_id`); the same id again answers
  202 with that id and records nothing new once this worker accepted it or its
  outcome is in the view (and the flows apply an id once in any case), and 409
  when the id was used for another exception.
"""

from __future__ import annotations

import asyncio
import collections
import importlib
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast
from urllib.parse import quote

from pssync.api.forward import Peers, PeerUnreachable
from pssync.api.queue import AGE_NAMES, STATES, CursorError, Filters, QueueView, iso
from pssync.avro.codec import Codec, load_schema_text
from pssync.avro.contract import ACTIONS, ACTIONS_TOPIC
from pssync.avro.jsonform import JsonForm
from pssync.connectors.kafka import CORRELATION_HEADER, client_config, stable_partition
from pssync.settings import Settings

Record = dict[str, Any]

ENTITY_TYPES = ("worker", "project", "assignment", "time_entry")
NOTE_MAX = 2000
FILTER_MAX = 200
LIMIT_DEFAULT = 50
LIMIT_MAX = 500
ACTION_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,100}$"
_ACTION_ID = re.compile(ACTION_ID_PATTERN)
ACCEPTED_MEMORY = 10_000
DELIVERY_TIMEOUT_S = 30.0


class ApiError(Exception):
    """A refusal the API answers as `{"error": code, "message": message}` with `status`."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


@dataclass(frozen=True, slots=True)
class Answer:
    """A body and the worker that computed it (`forwarded_by`: the one that forwarded)."""

    body: Record
    served_by: str
    forwarded_by: str | None = None


class Lookup(Protocol):
    """`pssync.streams.lookup`: the entity reads a worker can do on what it holds."""

    def owner_partition(
        self, settings: Settings, entity_type: str, entity_id: str
    ) -> tuple[str, int] | None: ...

    async def find_entity(self, rt: Any, entity_type: str, entity_id: str) -> Record | None: ...

    async def validate_project(self, rt: Any, body: Record) -> Record | None: ...

    def held_partitions(self, rt: Any, internal: str) -> list[int]: ...


def streams_lookup() -> Lookup:
    """The streams side's lookup module (imported when first needed)."""
    return cast(Lookup, importlib.import_module("pssync.streams.lookup"))


class ActionSink(Protocol):
    async def send(
        self, topic: str, partition: int, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        """Return once the broker acknowledged the record; raise ApiError(503) if not."""


class KafkaActionSink:
    """`ops.actions` records out through their own idempotent, `acks=all` producer (the
    worker's output producer is flushed by the batch commit; sharing it would mix the
    delivery errors of both)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: Any = None

    def _ensure(self) -> Any:
        if self._producer is None:
            from confluent_kafka import Producer

            self._producer = Producer(
                client_config(
                    self.settings,
                    **{"enable.idempotence": True, "acks": "all", "linger.ms": 0},
                )
            )
        return self._producer

    async def send(
        self, topic: str, partition: int, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        producer = self._ensure()
        outcome: list[Any] = []

        def delivered(err: Any, _msg: Any) -> None:
            outcome.append(err)

        producer.produce(
            topic, value=value, key=key, partition=partition, headers=headers, on_delivery=delivered
        )
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        # flush serves the delivery callbacks; it blocks, so it runs in the executor
        while not outcome and time.monotonic() < deadline:
            await loop.run_in_executor(None, producer.flush, 1.0)
        if not outcome:
            raise ApiError(
                503,
                "not_recorded",
                f"Kafka did not acknowledge the action within {DELIVERY_TIMEOUT_S:.0f}s; "
                "retry with the same action_id",
                {"Retry-After": "5"},
            )
        if outcome[0] is not None:
            raise ApiError(
                503,
                "not_recorded",
                f"Kafka refused the action ({outcome[0]}); retry with the same action_id",
                {"Retry-After": "5"},
            )

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)


def _text(value: Any, name: str, limit: int, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise ApiError(422, "invalid_body", f"{name}: must be a non-empty string")
    if len(value) > limit:
        raise ApiError(422, "invalid_body", f"{name}: at most {limit} characters")
    return value


@dataclass(frozen=True, slots=True)
class ActionRequest:
    action: str
    note: str | None = None
    assignee: str | None = None
    action_id: str | None = None

    @classmethod
    def from_json(cls, body: Any) -> ActionRequest:
        """The body of `POST /api/exceptions/{id}/actions`; ApiError 422 if malformed."""
        if not isinstance(body, dict):
            raise ApiError(422, "invalid_body", "the body must be a JSON object")
        unknown = sorted(set(body) - {"action", "note", "assignee", "action_id"})
        if unknown:
            raise ApiError(422, "invalid_body", f"{unknown[0]}: unknown field")
        request = cls(
            action=str(_text(body.get("action"), "action", 64, required=True)),
            note=_text(body.get("note"), "note", NOTE_MAX),
            assignee=_text(body.get("assignee"), "assignee", FILTER_MAX),
            action_id=_text(body.get("action_id"), "action_id", 100),
        )
        request.check()
        return request

    def check(self) -> None:
        if self.action not in ACTIONS:
            raise ApiError(
                422, "invalid_body", f"action: {self.action!r} is not one of {list(ACTIONS)}"
            )
        if self.action_id is not None and not _ACTION_ID.match(self.action_id):
            raise ApiError(422, "invalid_body", "action_id: 1-100 of A-Z a-z 0-9 . _ : -")
        if self.assignee is not None and self.action != "assign":
            raise ApiError(422, "invalid_body", "assignee: only for the assign action")


def _blank(found: Record) -> bool:
    return (
        found.get("golden") is None
        and not found.get("open_findings")
        and not found.get("recent_commands")
    )


class OpsService:
    """The operations API's behaviour (module doc). `rt` is the worker's Runtime."""

    def __init__(
        self,
        settings: Settings,
        codec: Codec,
        view: QueueView,
        sink: ActionSink,
        peers: Peers,
        rt: Any,
        lookup: Callable[[], Lookup] = streams_lookup,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.codec = codec
        self.view = view
        self.sink = sink
        self.peers = peers
        self.rt = rt
        self._lookup = lookup
        self.clock = clock
        self.view_ready = False
        self._accepted: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._action_form = JsonForm(json.loads(load_schema_text(ACTIONS_TOPIC, "value")))

    @property
    def self_url(self) -> str:
        return self.peers.self_url

    # -- the queue ------------------------------------------------------------
    def list_exceptions(
        self,
        *,
        state: str | None = None,
        rule: str | None = None,
        entity_type: str | None = None,
        entity_id: str | None = None,
        assignee: str | None = None,
        age: str | None = None,
        limit: int = LIMIT_DEFAULT,
        cursor: str | None = None,
        min_age_s: float | None = None,
    ) -> Record:
        """`{"items": [exception, ...], "next": cursor or null}`, oldest first."""
        if state and state not in STATES:
            raise ApiError(400, "invalid_query", f"state: one of {list(STATES)}")
        if age and age not in AGE_NAMES:
            raise ApiError(400, "invalid_query", f"age: one of {list(AGE_NAMES)}")
        if not 1 <= limit <= LIMIT_MAX:
            raise ApiError(400, "invalid_query", f"limit: from 1 to {LIMIT_MAX}")
        for name, value in (
            ("rule", rule),
            ("entity_type", entity_type),
            ("entity_id", entity_id),
            ("assignee", assignee),
        ):
            if value is not None and len(value) > FILTER_MAX:
                raise ApiError(400, "invalid_query", f"{name}: at most {FILTER_MAX} characters")
        if min_age_s is not None and not 0 <= min_age_s <= 10**10:
            raise ApiError(400, "invalid_query", "min_age_s: seconds, from 0")
        filters = Filters(state, rule, entity_type, entity_id, assignee, age, min_age_s)
        try:
            return self.view.page(filters, limit, cursor or None).to_json()
        except CursorError as exc:
            raise ApiError(400, "invalid_query", f"cursor: {exc}") from None

    def get_exception(self, exception_id: str) -> Record:
        """The exception's latest version, plus `history` (oldest first) and `trail`."""
        record = self.view.exception(exception_id)
        if record is None:
            raise ApiError(404, "unknown_exception", f"no exception {exception_id!r}")
        record["age"] = self.view.age(exception_id)
        record["history"] = self.view.history(exception_id)
        record["trail"] = self.view.trail(exception_id)
        return record

    def summary(self) -> Record:
        out = self.view.summary()
        out["view"] = {"ready": self.view_ready, "exceptions": len(self.view)}
        return out

    # -- actions --------------------------------------------------------------
    async def act(
        self,
        exception_id: str,
        action: str,
        note: str | None,
        who: str,
        assignee: str | None = None,
        action_id: str | None = None,
    ) -> Record:
        """Record an action on `ops.actions`; `{"action_id"}` once the broker has it."""
        request = ActionRequest(action, note or None, assignee, action_id)
        request.check()
        if note is not None and len(note) > NOTE_MAX:
            raise ApiError(422, "invalid_body", f"note: at most {NOTE_MAX} characters")
        if action_id is not None:
            done = self._accepted.get(action_id)
            outcome = self.view.outcome(action_id)
            if outcome is not None:
                done = str(outcome.get("exception_id"))
            if done is not None:
                if done != exception_id:
                    raise ApiError(
                        409, "action_id_conflict", f"action_id {action_id!r} names another action"
                    )
                return {"action_id": action_id}
        record = self.view.exception(exception_id)
        if record is None:
            raise ApiError(404, "unknown_exception", f"no exception {exception_id!r}")
        self._applicable(record, request)
        owner = str(record["owner"])
        key = owner.partition(":")[2]
        action_id = action_id or str(uuid.uuid4())
        now_ms = int(self.clock() * 1000)
        value = {
            "action_id": action_id,
            "action": action,
            "exception_id": exception_id,
            "rule": record["rule"],
            "entity_type": record["entity_type"],
            "entity_id": record["entity_id"],
            "owner": owner,
            "who": who,
            "note": note or None,
            "assignee": assignee,
            "requested_at": iso(now_ms),
            # its place in event time: what the operator's view had reached
            "at": iso(self.view.stream_ms if self.view.stream_ms is not None else now_ms),
        }
        n = self.rt.source_partitions.get(ACTIONS_TOPIC) or self.settings.partitions
        await self.sink.send(
            self.settings.topic(ACTIONS_TOPIC),
            stable_partition(key, n),
            self.codec.encode_key(ACTIONS_TOPIC, key),
            self.codec.encode_value(ACTIONS_TOPIC, self._action_form.from_json(value)),
            [(CORRELATION_HEADER, f"action:{action_id}".encode())],
        )
        self._accepted[action_id] = exception_id
        while len(self._accepted) > ACCEPTED_MEMORY:
            self._accepted.popitem(last=False)
        return {"action_id": action_id}

    @staticmethod
    def _applicable(record: Record, request: ActionRequest) -> None:
        """409 when the action does not apply to the exception as the view shows it."""
        if record.get("state") != "OPEN":
            raise ApiError(409, "not_open", f"the exception is {record.get('state')}, not OPEN")
        owner = str(record.get("owner") or "")
        if owner.partition(":")[0] not in ("worker", "project") or not owner.partition(":")[2]:
            raise ApiError(
                409,
                "no_owner",
                "the exception names no owner (written before actions existed); it "
                "gains one when its entity next changes",
            )
        if request.action == "post_to_next_open_period":
            if record.get("rule") != "TIME_IN_CLOSED_PERIOD":
                raise ApiError(
                    409,
                    "not_applicable",
                    "post_to_next_open_period applies to TIME_IN_CLOSED_PERIOD only",
                )
            if not (record.get("context") or {}).get("next_open_period"):
                raise ApiError(
                    409, "no_open_period", "no open period follows the entry's closed one"
                )

    # -- entities (owned by one worker) ----------------------------------------
    async def entity(
        self,
        entity_type: str,
        entity_id: str,
        *,
        authorization: str | None = None,
        forwarded: bool = False,
    ) -> Record:
        """`{"golden", "open_findings", "recent_commands"}` from the owning worker."""
        return (
            await self.entity_answer(
                entity_type, entity_id, authorization=authorization, forwarded=forwarded
            )
        ).body

    async def entity_answer(
        self,
        entity_type: str,
        entity_id: str,
        *,
        authorization: str | None = None,
        forwarded: bool = False,
    ) -> Answer:
        if entity_type not in ENTITY_TYPES:
            raise ApiError(
                404, "unknown_entity_type", f"entity types are {', '.join(ENTITY_TYPES)}"
            )
        path = f"/api/entities/{quote(entity_type, safe='')}/{quote(entity_id, safe='')}"
        lookup = self._lookup()
        place = lookup.owner_partition(self.settings, entity_type, entity_id)
        if place is not None and place not in self.rt.assigned:
            if forwarded:
                raise _moved()
            url = self.peers.owner_of(*place)
            if url is None or self.peers.is_self(url):
                raise _moved()
            return await self._forward(url, "GET", path, authorization)
        found = await lookup.find_entity(self.rt, entity_type, entity_id)
        if found is not None and not _blank(found):
            return Answer(found, self.self_url)
        if place is None and not forwarded:
            # keyed by another entity (its worker): only asking every worker can tell
            for url in self.peers.others():
                try:
                    reply = await self._forward(url, "GET", path, authorization)
                except ApiError as exc:
                    if exc.status == 404:
                        continue
                    raise
                return reply
        raise ApiError(404, "unknown_entity", f"no {entity_type} {entity_id!r}")

    async def validate_project(
        self, body: Any, *, authorization: str | None = None, forwarded: bool = False
    ) -> Record:
        return (
            await self.validate_answer(body, authorization=authorization, forwarded=forwarded)
        ).body

    async def validate_answer(
        self, body: Any, *, authorization: str | None = None, forwarded: bool = False
    ) -> Answer:
        """The governance gate's checks for a would-be project, from a worker holding
        project state (any project-keyed partition: reference data is everywhere)."""
        request = _validate_body(body)
        result = await self._lookup().validate_project(self.rt, request)
        if result is not None:
            return Answer(result, self.self_url)
        if forwarded:
            raise _moved()
        from pssync.streams.agents.base import PROJECT_KEYED

        for url in self.peers.holders_of(self.settings.internal_topic(PROJECT_KEYED)):
            if not self.peers.is_self(url):
                raw = json.dumps(request).encode()
                return await self._forward(url, "POST", "/api/validate/project", authorization, raw)
        raise _moved()

    async def _forward(
        self, url: str, method: str, path: str, authorization: str | None, body: bytes | None = None
    ) -> Answer:
        try:
            reply = await self.peers.call(url, method, path, authorization, body)
        except PeerUnreachable:
            raise ApiError(
                503,
                "owner_unreachable",
                "the worker owning it did not answer",
                {"Retry-After": "2"},
            ) from None
        if reply.status == 200 and isinstance(reply.body, dict):
            return Answer(reply.body, reply.served_by, self.self_url)
        error = reply.body if isinstance(reply.body, dict) else {}
        raise ApiError(
            reply.status if reply.status >= 400 else 502,
            str(error.get("error") or "forward_failed"),
            str(error.get("message") or f"the owning worker answered {reply.status}"),
            reply.headers,
        )


def _moved() -> ApiError:
    return ApiError(
        503,
        "owner_unknown",
        "the worker owning it is not known here yet (a rebalance is under way); retry",
        {"Retry-After": "2"},
    )


def _validate_body(body: Any) -> Record:
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_body", "the body must be a JSON object")
    unknown = sorted(set(body) - {"crm_account_id", "legal_entity", "currency", "sow_id"})
    if unknown:
        raise ApiError(422, "invalid_body", f"{unknown[0]}: unknown field")
    return {
        "crm_account_id": _text(body.get("crm_account_id"), "crm_account_id", FILTER_MAX, True),
        "legal_entity": _text(body.get("legal_entity"), "legal_entity", FILTER_MAX, True),
        "currency": _text(body.get("currency"), "currency", FILTER_MAX, True),
        "sow_id": _text(body.get("sow_id"), "sow_id", FILTER_MAX),
    }


__all__ = [
    "ActionRequest",
    "Answer",
    "ApiError",
    "KafkaActionSink",
    "OpsService",
]
