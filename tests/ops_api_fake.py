"""A fake of the operations API (pssync/api) for the CLI's tests: aiohttp, in a thread.

It answers with the shapes of the contract (domain.md, "Operations API") and of
pssync/api as written: errors `{"error": code, "message"}`, filters and cursor paging,
the exception with `history` (entries of kind `state`, and `action` carrying the
action's outcome) and `trail`, `stream_time` in the summary. Like pssync/api today it
ignores `min_age_s`. Tests steer it through its fields (`forced`, `outcome`, `delay_s`)
and read what it was asked in `seen`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from pssync.cli.exceptions import ACTIONS, FILTERS

READ_TOKEN = "tok-read-5b1f0c9d7e"
ACT_TOKEN = "tok-act-8c2e4a6b1d"
TOKENS = {READ_TOKEN: ("dash", {"read"}), ACT_TOKEN: ("ops-alice", {"read", "act"})}
# the firm's stream time: a replayed firm, far from the wall clock
STREAM = dt.datetime(2026, 3, 5, 12, 0, tzinfo=dt.UTC)


def iso(instant: dt.datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def make_exception(n: int, age: dt.timedelta, now: dt.datetime = STREAM, **fields: Any) -> Any:
    return {
        "exception_id": f"exc-{n:02d}",
        "rule": "TIME_IN_CLOSED_PERIOD",
        "state": "OPEN",
        "entity_type": "time_entry",
        "entity_id": f"TE{n}",
        "reason": f"time entry TE{n} falls in closed period 2026-02",
        "context": {"period_id": "2026-02", "next_open_period": "2026-03", "legal_entity": None},
        "remediation": "Post the entry into the next open period of the same legal entity, "
        "or dismiss it if the hours were already booked by hand.",
        "created_at": iso(now - age),
        "resolution": None,
        "correlation_id": f"cdc:psa.time_entry:{n}",
        "causation": [{"topic": "cdc.psa.time_entry", "partition": 1, "offset": 40 + n,
                       "key": f"TE{n}", "lsn": 9000 + n, "ts_ms": 1_772_500_000_000}],
        "owner": f"worker:W{n}",
        "assignee": None,
    } | fields  # fmt: skip


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorization: str | None


@dataclass
class FakeApi:
    """The operations API in memory. Like pssync/api today it ignores `min_age_s`."""

    records: dict[str, Any] = field(default_factory=dict)
    history: dict[str, list[Any]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    stream_time: str | None = iso(STREAM)
    # an action's effect, once polled `polls_to_apply` times:
    # "apply" | "not_applicable" | "state_only" | "never" | "late" (the state at once,
    # the outcome at the next poll)
    outcome: str = "apply"
    polls_to_apply: int = 2
    pending: dict[str, tuple[Any, int]] = field(default_factory=dict)
    # (status, body, headers) answered to the next requests, whatever they ask
    forced: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)
    delay_s: float = 0.0
    url: str = ""

    def add(self, *records: Any) -> None:
        for r in records:
            self.records[r["exception_id"]] = r
            self.history[r["exception_id"]] = [self.version(r, r["created_at"])]

    @staticmethod
    def version(r: Any, at: str) -> Any:
        return {"kind": "state", "state": r["state"], "at": at, "resolution": r["resolution"],
                "assignee": r["assignee"], "correlation_id": r["correlation_id"],
                "recorded_at": at}  # fmt: skip

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.guard])
        app.router.add_get("/api/summary", self.summary)
        app.router.add_get("/api/exceptions", self.list_exceptions)
        app.router.add_get("/api/exceptions/{id}", self.get_exception)
        app.router.add_post("/api/exceptions/{id}/actions", self.post_action)
        app.router.add_get("/leak", self.summary)
        return app

    @web.middleware
    async def guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        auth = request.headers.get("Authorization")
        self.seen.append(Seen(request.method, request.path, dict(request.query), body, auth))
        await asyncio.sleep(self.delay_s)
        if self.forced:
            status, text, headers = self.forced.pop(0)
            return web.Response(status=status, text=text, headers=headers)
        token = (auth or "").removeprefix("Bearer ")
        if token not in TOKENS:
            return error(401, "unauthorized", "a valid bearer token is needed")
        scope = "act" if request.method == "POST" else "read"
        if scope not in TOKENS[token][1]:
            return error(403, "forbidden", f"token {TOKENS[token][0]} lacks the {scope} scope")
        response: web.StreamResponse = await handler(request)
        return response

    async def summary(self, request: web.Request) -> web.Response:
        return web.json_response({"stream_time": self.stream_time, "view": {"ready": True}})

    async def list_exceptions(self, request: web.Request) -> web.Response:
        q = request.query
        limit = int(q.get("limit", "3"))
        if not 1 <= limit <= 100:
            return error(400, "invalid_query", "limit: from 1 to 100")
        start = int(base64.urlsafe_b64decode(q["cursor"]).decode()) if "cursor" in q else 0
        rows = [
            r
            for r in sorted(
                self.records.values(), key=lambda r: (r["created_at"], r["exception_id"])
            )
            if not any(name in q and r[name] != q[name] for name in FILTERS)
        ]
        more = start + limit < len(rows)
        cursor = base64.urlsafe_b64encode(str(start + limit).encode()).decode() if more else None
        return web.json_response({"items": rows[start : start + limit], "next": cursor})

    async def get_exception(self, request: web.Request) -> web.Response:
        exception_id = request.match_info["id"]
        if exception_id not in self.records:
            return error(404, "unknown_exception", f"no exception {exception_id!r}")
        if exception_id in self.pending:
            self.poll(exception_id)
        record = self.records[exception_id]
        trail = [{"correlation_id": record["correlation_id"], "causation": record["causation"]}]
        extra = {"age": "1h_to_1d", "history": self.history[exception_id], "trail": trail}
        return web.json_response(record | extra)

    def poll(self, exception_id: str) -> None:
        action, polls = self.pending[exception_id]
        self.pending[exception_id] = (action, polls + 1)
        if polls + 1 < self.polls_to_apply or self.outcome == "never":
            return
        del self.pending[exception_id]
        at, record = iso(STREAM), self.records[exception_id]
        if self.outcome in ("apply", "state_only", "late"):
            record["state"] = "DISMISSED"
            record["resolution"] = {"who": "ops-alice", "action": action["action"],
                                    "note": action["note"], "when": at}  # fmt: skip
            self.history[exception_id].append(self.version(record, at))
        if self.outcome == "state_only":
            return
        if self.outcome == "late":  # the outcome comes with the next poll
            self.outcome = "outcome_only"
            self.pending[exception_id] = (action, self.polls_to_apply - 1)
            return
        outcome, detail = (
            ("NOT_APPLICABLE", "period 2026-03 is no longer open")
            if self.outcome == "not_applicable"
            else ("APPLIED", "dismissed")
        )
        self.history[exception_id].append(
            {"kind": "action", "action_id": action["action_id"], "action": action["action"],
             "outcome": outcome, "detail": detail, "who": "ops-alice", "note": action["note"],
             "at": at, "correlation_id": f"action:{action['action_id']}", "recorded_at": at}
        )  # fmt: skip

    async def post_action(self, request: web.Request) -> web.Response:
        exception_id, body = request.match_info["id"], await request.json()
        if body.get("action") not in ACTIONS:
            return error(422, "invalid_body", f"action: {body.get('action')!r} is not known")
        if exception_id not in self.records:
            return error(404, "unknown_exception", f"no exception {exception_id!r}")
        state = self.records[exception_id]["state"]
        if state != "OPEN":
            return error(409, "not_open", f"the exception is {state}, not OPEN")
        action = {"action_id": body.get("action_id") or str(uuid.uuid4()), **body}
        self.pending[exception_id] = (action, 0)
        return web.json_response({"action_id": action["action_id"]}, status=202)


@contextmanager
def serving(fake: FakeApi) -> Iterator[str]:
    """Serve `fake` on a free local port in a thread; yields its base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(fake.app(), access_log=None)
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    host, port = runner.addresses[0][:2]
    fake.url = f"http://{host}:{port}"
    try:
        yield fake.url
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
