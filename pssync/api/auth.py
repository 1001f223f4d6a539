"""Who may call the worker's HTTP port, and how much: tokens, scopes, rate and size limits.

Guarantees (domain.md, "Operations API"):
- Tokens come from `PSSYNC_API_TOKENS` as `name:scopes:sha256hex;...`: only the
  SHA-256 of each token is ever configured or held, never the token itself. A
  presented token is hashed and compared with every configured hash through
  `hmac.compare_digest`, without stopping at the first match, so the time taken
  says nothing about which hash (or how much of it) matched.
- `/health`, `/ready` and `/metrics` are open. Every other path needs a token
  (deny by default): none or an unknown one is a 401, one without the scope the
  route needs a 403 (`act` for posting actions, `read` for the rest).
- With no token configured, the API is off: every `/api` and `/console` path (and any
  other but the open ones) answers 401, and start-up logs it once. pssync's `/stats`
  then stays open, as it was before tokens existed (an operator page of counters and
  stream times, no firm data; the tests and the benchmarks read it); with tokens
  configured it needs `read` like the API.
- `/console` pages do their own authentication (a login form and a cookie holding the
  token, checked with the same `TokenBook`); this guard only applies the size limit.
- Each token has its own token bucket (`api_rate_per_s` sustained, `api_burst` on
  top); past it a request gets 429 with `Retry-After`. A body larger than
  `api_max_body_bytes` gets 413 (from its Content-Length before anything is read,
  or while it is read: `read_body`).
- No token is ever logged: nothing here logs a header, and Faust runs aiohttp
  without an access log (`AppRunner(access_log=None)`), so the Authorization
  header is printed nowhere.
Errors are JSON: `{"error": code, "message": text}`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import web

log = logging.getLogger(__name__)

SCOPES = frozenset({"read", "act"})
OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"})
CONSOLE_PREFIX = "/console"
API_PREFIX = "/api"
STATS_PATH = "/stats"
_ACTIONS_PATH = re.compile(r"^/api/exceptions/[^/]+/actions/?$")
_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


class TokenConfigError(ValueError):
    """`PSSYNC_API_TOKENS` is malformed; the message names the entry, never a hash."""


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the token's name (the actor on actions) and its scopes."""

    name: str
    scopes: frozenset[str]

    def may(self, scope: str) -> bool:
        return scope in self.scopes


# where the guard leaves the authenticated principal for the handlers
PRINCIPAL_KEY = web.RequestKey("pssync.principal", Principal)


@dataclass(frozen=True, slots=True)
class TokenEntry:
    name: str
    scopes: frozenset[str]
    digest: bytes = field(repr=False)


def hash_token(token: str) -> str:
    """The SHA-256 (hex) of a token: what `PSSYNC_API_TOKENS` holds for it."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_tokens(spec: str) -> list[TokenEntry]:
    """`name:scopes:sha256hex;...` -> entries; `TokenConfigError` names what is wrong."""
    entries: list[TokenEntry] = []
    names: set[str] = set()
    for index, raw in enumerate(spec.split(";"), start=1):
        raw = raw.strip()
        if not raw:
            continue
        parts = raw.split(":")
        if len(parts) != 3:
            raise TokenConfigError(
                f"PSSYNC_API_TOKENS entry {index}: expected name:scopes:sha256hex"
            )
        name, scopes_text, digest_hex = (p.strip() for p in parts)
        if not _NAME.match(name):
            raise TokenConfigError(
                f"PSSYNC_API_TOKENS entry {index}: the name must be 1-64 of A-Z a-z 0-9 . _ @ -"
            )
        if name in names:
            raise TokenConfigError(f"PSSYNC_API_TOKENS: the name {name!r} appears twice")
        scopes = frozenset(s.strip() for s in scopes_text.split("+") if s.strip())
        if not scopes or not scopes <= SCOPES:
            raise TokenConfigError(
                f"PSSYNC_API_TOKENS entry {name!r}: scopes must be read and/or act joined by +"
            )
        if not _HEX.match(digest_hex):
            raise TokenConfigError(
                f"PSSYNC_API_TOKENS entry {name!r}: the third part must be the token's "
                "SHA-256 as 64 hex digits (never the token itself)"
            )
        names.add(name)
        entries.append(TokenEntry(name, scopes, bytes.fromhex(digest_hex)))
    return entries


class TokenBook:
    """The configured tokens, by hash only."""

    def __init__(self, entries: Iterable[TokenEntry]) -> None:
        self._entries = tuple(entries)

    @classmethod
    def from_spec(cls, spec: str) -> TokenBook:
        return cls(parse_tokens(spec))

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self._entries]

    def authenticate(self, token: str | None) -> Principal | None:
        """The principal whose hash matches `token`, or None. Every entry is compared
        (constant time each, no early exit)."""
        if not token:
            return None
        presented = hashlib.sha256(token.encode()).digest()
        found: TokenEntry | None = None
        for entry in self._entries:
            if hmac.compare_digest(presented, entry.digest):
                found = entry
        return None if found is None else Principal(found.name, found.scopes)

    def __repr__(self) -> str:
        return f"TokenBook(names={self.names!r})"


class TokenBucket:
    """`rate` tokens per second up to `burst`; `take` says how long to wait (0: go)."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.level = float(burst)
        self.stamp = now

    def take(self, now: float) -> float:
        self.level = min(self.burst, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.level >= 1.0:
            self.level -= 1.0
            return 0.0
        return (1.0 - self.level) / self.rate


class RateLimiter:
    """One token bucket per principal name."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def wait_s(self, name: str) -> float:
        """0 when `name` may go now; else the seconds until it may."""
        now = self.clock()
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = TokenBucket(self.rate, self.burst, now)
        return bucket.take(now)


def json_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """The API's error response: `{"error": code, "message": message}`."""
    return web.Response(
        status=status,
        body=json.dumps({"error": code, "message": message}).encode(),
        content_type="application/json",
        headers=headers,
    )


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def required_scope(method: str, path: str) -> str:
    """The scope a request needs: `act` to post an action, `read` for anything else."""
    if method == "POST" and _ACTIONS_PATH.match(path):
        return "act"
    return "read"


def principal_of(request: web.Request) -> Principal:
    """The caller the guard authenticated (handlers behind the guard only)."""
    principal = request.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):
        raise RuntimeError("request did not pass the API guard")
    return principal


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body exceeds {limit} bytes")
        self.limit = limit


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, read at most `limit` bytes far (`BodyTooLarge` past it, also for
    a chunked body without Content-Length)."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(min(65536, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def too_large(limit: int) -> web.Response:
    return json_error(413, "payload_too_large", f"the request body exceeds {limit} bytes")


class Guard:
    """The aiohttp middleware enforcing the policy of the module doc."""

    def __init__(self, book: TokenBook, limiter: RateLimiter, max_body_bytes: int) -> None:
        self.book = book
        self.limiter = limiter
        self.max_body_bytes = max_body_bytes

    def announce(self) -> None:
        """Log once, at start-up, whether the API is on (token names only)."""
        if self.book.enabled:
            log.info("operations API on /api: tokens %s", ", ".join(self.book.names))
        else:
            log.warning(
                "operations API disabled: PSSYNC_API_TOKENS is empty, so /api and /console "
                "answer 401 until tokens are set; /stats stays open"
            )

    def check(self, request: web.Request) -> web.Response | Principal | None:
        """A refusal, the authenticated principal, or None (let through unauthenticated)."""
        path = request.path
        if path in OPEN_PATHS:
            return None
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            return too_large(self.max_body_bytes)
        if not self.book.enabled:
            if path == STATS_PATH:
                return None
            return json_error(
                401,
                "api_disabled",
                "the operations API is disabled: no tokens are configured (PSSYNC_API_TOKENS)",
                {"WWW-Authenticate": 'Bearer realm="pssync"'},
            )
        if path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/"):
            return None
        token = bearer_token(request)
        if token is None:
            return json_error(
                401,
                "unauthenticated",
                "send Authorization: Bearer <token>",
                {"WWW-Authenticate": 'Bearer realm="pssync"'},
            )
        principal = self.book.authenticate(token)
        if principal is None:
            return json_error(
                401,
                "invalid_token",
                "the token is not known",
                {"WWW-Authenticate": 'Bearer realm="pssync", error="invalid_token"'},
            )
        wait = self.limiter.wait_s(principal.name)
        if wait > 0:
            return json_error(
                429,
                "rate_limited",
                f"too many requests for {principal.name}; retry in {wait:.2f}s",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        scope = required_scope(request.method, path)
        if not principal.may(scope):
            return json_error(
                403, "forbidden", f"the token {principal.name!r} lacks the {scope!r} scope"
            )
        return principal

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        verdict = self.check(request)
        if isinstance(verdict, web.Response):
            return verdict
        if isinstance(verdict, Principal):
            request[PRINCIPAL_KEY] = verdict
        try:
            return await handler(request)
        except BodyTooLarge as exc:
            return too_large(exc.limit)
        except web.HTTPException as exc:
            if not request.path.startswith(API_PREFIX):
                raise
            # aiohttp's own 404/405 (no route, wrong method) as the API's JSON errors,
            # keeping their headers (Allow)
            headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
            return json_error(exc.status, code, exc.reason, headers)
