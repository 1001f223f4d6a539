"""Access to the worker's HTTP port, without Kafka: tokens, scopes, limits (`api.auth`),
through the real guard and routes on an in-process aiohttp server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import pickle
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pssync.api import auth
from pssync.api.auth import (
    Guard,
    RateLimiter,
    TokenBook,
    TokenBucket,
    TokenConfigError,
    hash_token,
    parse_tokens,
)
from pssync.api.routes import add_routes
from pssync.settings import Settings
from tests.test_api_queue import FakeCodec, FakeSink, exception, service_with

ALICE, DASH, BOT = "alice-secret-token-1", "dash-secret-token-2", "bot-secret-token-3"
TOKENS = (
    f"ops-alice:read+act:{hash_token(ALICE)};dash:read:{hash_token(DASH)};bot:act:{hash_token(BOT)}"
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def build(
    tokens: str = TOKENS, rate: float = 1000.0, burst: int = 1000, max_body: int = 1024
) -> tuple[web.Application, FakeSink, FakeCodec]:
    guard = Guard(TokenBook.from_spec(tokens), RateLimiter(rate, burst), max_body)
    app = web.Application(middlewares=[guard.middleware])
    for path in ("/health", "/ready", "/metrics", "/stats", "/router/", "/table/", "/"):
        app.router.add_get(path, _ok)
    app.router.add_get("/console/login", _ok)  # the console authenticates its own pages
    service, sink, codec = service_with(exception("E1"))
    add_routes(app, service, max_body)
    return app, sink, codec


def run(app: web.Application, body: Callable[[TestClient[Any, Any]], Awaitable[None]]) -> None:
    async def main() -> None:
        async with TestClient(TestServer(app)) as client:
            await body(client)

    asyncio.run(main())


async def status_and_json(resp: Any) -> tuple[int, Any]:
    return resp.status, json.loads(await resp.read() or b"null")


# -- configuration --------------------------------------------------------------


def test_parse_tokens() -> None:
    entries = parse_tokens(TOKENS + ";")
    assert [(e.name, sorted(e.scopes)) for e in entries] == [
        ("ops-alice", ["act", "read"]),
        ("dash", ["read"]),
        ("bot", ["act"]),
    ]
    assert entries[0].digest == hashlib.sha256(ALICE.encode()).digest()
    assert parse_tokens("") == []
    digest = hash_token("x")
    for spec in (
        "alice:read",
        f"alice:write:{digest}",
        f"alice::{digest}",
        "alice:read:not-a-hash",
        f"alice:read:{ALICE}",  # the token itself instead of its hash
        f"a b:read:{digest}",
        f"a:read:{digest};a:act:{digest}",
    ):
        with pytest.raises(TokenConfigError) as info:
            parse_tokens(spec)
        assert digest not in str(info.value)
        assert ALICE not in str(info.value)


def test_tokens_are_held_hashed_only() -> None:
    book = TokenBook.from_spec(TOKENS)
    held = pickle.dumps(book)
    for token in (ALICE, DASH, BOT):
        assert token.encode() not in held
    assert "secret" not in repr(book)
    settings = Settings(api_tokens=TOKENS)
    assert hash_token(ALICE) not in repr(settings)  # not even the hashes


def test_every_entry_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    book = TokenBook.from_spec(TOKENS)
    principal = book.authenticate(ALICE)
    assert principal is not None
    assert principal.name == "ops-alice"
    assert principal.scopes == {"read", "act"}
    # the match is the first entry, and still every entry was compared: no early exit
    assert len(calls) == 3
    assert all(a == hashlib.sha256(ALICE.encode()).digest() for a, _ in calls)
    assert book.authenticate("wrong") is None
    assert book.authenticate("") is None
    assert book.authenticate(None) is None


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0  # one token back after 1/rate
    assert bucket.take(10.0) == 0.0  # refills up to the burst, not beyond
    assert [bucket.take(10.0) for _ in range(3)][-1] == pytest.approx(0.5)


# -- the guard, over HTTP -------------------------------------------------------


def test_open_paths_401_unknown_403_wrong_scope() -> None:
    app, sink, _ = build()

    async def body(client: TestClient[Any, Any]) -> None:
        for path in ("/health", "/ready", "/metrics"):
            assert (await client.get(path)).status == 200
        assert (await client.get("/console/login")).status == 200  # the console's own login
        resp = await client.get("/api/summary")
        assert await status_and_json(resp) == (
            401,
            {"error": "unauthenticated", "message": "send Authorization: Bearer <token>"},
        )
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        status, error = await status_and_json(
            await client.get("/api/summary", headers=bearer("nope"))
        )
        assert (status, error["error"]) == (401, "invalid_token")
        status, error = await status_and_json(
            await client.get("/api/summary", headers={"Authorization": f"Basic {ALICE}"})
        )
        assert (status, error["error"]) == (401, "unauthenticated")
        # pssync's /stats and any other page (Faust's, were one left) need a token too
        for path in ("/stats", "/router/", "/table/", "/"):
            assert (await client.get(path)).status == 401
            assert (await client.get(path, headers=bearer(DASH))).status == 200
        assert (await client.get("/api/summary", headers=bearer(DASH))).status == 200
        # read-only token cannot act; act-only token cannot read
        status, error = await status_and_json(
            await client.post(
                "/api/exceptions/E1/actions", json={"action": "dismiss"}, headers=bearer(DASH)
            )
        )
        assert (status, error["error"]) == (403, "forbidden")
        assert (await client.get("/api/exceptions", headers=bearer(BOT))).status == 403
        assert sink.sent == []
        resp = await client.post(
            "/api/exceptions/E1/actions", json={"action": "dismiss"}, headers=bearer(BOT)
        )
        assert resp.status == 202

    run(app, body)


def test_without_tokens_the_api_is_off_and_stats_stays_open() -> None:
    app, _, _ = build(tokens="")

    async def body(client: TestClient[Any, Any]) -> None:
        for path in ("/api/summary", "/api/exceptions", "/api/openapi.json", "/console/login"):
            status, error = await status_and_json(await client.get(path, headers=bearer(ALICE)))
            assert (status, error["error"]) == (401, "api_disabled")
        assert (await client.get("/stats")).status == 200
        assert (await client.get("/router/")).status == 401
        assert (await client.get("/health")).status == 200

    run(app, body)


def test_actor_is_the_token_name() -> None:
    app, sink, codec = build()

    async def body(client: TestClient[Any, Any]) -> None:
        resp = await client.post(
            "/api/exceptions/E1/actions",
            json={"action": "dismiss", "note": "duplicate", "action_id": "a-1"},
            headers=bearer(ALICE),
        )
        assert await status_and_json(resp) == (202, {"action_id": "a-1"})
        assert resp.headers["X-Pssync-Served-By"] == "http://me:1"

    run(app, body)
    assert len(sink.sent) == 1
    assert codec.last[1]["who"] == "ops-alice"
    assert codec.last[1]["note"] == "duplicate"


def test_request_size_limit() -> None:
    app, sink, _ = build(max_body=1024)

    async def body(client: TestClient[Any, Any]) -> None:
        big = json.dumps({"action": "dismiss", "note": "x" * 2000}).encode()
        resp = await client.post("/api/exceptions/E1/actions", data=big, headers=bearer(ALICE))
        assert (await status_and_json(resp))[1]["error"] == "payload_too_large"
        assert resp.status == 413

        async def chunks() -> Any:  # no Content-Length: caught while reading
            for _ in range(4):
                yield b" " * 400
            yield b'{"action": "dismiss"}'

        resp = await client.post("/api/exceptions/E1/actions", data=chunks(), headers=bearer(ALICE))
        assert resp.status == 413
        resp = await client.post(
            "/api/exceptions/E1/actions", data=b"{not json", headers=bearer(ALICE)
        )
        assert (await status_and_json(resp))[0] == 422

    run(app, body)
    assert sink.sent == []


def test_rate_limit_per_token() -> None:
    app, _, _ = build(rate=0.5, burst=3)

    async def body(client: TestClient[Any, Any]) -> None:
        statuses = [
            (await client.get("/api/summary", headers=bearer(DASH))).status for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 429]
        resp = await client.get("/api/summary", headers=bearer(DASH))
        status, error = await status_and_json(resp)
        assert (status, error["error"]) == (429, "rate_limited")
        assert int(resp.headers["Retry-After"]) >= 1
        # another token has its own bucket
        assert (await client.get("/api/summary", headers=bearer(ALICE))).status == 200

    run(app, body)


def test_unknown_paths_and_methods_answer_json() -> None:
    app, _, _ = build()

    async def body(client: TestClient[Any, Any]) -> None:
        status, error = await status_and_json(await client.get("/api/nope", headers=bearer(DASH)))
        assert (status, error["error"]) == (404, "not_found")
        resp = await client.delete("/api/exceptions", headers=bearer(DASH))
        status, error = await status_and_json(resp)
        assert (status, error["error"]) == (405, "method_not_allowed")
        assert "GET" in resp.headers["Allow"]
        status, error = await status_and_json(
            await client.get("/api/exceptions?limit=x", headers=bearer(DASH))
        )
        assert (status, error["error"]) == (400, "invalid_query")
        status, page = await status_and_json(
            await client.get("/api/exceptions?state=OPEN&limit=1", headers=bearer(DASH))
        )
        assert (status, [i["exception_id"] for i in page["items"]], page["next"]) == (
            200,
            ["E1"],
            None,
        )
        status, detail = await status_and_json(
            await client.get("/api/exceptions/E1", headers=bearer(DASH))
        )
        assert (status, detail["history"][0]["state"]) == (200, "OPEN")
        status, doc = await status_and_json(
            await client.get("/api/openapi.json", headers=bearer(DASH))
        )
        assert (status, doc["openapi"]) == (200, "3.0.3")

    run(app, body)


def test_tokens_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    app, _, _ = build(tokens=TOKENS)
    Guard(TokenBook.from_spec(TOKENS), RateLimiter(1, 1), 1024).announce()

    async def body(client: TestClient[Any, Any]) -> None:
        for token in (ALICE, DASH, BOT, "unknown-token-xyz"):
            await client.get("/api/summary", headers=bearer(token))
            await client.post(
                "/api/exceptions/E1/actions", json={"action": "bogus"}, headers=bearer(token)
            )

    run(app, body)
    assert "ops-alice" in caplog.text  # the start-up line names the tokens
    for secret in (ALICE, DASH, BOT, "unknown-token-xyz", hash_token(ALICE)):
        assert secret not in caplog.text
