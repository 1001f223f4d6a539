"""The operations queue without Kafka: the read model (`api.queue`) and the service's
validation and recording of actions (`api.service`) over a fake sink."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from pssync.api.forward import Directory, Peers
from pssync.api.queue import (
    CursorError,
    Filters,
    QueueView,
    age_bucket,
    decode_cursor,
    encode_cursor,
    instant_ms,
)
from pssync.api.service import ActionRequest, ApiError, OpsService
from pssync.connectors.kafka import stable_partition
from pssync.settings import Settings

EXC, DRIFT, OUT = "sync.exceptions", "sync.drift", "ops.action_outcomes"
HOUR = 3_600_000
T0 = instant_ms("2026-03-01T00:00:00.000Z") or 0


def at(ms: int) -> str:
    return (
        dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="milliseconds")[:-6]
        + "Z"
    )


def exception(
    eid: str,
    *,
    rule: str = "TIME_IN_CLOSED_PERIOD",
    state: str = "OPEN",
    created: int = T0,
    entity_type: str = "time_entry",
    entity_id: str = "T1",
    owner: str | None = "worker:W1",
    context: dict[str, str | None] | None = None,
    resolution: dict[str, Any] | None = None,
    assignee: str | None = None,
    correlation: str = "corr-1",
    causation: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "exception_id": eid,
        "rule": rule,
        "state": state,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "reason": "why",
        "context": context if context is not None else {"next_open_period": "LE1:2026-03"},
        "remediation": "do this",
        "created_at": at(created),
        "resolution": resolution,
        "correlation_id": correlation,
        "causation": causation or [],
        "owner": owner,
        "assignee": assignee,
    }


def alert(
    aid: str, rule: str, severity: str, state: str = "OPEN", detected: int = T0
) -> dict[str, Any]:
    return {
        "alert_id": aid,
        "rule": rule,
        "severity": severity,
        "state": state,
        "entity_type": "worker",
        "entity_id": "W1",
        "fields": [],
        "detected_at": at(detected),
        "resolved_at": None if state == "OPEN" else at(detected + HOUR),
        "remediation": "fix it",
        "correlation_id": "c",
        "causation": [],
    }


def ref(offset: int) -> dict[str, Any]:
    return {"topic": "cdc.psa.time_entry", "partition": 0, "offset": offset, "key": "T1"}


def feed(view: QueueView, topic: str, value: dict[str, Any], ts: int = 1, offset: int = 0) -> None:
    key = value.get("exception_id") or value.get("alert_id")
    view.apply(topic, key, value, ts, offset)


# -- the read model ----------------------------------------------------------------


def test_latest_version_history_and_trail() -> None:
    view = QueueView()
    opened = exception("E1", causation=[ref(1)])
    feed(view, EXC, opened, ts=10)
    feed(view, EXC, opened | {"assignee": "bob", "correlation_id": "action:a1"}, ts=20)
    resolution = {"who": "ops-alice", "action": "dismiss", "note": "dup", "when": at(T0 + HOUR)}
    closed = opened | {
        "state": "DISMISSED",
        "assignee": "bob",
        "resolution": resolution,
        "correlation_id": "action:a2",
        "causation": [ref(1), ref(7)],
    }
    feed(view, EXC, closed, ts=30)
    outcome = {
        "action_id": "a2",
        "action": "dismiss",
        "exception_id": "E1",
        "outcome": "APPLIED",
        "detail": "dismissed",
        "who": "ops-alice",
        "note": "dup",
        "at": at(T0 + HOUR),
        "correlation_id": "action:a2",
    }
    feed(view, OUT, outcome, ts=30)

    latest = view.exception("E1")
    assert latest is not None
    assert latest["state"] == "DISMISSED"
    assert latest["resolution"]["who"] == "ops-alice"
    history = view.history("E1")
    assert [(h["kind"], h.get("state"), h.get("outcome")) for h in history] == [
        ("state", "OPEN", None),
        ("state", "OPEN", None),
        ("state", "DISMISSED", None),
        ("action", None, "APPLIED"),
    ]
    assert history[0]["at"] == opened["created_at"]
    assert history[1]["assignee"] == "bob"
    assert history[2]["at"] == resolution["when"]
    assert history[3]["who"] == "ops-alice"
    trail = view.trail("E1")
    assert [t["correlation_id"] for t in trail] == ["corr-1", "action:a1", "action:a2"]
    assert [r["offset"] for r in trail[0]["causation"]] == [1]
    assert [r["offset"] for r in trail[2]["causation"]] == [7]  # offset 1 only once
    assert view.outcome("a2") == outcome
    assert view.stream_ms == T0 + HOUR


def test_duplicates_add_nothing_and_never_regress() -> None:
    view = QueueView()
    opened = exception("E1")
    resolved = opened | {
        "state": "RESOLVED",
        "resolution": {"who": "pssync", "action": "AUTO_RESOLVED", "note": None, "when": at(T0)},
    }
    feed(view, EXC, opened, ts=1)
    feed(view, EXC, resolved, ts=2)
    feed(view, EXC, opened, ts=3)  # an at-least-once redelivery of the old version
    feed(view, EXC, resolved, ts=4)
    assert view.exception("E1")["state"] == "RESOLVED"  # type: ignore[index]
    assert [h["state"] for h in view.history("E1")] == ["OPEN", "RESOLVED"]
    outcome = {"action_id": "a1", "exception_id": "E1", "outcome": "APPLIED", "at": at(T0)}
    feed(view, OUT, outcome, ts=5)
    feed(view, OUT, outcome | {"outcome": "NOT_APPLICABLE"}, ts=6)
    assert [h.get("outcome") for h in view.history("E1")] == [None, None, "APPLIED"]
    view.apply(EXC, "E1", None, 5, 9)  # a tombstone changes nothing
    assert len(view) == 1


def test_listing_is_oldest_first_filtered_and_pages_stably() -> None:
    view = QueueView()
    for i in range(5):
        feed(view, EXC, exception(f"E{i}", created=T0 + i * HOUR, entity_id=f"T{i}"))
    feed(view, EXC, exception("X", created=T0 + 2 * HOUR, rule="TIME_MISSING_COST_RATE"))
    page = view.page(Filters(rule="TIME_IN_CLOSED_PERIOD"), 2)
    assert [r["exception_id"] for r in page.items] == ["E0", "E1"]
    assert page.next is not None
    # a new exception older than the cursor, and one between: neither shifts the next page
    feed(view, EXC, exception("E-old", created=T0 - HOUR))
    feed(view, EXC, exception("E2b", created=T0 + 2 * HOUR + 1))
    page2 = view.page(Filters(rule="TIME_IN_CLOSED_PERIOD"), 2, page.next)
    assert [r["exception_id"] for r in page2.items] == ["E2", "E2b"]
    page3 = view.page(Filters(rule="TIME_IN_CLOSED_PERIOD"), 2, page2.next)
    assert [r["exception_id"] for r in page3.items] == ["E3", "E4"]
    assert page3.next is None
    # same created_at: exception_id breaks the tie
    assert [r["exception_id"] for r in view.page(Filters(entity_id="T2"), 10).items] == ["E2"]
    everything = view.page(Filters(), 100).items
    assert [r["exception_id"] for r in everything][:4] == ["E-old", "E0", "E1", "E2"]
    assert [r["exception_id"] for r in everything][4] == "X"


def test_filters_state_assignee_and_age_on_stream_time() -> None:
    view = QueueView()
    feed(view, EXC, exception("old", created=T0))
    feed(view, EXC, exception("new", created=T0 + 3 * 86_400_000, assignee="bob"))
    feed(view, EXC, exception("gone", created=T0, state="RESOLVED"))
    # the firm's stream time is the newest event time seen: 3 days after T0
    assert view.age("old") == "1d_to_7d"
    assert view.age("new") == "under_1h"
    ids = lambda f: [r["exception_id"] for r in view.page(f, 10).items]  # noqa: E731
    assert ids(Filters(state="OPEN")) == ["old", "new"]
    assert ids(Filters(assignee="bob")) == ["new"]
    assert ids(Filters(age="1d_to_7d", state="OPEN")) == ["old"]
    assert ids(Filters(age="over_7d")) == []


def test_summary_counts_open_exceptions_and_alerts() -> None:
    view = QueueView()
    feed(view, EXC, exception("a", created=T0))
    feed(view, EXC, exception("b", created=T0 + 10 * 86_400_000))
    feed(view, EXC, exception("c", rule="TIME_MISSING_COST_RATE", created=T0 + 10 * 86_400_000))
    feed(view, EXC, exception("d", state="DISMISSED"))
    feed(view, DRIFT, alert("x", "WORKER_FIELD_DRIFT", "WARNING"))
    feed(view, DRIFT, alert("y", "WORKER_FIELD_DRIFT", "CRITICAL"))
    feed(view, DRIFT, alert("z", "PROJECT_FIELD_DRIFT", "WARNING"))
    feed(view, DRIFT, alert("z", "PROJECT_FIELD_DRIFT", "WARNING", state="RESOLVED"))
    summary = view.summary()
    assert summary["open_exceptions"]["total"] == 3
    assert summary["open_exceptions"]["by_rule"]["TIME_IN_CLOSED_PERIOD"] == {
        "under_1h": 1,
        "1h_to_1d": 0,
        "1d_to_7d": 0,
        "over_7d": 1,
    }
    assert summary["open_exceptions"]["by_rule"]["TIME_MISSING_COST_RATE"]["under_1h"] == 1
    assert summary["open_alerts"] == {
        "total": 2,
        "by_rule": {"WORKER_FIELD_DRIFT": {"INFO": 0, "WARNING": 1, "CRITICAL": 1}},
    }
    assert summary["stream_time"] == at(T0 + 10 * 86_400_000)  # the newest event time
    assert [a["alert_id"] for a in view.open_alerts()] == ["x", "y"]


def test_cursor_round_trip_and_rejects_foreign_ones() -> None:
    cursor = encode_cursor(T0, "6f1c1d1e-8a55-4b8e-9a39-0c7f6f3a5e21")
    assert decode_cursor(cursor) == (T0, "6f1c1d1e-8a55-4b8e-9a39-0c7f6f3a5e21")
    for bad in ("", "abc", "12", "x.y", "1.a b", "1." + "a" * 201):
        with pytest.raises(CursorError):
            decode_cursor(bad)
    assert age_bucket(0) == "under_1h"
    assert age_bucket(HOUR) == "1h_to_1d"
    assert age_bucket(7 * 86_400_000) == "over_7d"


# -- the service: validating and recording actions ---------------------------------


class FakeCodec:
    def encode_key(self, topic: str, key: Any) -> bytes:
        return f"{topic}|{key}".encode()

    def encode_value(self, topic: str, value: Any) -> bytes:
        self.last = (topic, value)
        return b"value"


class FakeSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int, bytes, bytes, list[tuple[str, bytes]]]] = []

    async def send(
        self, topic: str, partition: int, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        self.sent.append((topic, partition, key, value, headers))


class FakeRt:
    assigned: set[tuple[str, int]] = set()
    source_partitions: dict[str, int] = {}


def service_with(*records: dict[str, Any]) -> tuple[OpsService, FakeSink, FakeCodec]:
    settings = Settings(topic_prefix="t.", partitions=4)
    view = QueueView()
    for r in records:
        feed(view, EXC, r)
    sink, codec = FakeSink(), FakeCodec()
    peers = Peers(Directory(), "http://me:1")
    clock = lambda: 1_900_000_000.0  # noqa: E731
    service = OpsService(settings, codec, view, sink, peers, FakeRt(), clock=clock)  # type: ignore[arg-type]
    return service, sink, codec


def act(service: OpsService, eid: str, action: str, **kw: Any) -> dict[str, Any]:
    return asyncio.run(
        service.act(eid, action, kw.pop("note", None), kw.pop("who", "ops-alice"), **kw)
    )


def refused(status: int, code: str, call: Any) -> None:
    with pytest.raises(ApiError) as info:
        call()
    assert (info.value.status, info.value.code) == (status, code), info.value.message


def test_act_records_the_action_keyed_by_owner_with_actor_and_event_time() -> None:
    service, sink, codec = service_with(
        exception("E1", created=T0), exception("E2", created=T0 + HOUR, owner="project:P9")
    )
    accepted = act(service, "E1", "post_to_next_open_period", note="move it", action_id="client-1")
    assert accepted == {"action_id": "client-1"}
    ((topic, partition, key, _, headers),) = sink.sent
    assert topic == "t.ops.actions"
    assert key == b"ops.actions|W1"
    assert partition == stable_partition("W1", 4)  # as the ingest partitions
    assert headers == [("correlation_id", b"action:client-1")]
    name, value = codec.last
    assert name == "ops.actions"
    assert value["who"] == "ops-alice"
    assert value["owner"] == "worker:W1"
    assert value["note"] == "move it"
    assert (value["rule"], value["entity_type"], value["entity_id"]) == (
        "TIME_IN_CLOSED_PERIOD",
        "time_entry",
        "T1",
    )
    # `at`: the firm's stream time in the view (E2's created_at); requested_at: the clock
    assert int(value["at"].timestamp() * 1000) == T0 + HOUR
    assert int(value["requested_at"].timestamp()) == 1_900_000_000
    generated = act(service, "E2", "dismiss")["action_id"]
    assert len(generated) == 36
    assert sink.sent[1][2] == b"ops.actions|P9"


def test_act_refusals() -> None:
    service, sink, _ = service_with(
        exception("open"),
        exception("other", rule="TIME_MISSING_COST_RATE"),
        exception("no-next", context={"next_open_period": None}),
        exception("closed", state="RESOLVED"),
        exception("legacy", owner=None),
    )
    refused(404, "unknown_exception", lambda: act(service, "nope", "dismiss"))
    refused(409, "not_open", lambda: act(service, "closed", "dismiss"))
    refused(409, "not_applicable", lambda: act(service, "other", "post_to_next_open_period"))
    refused(409, "no_open_period", lambda: act(service, "no-next", "post_to_next_open_period"))
    refused(409, "no_owner", lambda: act(service, "legacy", "retry"))
    refused(422, "invalid_body", lambda: act(service, "open", "explode"))
    refused(422, "invalid_body", lambda: act(service, "open", "dismiss", action_id="a b"))
    refused(422, "invalid_body", lambda: act(service, "open", "dismiss", note="x" * 2001))
    refused(422, "invalid_body", lambda: act(service, "open", "dismiss", assignee="bob"))
    assert sink.sent == []
    act(service, "other", "assign", assignee="bob")
    act(service, "other", "retry")
    assert len(sink.sent) == 2


def test_act_retry_with_the_same_action_id_records_nothing_new() -> None:
    service, sink, _ = service_with(exception("E1"), exception("E2"))
    assert act(service, "E1", "dismiss", action_id="k1") == {"action_id": "k1"}
    assert act(service, "E1", "dismiss", action_id="k1") == {"action_id": "k1"}
    assert len(sink.sent) == 1
    refused(409, "action_id_conflict", lambda: act(service, "E2", "dismiss", action_id="k1"))
    # applied already (its outcome in the view; the exception no longer OPEN): still 202
    feed(service.view, EXC, exception("E2", state="DISMISSED"))
    feed(service.view, OUT, {"action_id": "k2", "exception_id": "E2", "at": at(T0)})
    assert act(service, "E2", "dismiss", action_id="k2") == {"action_id": "k2"}
    assert len(sink.sent) == 1


def test_action_request_from_json() -> None:
    assert ActionRequest.from_json({"action": "dismiss", "note": "n"}) == ActionRequest(
        "dismiss", "n"
    )
    assert ActionRequest.from_json({"action": "assign", "assignee": None}).assignee is None
    for body in (
        None,
        [],
        {},
        {"action": 3},
        {"action": "dismiss", "extra": 1},
        {"action": "dismiss", "note": 5},
        {"action": "dismiss", "action_id": ""},
    ):
        refused(422, "invalid_body", lambda body=body: ActionRequest.from_json(body))


def test_list_exceptions_rejects_bad_queries() -> None:
    service, _, _ = service_with(exception("E1"))
    assert service.list_exceptions()["items"][0]["exception_id"] == "E1"
    refused(400, "invalid_query", lambda: service.list_exceptions(state="SHUT"))
    refused(400, "invalid_query", lambda: service.list_exceptions(age="ancient"))
    refused(400, "invalid_query", lambda: service.list_exceptions(limit=0))
    refused(400, "invalid_query", lambda: service.list_exceptions(limit=501))
    refused(400, "invalid_query", lambda: service.list_exceptions(cursor="nope"))
    refused(400, "invalid_query", lambda: service.list_exceptions(rule="r" * 201))
    detail = service.get_exception("E1")
    assert [h["state"] for h in detail["history"]] == ["OPEN"]
    assert detail["trail"] == [{"correlation_id": "corr-1", "causation": []}]
    refused(404, "unknown_exception", lambda: service.get_exception("E9"))


# -- ownership and forwarding (no HTTP: a fake peer call) ----------------------------


def test_directory_newest_claim_wins_per_partition() -> None:
    from pssync.api.forward import Claim

    directory = Directory()
    directory.apply(0, Claim("http://a:1", {"t-keyed": [0, 1, 2]}))
    assert directory.owner_of("t-keyed", 2) == "http://a:1"
    directory.apply(1, Claim("http://b:1", {"t-keyed": [2]}))  # a rebalance moved p2
    assert [directory.owner_of("t-keyed", p) for p in range(3)] == ["http://a:1"] * 2 + [
        "http://b:1"
    ]
    assert directory.holders_of("t-keyed") == ["http://a:1", "http://b:1"]
    directory.apply(2, Claim("http://b:1", {}))  # b stopped: withdrew its claim
    assert directory.owner_of("t-keyed", 2) == "http://a:1"  # stale, until a claims again
    assert directory.members() == ["http://a:1"]
    directory.apply(1, Claim("http://b:1", {"t-keyed": [2]}))  # an older record: ignored
    assert directory.members() == ["http://a:1"]
    claim = Claim("http://a:1/", {"t-keyed": [1, 0]})
    assert Claim.from_bytes(claim.to_bytes()) == Claim("http://a:1", {"t-keyed": [0, 1]})
    for raw in (b"{}", b'{"v": 2, "url": "x", "partitions": {}}', b'{"v": 1}'):
        with pytest.raises(ValueError, match="claim"):
            Claim.from_bytes(raw)


class FakeLookup:
    def __init__(self, found: dict[str, Any] | None) -> None:
        self.found = found

    def owner_partition(self, settings: Settings, entity_type: str, entity_id: str) -> Any:
        if entity_type == "worker":
            return ("t.worker-keyed", 1)
        return None

    async def find_entity(self, rt: Any, entity_type: str, entity_id: str) -> Any:
        return self.found

    async def validate_project(self, rt: Any, body: dict[str, Any]) -> Any:
        return None

    def held_partitions(self, rt: Any, internal: str) -> list[int]:
        return []


def test_entity_served_here_forwarded_to_the_owner_or_asked_around() -> None:
    from pssync.api.forward import Claim, Reply

    service, _, _ = service_with()
    calls: list[tuple[str, str, str | None]] = []

    async def call(url: str, method: str, path: str, auth: str | None, body: Any = None) -> Reply:
        calls.append((url, path, auth))
        if url == "http://c:1":
            return Reply(404, {"error": "unknown_entity", "message": "no"}, url)
        return Reply(200, {"golden": {"id": path}}, url)

    service.peers.call = call  # type: ignore[method-assign]
    found = {"golden": {"worker_id": "W1"}, "open_findings": [], "recent_commands": []}
    service._lookup = lambda: FakeLookup(found)  # type: ignore[assignment, return-value]
    # held here: answered here
    service.rt.assigned = {("t.worker-keyed", 1)}
    answer = asyncio.run(service.entity_answer("worker", "W1"))
    assert (answer.body, answer.served_by, answer.forwarded_by) == (found, "http://me:1", None)
    # held elsewhere: forwarded once, with the caller's Authorization
    service.rt.assigned = set()
    refused(503, "owner_unknown", lambda: asyncio.run(service.entity_answer("worker", "W1")))
    service.peers.directory.apply(0, Claim("http://b:1", {"t.worker-keyed": [1]}))
    answer = asyncio.run(service.entity_answer("worker", "W/1", authorization="Bearer x"))
    assert (answer.served_by, answer.forwarded_by) == ("http://b:1", "http://me:1")
    assert calls == [("http://b:1", "/api/entities/worker/W%2F1", "Bearer x")]
    # a forwarded request is never forwarded again
    refused(
        503,
        "owner_unknown",
        lambda: asyncio.run(service.entity_answer("worker", "W1", forwarded=True)),
    )
    # keyed by another entity: here first, then every other worker until one has it
    service._lookup = lambda: FakeLookup(None)  # type: ignore[assignment, return-value]
    service.peers.directory.apply(1, Claim("http://c:1", {"t.worker-keyed": [0]}))
    calls.clear()
    answer = asyncio.run(service.entity_answer("time_entry", "T1"))
    assert answer.served_by == "http://b:1"
    assert [c[0] for c in calls] == ["http://b:1"]
    service.peers.directory.apply(2, Claim("http://b:1", {}))
    refused(404, "unknown_entity", lambda: asyncio.run(service.entity_answer("time_entry", "T1")))
    refused(404, "unknown_entity_type", lambda: asyncio.run(service.entity_answer("robot", "R")))
