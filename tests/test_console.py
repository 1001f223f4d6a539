"""The console without a browser or Kafka: its pages, sign-in, CSRF and actions.

The console runs on a bare aiohttp application over a real `OpsService` and
`QueueView` (fed with exception records as the feed would), with a sink that keeps
what would go to `ops.actions`; aiohttp's test client plays the browser.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from pssync.api.auth import TokenBook, hash_token
from pssync.api.console import (
    COOKIE,
    csrf_token,
    decode_session,
    encode_session,
    install,
    safe_next,
)
from pssync.api.console_pages import (
    STYLE_HASH,
    QueueQuery,
    Viewer,
    format_age,
    queue_page,
)
from pssync.api.forward import Directory, Peers
from pssync.api.queue import QueueView
from pssync.api.service import OpsService
from pssync.avro.contract import EXCEPTIONS_TOPIC, OUTCOMES_TOPIC
from pssync.connectors.kafka import stable_partition
from pssync.settings import Settings

Record = dict[str, Any]

ALICE = "alice-Secret-token-7f3a9"  # read + act
DASH = "dash-Secret-token-0c41e"  # read only
BOOK = TokenBook.from_spec(f"ops-alice:read+act:{hash_token(ALICE)};dash:read:{hash_token(DASH)}")


def exception(
    n: int,
    rule: str,
    entity_id: str,
    created_at: str,
    *,
    entity_type: str = "time_entry",
    state: str = "OPEN",
    context: dict[str, str | None] | None = None,
    reason: str | None = None,
) -> Record:
    return {
        "exception_id": f"ex-{n:03d}",
        "rule": rule,
        "state": state,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "reason": reason or f"reason {n}",
        "context": context or {"worker_id": "W1"},
        "remediation": f"remediation {n}",
        "created_at": created_at,
        "resolution": None,
        "correlation_id": f"corr-{n}",
        "causation": [
            {
                "topic": "cdc.psa.time_entry",
                "partition": 2,
                "offset": 4000 + n,
                "key": entity_id,
                "lsn": 300 + n,
                "ts_ms": 1_780_000_000_300,
            }
        ],
        "owner": "worker:W1",
        "assignee": None,
    }


CLOSED = exception(
    1,
    "TIME_IN_CLOSED_PERIOD",
    "T3",
    "2026-03-02T06:00:00.000Z",
    context={"period_id": "LE1:2026-02", "next_open_period": "LE1:2026-03"},
)
NO_RATE = exception(2, "TIME_MISSING_COST_RATE", "T4", "2026-03-02T08:00:00.000Z")
GONE = exception(3, "TIME_FOR_INACTIVE_WORKER", "T5", "2026-03-02T08:30:00.000Z", state="DISMISSED")
# the latest event time the view has seen: 09:12, so CLOSED is 3h 12m old
LATEST = exception(
    4,
    "PROJECT_GATE_FAILED",
    "P4",
    "2026-03-02T09:12:00.000Z",
    entity_type="project",
    reason="<script>alert('x')</script> & more",
)


class Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int, bytes, bytes, list[tuple[str, bytes]]]] = []

    async def send(
        self, topic: str, partition: int, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        self.sent.append((topic, partition, key, value, headers))


class Codec:
    def encode_key(self, topic: str, key: Any) -> bytes:
        return str(key).encode()

    def encode_value(self, topic: str, value: Any) -> bytes:
        return json.dumps(value, default=str).encode()


class Lookup:
    def owner_partition(self, settings: Settings, entity_type: str, entity_id: str) -> None:
        return None

    async def find_entity(self, rt: Any, entity_type: str, entity_id: str) -> Record | None:
        if (entity_type, entity_id) != ("worker", "W1"):
            return None
        return {
            "golden": {"worker_id": "W1", "full_name": "Ada <Lovelace>", "cost_center": "CC1"},
            "open_findings": [NO_RATE],
            "recent_commands": [
                {
                    "command_id": "cmd-1",
                    "type": "UPSERT_EMPLOYEE",
                    "issued_at": "2026-03-01T10:00:00.000Z",
                    "payload": {"worker_id": "W1"},
                }
            ],
        }

    async def validate_project(self, rt: Any, body: Record) -> None:
        return None

    def held_partitions(self, rt: Any, internal: str) -> list[int]:
        return []


class Runtime:
    source_partitions: dict[str, int] = {}
    assigned: set[tuple[str, int]] = set()


def make_service(records: list[Record], sink: Sink) -> OpsService:
    view = QueueView()
    for offset, record in enumerate(records):
        view.apply(EXCEPTIONS_TOPIC, record["exception_id"], record, 1_000 + offset, offset)
    service = OpsService(
        Settings(),
        Codec(),  # type: ignore[arg-type]
        view,
        sink,
        Peers(Directory(), "http://127.0.0.1:6066"),
        Runtime(),
        lookup=Lookup,  # type: ignore[arg-type]
    )
    service.view_ready = True
    return service


Scenario = Callable[[TestClient[web.Request, web.Application], OpsService], Awaitable[None]]


def run_console(scenario: Scenario, records: list[Record] | None = None) -> Sink:
    sink = Sink()
    service = make_service([CLOSED, NO_RATE, GONE, LATEST] if records is None else records, sink)

    async def main() -> None:
        app = web.Application()
        install(app, service, BOOK)
        async with TestClient(TestServer(app)) as client:
            await scenario(client, service)

    asyncio.run(main())
    return sink


async def sign_in(
    client: TestClient[web.Request, web.Application], token: str, next_path: str = "/console"
) -> ClientResponse:
    form = await client.get("/console/login")
    found = re.search(r'name="nonce" value="([^"]+)"', await form.text())
    assert found
    return await client.post(
        "/console/login",
        data={"token": token, "nonce": found.group(1), "next": next_path},
        allow_redirects=False,
    )


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert found, page
    return found.group(1)


# -- pure parts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "shown"),
    [
        (0, "<1m"),
        (59_999, "<1m"),
        (45 * 60_000, "45m"),
        ((3 * 60 + 12) * 60_000, "3h 12m"),
        ((2 * 24 + 4) * 3_600_000 + 5 * 60_000, "2d 4h"),
        (-5_000, "<1m"),
        (None, ""),
    ],
)
def test_ages_read_as_hours_and_minutes(ms: int | None, shown: str) -> None:
    assert format_age(ms) == shown


def test_the_session_cookie_round_trips_and_csrf_binds_token_and_session() -> None:
    value = encode_session("s" * 32, "tok;en with spaces=")
    assert ";" not in value
    assert " " not in value
    assert decode_session(value) == ("s" * 32, "tok;en with spaces=")
    assert decode_session("short.dG9r") is None
    assert decode_session("s" * 32 + ".%%%") is None
    assert decode_session(None) is None
    base = csrf_token("token-a", "s" * 32)
    assert base != csrf_token("token-b", "s" * 32)
    assert base != csrf_token("token-a", "t" * 32)


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("/console/exceptions/ex-1", "/console/exceptions/ex-1"),
        ("/console?rule=X", "/console?rule=X"),
        ("https://evil.example/console", "/console"),
        ("//evil.example/console", "/console"),
        ("/api/exceptions", "/console"),
        ("/console/login", "/console"),
        ("/console\\..\\x", "/console"),
        (None, "/console"),
    ],
)
def test_after_sign_in_only_console_paths(given: str | None, kept: str) -> None:
    assert safe_next(given) == kept


def test_queue_query_keeps_filters_in_its_links() -> None:
    query = QueueQuery.from_query({"rule": "TIME_IN_CLOSED_PERIOD", "entity_id": "T 3&x"})
    assert query.state == "OPEN"
    assert query.filters()["state"] == "OPEN"
    assert QueueQuery.from_query({"state": "any"}).filters()["state"] is None
    url = query.url("123.ex-9")
    assert url == "/console?rule=TIME_IN_CLOSED_PERIOD&entity_id=T+3%26x&cursor=123.ex-9"


def test_record_text_is_escaped() -> None:
    page = queue_page(
        Viewer("ops-alice", True, "c" * 64),
        QueueQuery(),
        {"items": [LATEST], "next": None},
        {"stream_time": "2026-03-02T09:12:00.000Z"},
    )
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page


# -- over HTTP ------------------------------------------------------------------------


def test_sign_in_keeps_the_token_in_a_strict_http_only_cookie() -> None:
    async def scenario(client: TestClient[web.Request, web.Application], _: OpsService) -> None:
        first = await client.get("/console/exceptions/ex-001", allow_redirects=False)
        assert first.status == 303
        assert first.headers["Location"] == "/console/login?next=%2Fconsole%2Fexceptions%2Fex-001"
        signed = await sign_in(client, ALICE, "/console/exceptions/ex-001")
        assert signed.status == 303
        assert signed.headers["Location"] == "/console/exceptions/ex-001"
        cookie = next(
            v for k, v in signed.headers.items() if k == "Set-Cookie" and COOKIE + "=" in v
        )
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert "Path=/console" in cookie
        assert "Secure" not in cookie  # plain http here
        assert ALICE not in cookie  # encoded, though still the token
        page = await client.get("/console/exceptions/ex-001")
        text = await page.text()
        assert page.status == 200
        assert ALICE not in text
        assert f"style-src '{STYLE_HASH}'" in page.headers["Content-Security-Policy"]
        assert "script-src" not in page.headers["Content-Security-Policy"]
        assert page.headers["Cache-Control"] == "no-store"

        # behind a TLS-terminating proxy the cookie is Secure
        client.session.cookie_jar.clear()
        form = await client.get("/console/login", headers={"X-Forwarded-Proto": "https"})
        assert "Secure" in form.headers["Set-Cookie"]

    run_console(scenario)


def test_sign_in_refuses_unknown_tokens_and_foreign_forms() -> None:
    async def scenario(client: TestClient[web.Request, web.Application], _: OpsService) -> None:
        wrong = await sign_in(client, "not-a-token")
        assert wrong.status == 401
        assert "That token is not known." in await wrong.text()
        assert COOKIE + "=" not in wrong.headers.get("Set-Cookie", "")
        # a form posted without the nonce of a form this console served (login CSRF)
        client.session.cookie_jar.clear()
        forged = await client.post(
            "/console/login", data={"token": ALICE, "nonce": "x" * 32}, allow_redirects=False
        )
        assert forged.status == 400
        assert (await client.get("/console", allow_redirects=False)).status == 303

    run_console(scenario)


def test_the_queue_filters_pages_and_shows_ages_on_stream_time() -> None:
    many = [CLOSED, LATEST] + [
        exception(10 + i, "TIME_MISSING_COST_RATE", f"T{100 + i}", f"2026-03-02T07:{i:02d}:00.000Z")
        for i in range(55)
    ]

    async def scenario(client: TestClient[web.Request, web.Application], _: OpsService) -> None:
        await sign_in(client, DASH)
        first = await (await client.get("/console")).text()
        rows = re.findall(r'href="/console/exceptions/(ex-\d+)"', first)
        assert len(rows) == 50
        assert rows[0] == "ex-001"  # oldest first
        assert "3h 12m" in first  # CLOSED, against the latest event time 09:12
        following = re.search(r'id="next-page" href="([^"]+)"', first)
        assert following
        second = await (await client.get(following.group(1).replace("&amp;", "&"))).text()
        rest = re.findall(r'href="/console/exceptions/(ex-\d+)"', second)
        assert len(rest) == 7
        assert not set(rest) & set(rows)
        assert 'id="next-page"' not in second

        only = await (await client.get("/console?rule=TIME_IN_CLOSED_PERIOD")).text()
        assert re.findall(r'href="/console/exceptions/(ex-\d+)"', only) == ["ex-001"]
        project = await (await client.get("/console?entity_type=project&entity_id=P4")).text()
        assert re.findall(r'href="/console/exceptions/(ex-\d+)"', project) == ["ex-004"]
        bad = await client.get("/console?age=forever")
        assert bad.status == 400
        assert "age: one of" in await bad.text()

    run_console(scenario, many)


def test_the_exception_page_shows_lineage_history_and_the_actions_that_apply() -> None:
    async def scenario(client: TestClient[web.Request, web.Application], _: OpsService) -> None:
        await sign_in(client, ALICE)
        closed = await (await client.get("/console/exceptions/ex-001")).text()
        for shown in (
            "reason 1",
            "remediation 1",
            "LE1:2026-03",
            "worker:W1",
            "corr-1",
            "cdc.psa.time_entry",
            "4001",  # the source offset
            "3h 12m",
            'id="history"',
            'id="act-post"',
            'id="act-dismiss"',
            'id="act-assign"',
            'href="/console/entities/time_entry/T3"',
        ):
            assert shown in closed, shown
        other = await (await client.get("/console/exceptions/ex-002")).text()
        assert 'id="act-dismiss"' in other
        assert 'id="act-post"' not in other  # not a closed-period entry
        gone = await (await client.get("/console/exceptions/ex-003")).text()
        assert "no longer open" in gone
        assert 'id="act-dismiss"' not in gone
        missing = await client.get("/console/exceptions/ex-999")
        assert missing.status == 404

    run_console(scenario)


def test_an_action_needs_the_session_csrf_and_carries_the_token_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    bodies: list[str] = []

    async def scenario(
        client: TestClient[web.Request, web.Application], service: OpsService
    ) -> None:
        await sign_in(client, ALICE)
        page = await (await client.get("/console/exceptions/ex-001")).text()
        bodies.append(page)
        target = "/console/exceptions/ex-001/actions"
        forged = await client.post(
            target, data={"action": "dismiss", "csrf": "0" * 64}, allow_redirects=False
        )
        assert forged.status == 403
        posted = await client.post(
            target,
            data={"action": "post_to_next_open_period", "note": "late", "csrf": csrf_of(page)},
            allow_redirects=False,
        )
        assert posted.status == 303, await posted.text()
        location = posted.headers["Location"]
        assert location.startswith("/console/exceptions/ex-001?accepted=")
        action_id = location.rpartition("=")[2]
        waiting = await (await client.get(location)).text()
        bodies.append(waiting)
        assert f"Action {action_id} accepted" in waiting
        assert "refresh" in waiting
        service.view.apply(
            OUTCOMES_TOPIC,
            "ex-001",
            {
                "action_id": action_id,
                "action": "post_to_next_open_period",
                "exception_id": "ex-001",
                "outcome": "APPLIED",
                "detail": "posted to LE1:2026-03",
                "who": "ops-alice",
                "note": "late",
                "at": "2026-03-02T09:12:00.000Z",
                "correlation_id": f"action:{action_id}",
            },
            5_000,
            99,
        )
        done = await (await client.get(location)).text()
        bodies.append(done)
        assert f"Action {action_id} accepted; outcome APPLIED: posted to LE1:2026-03." in done
        assign = await client.post(
            target,
            data={"action": "assign", "assignee": "", "csrf": csrf_of(page)},
            allow_redirects=False,
        )
        assert assign.status == 422
        assert "Name an assignee" in await assign.text()

    sink = run_console(scenario)
    assert len(sink.sent) == 1  # the forged form recorded nothing
    topic, partition, key, value, headers = sink.sent[0]
    action = json.loads(value)
    assert topic == "ops.actions"
    assert partition == stable_partition("W1", Settings().partitions)
    assert key == b"W1"
    assert action["who"] == "ops-alice"
    assert action["action"] == "post_to_next_open_period"
    assert action["note"] == "late"
    assert action["exception_id"] == "ex-001"
    assert headers == [("correlation_id", f"action:{action['action_id']}".encode())]
    assert all(ALICE not in body for body in bodies)
    assert ALICE not in caplog.text
    assert "ops-alice requested post_to_next_open_period" in caplog.text


def test_refusals_show_on_the_page() -> None:
    async def scenario(client: TestClient[web.Request, web.Application], _: OpsService) -> None:
        await sign_in(client, ALICE)
        csrf = csrf_of(await (await client.get("/console")).text())
        done = await client.post(
            "/console/exceptions/ex-003/actions", data={"action": "dismiss", "csrf": csrf}
        )
        assert done.status == 409
        assert "Not accepted: the exception is DISMISSED, not OPEN" in await done.text()
        wrong = await client.post(
            "/console/exceptions/ex-002/actions",
            data={"action": "post_to_next_open_period", "csrf": csrf},
        )
        assert wrong.status == 409
        assert "TIME_IN_CLOSED_PERIOD only" in await wrong.text()

    assert run_console(scenario).sent == []


def test_a_read_only_token_sees_no_action_and_cannot_act() -> None:
    async def scenario(client: TestClient[web.Request, web.Application], _: OpsService) -> None:
        await sign_in(client, DASH)
        page = await (await client.get("/console/exceptions/ex-001")).text()
        assert "dash · read only" in page
        assert 'id="act-dismiss"' not in page
        assert "lacks the act scope" in page
        refused = await client.post(
            "/console/exceptions/ex-001/actions",
            data={"action": "dismiss", "csrf": csrf_of(page)},
        )
        assert refused.status == 403

    assert run_console(scenario).sent == []


def test_the_entity_page_shows_golden_record_findings_and_commands() -> None:
    async def scenario(client: TestClient[web.Request, web.Application], _: OpsService) -> None:
        await sign_in(client, DASH)
        page = await (await client.get("/console/entities/worker/W1")).text()
        assert "Ada &lt;Lovelace&gt;" in page
        assert 'href="/console/exceptions/ex-002"' in page  # its open finding
        assert "UPSERT_EMPLOYEE" in page
        assert "cmd-1" in page
        unknown = await client.get("/console/entities/worker/W404")
        assert unknown.status == 404
        bad_type = await client.get("/console/entities/planet/X")
        assert bad_type.status == 404

    run_console(scenario)


def test_signing_out_ends_the_session() -> None:
    async def scenario(client: TestClient[web.Request, web.Application], _: OpsService) -> None:
        await sign_in(client, ALICE)
        csrf = csrf_of(await (await client.get("/console")).text())
        out = await client.post("/console/logout", data={"csrf": csrf}, allow_redirects=False)
        assert out.status == 303
        assert out.headers["Location"] == "/console/login?bye=1"
        assert (await client.get("/console", allow_redirects=False)).status == 303

    run_console(scenario)
