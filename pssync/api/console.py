"""The operations console at `/console`: server-rendered pages over `OpsService`, in-process.

Pages: the queue (filters, ages on the firm's stream time, oldest first, paged with the
API's cursor), one exception (reason, context, remediation, owner, lineage, history, the
actions), one entity (golden record, open findings, recent commands). Plain HTML forms;
no script. The markup is `console_pages`; this module is the web side.

Guarantees:
- Authentication is the API's: the operator signs in with an API token, checked by the
  same `TokenBook` as `Authorization: Bearer` (SHA-256, constant-time compare). Pages
  need the `read` scope, actions the `act` scope (the action forms are not shown
  without it, and a posted action is refused with 403). The token is re-checked on
  every request, so removing it from `PSSYNC_API_TOKENS` ends its sessions at the
  next restart of the worker.
- The token lives only in the session cookie: HttpOnly (no script reads it),
  SameSite=Strict (no other site's page sends it), Secure when the page is served over
  https, Path=/console, for the browser session (at most `SESSION_MAX_AGE_S`). It is
  never rendered, never logged (only the token's name is), and never put in a URL.
- CSRF: every POST form carries `csrf` = HMAC-SHA256(key = the token, message = the
  session id), the session id being a random value drawn at sign-in and kept in the
  same cookie. A page on another origin can neither read the cookie nor compute the
  value; it is the same on every worker (no server secret to share), and a new
  sign-in draws a new session id. The sign-in form itself is protected by a
  double-submitted nonce (a short-lived cookie and a hidden field), so another site
  cannot sign a browser in with a token of its choosing.
- Pages are sent with a Content-Security-Policy that allows no script, the one inline
  style sheet by its hash, and forms to this origin only; no framing; `no-store`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from pssync.api.auth import Principal, TokenBook
from pssync.api.console_pages import (
    STYLE_HASH,
    Notice,
    QueueQuery,
    Viewer,
    accepted_notice,
    entity_page,
    error_page,
    exception_page,
    exception_url,
    login_page,
    queue_page,
)
from pssync.api.queue import iso
from pssync.api.service import ACTION_ID_PATTERN, ApiError, OpsService

log = logging.getLogger(__name__)

PREFIX = "/console"
COOKIE = "pssync_console"
LOGIN_COOKIE = "pssync_console_login"
SESSION_MAX_AGE_S = 12 * 3600
LOGIN_MAX_AGE_S = 1800
PAGE_SIZE = 50
_SID = re.compile(r"^[A-Za-z0-9_-]{20,64}$")
_ACTION_ID = re.compile(ACTION_ID_PATTERN)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; style-src '{STYLE_HASH}'; img-src data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def csrf_token(token: str, sid: str) -> str:
    """The CSRF value of a session (module doc): HMAC-SHA256(token, session id)."""
    return hmac.new(
        token.encode(), b"pssync-console-csrf:" + sid.encode(), hashlib.sha256
    ).hexdigest()


def encode_session(sid: str, token: str) -> str:
    """The cookie value: `<sid>.<token as base64url>` (a token may hold characters a
    cookie cannot)."""
    return sid + "." + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def decode_session(value: str | None) -> tuple[str, str] | None:
    """(sid, token) from a cookie value, or None if it is not one this console set."""
    if not value:
        return None
    sid, _, packed = value.partition(".")
    if not _SID.match(sid) or not packed:
        return None
    try:
        token = base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return (sid, token) if token else None


def safe_next(path: str | None) -> str:
    """Where to go after signing in: a console path on this origin, else the queue."""
    if (
        not path
        or not (path == PREFIX or path.startswith((PREFIX + "/", PREFIX + "?")))
        or "\\" in path
        or any(ord(c) < 0x20 for c in path)
        or path.startswith(PREFIX + "/login")
    ):
        return PREFIX
    return path


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser: its session id, the token (never shown) and who it is."""

    sid: str
    token: str = field(repr=False)
    principal: Principal

    @property
    def csrf(self) -> str:
        return csrf_token(self.token, self.sid)

    @property
    def viewer(self) -> Viewer:
        return Viewer(self.principal.name, self.principal.may("act"), self.csrf)

    def csrf_ok(self, presented: str) -> bool:
        return hmac.compare_digest(self.csrf.encode(), presented.encode())


def html_response(body: str, status: int = 200) -> web.Response:
    return web.Response(
        text=body,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers=SECURITY_HEADERS,
    )


def redirect(location: str) -> web.Response:
    """303 See Other: the browser GETs `location` (after a form, or to sign in)."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def is_https(request: web.Request) -> bool:
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def form_field(form: Any, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


class Console:
    """The console's handlers (`install_console` routes them)."""

    def __init__(self, service: OpsService, book: TokenBook) -> None:
        self.service = service
        self.book = book

    # -- sessions -----------------------------------------------------------------
    def session(self, request: web.Request) -> Session | None:
        found = decode_session(request.cookies.get(COOKIE))
        if found is None:
            return None
        principal = self.book.authenticate(found[1])
        return None if principal is None else Session(found[0], found[1], principal)

    def authorize(self, request: web.Request, scope: str = "read") -> Session | web.Response:
        """The session, or the answer to give instead: sign in (303), or 403."""
        session = self.session(request)
        if session is None:
            target = safe_next(request.path_qs if request.method == "GET" else PREFIX)
            return redirect(f"{PREFIX}/login?" + urlencode({"next": target}))
        if not session.principal.may(scope):
            return html_response(
                error_page(
                    session.viewer,
                    "Not allowed",
                    f"The token {session.principal.name} lacks the {scope} scope.",
                ),
                403,
            )
        return session

    async def checked_form(
        self, request: web.Request, scope: str
    ) -> tuple[Session, Any] | web.Response:
        """A POST's session (with `scope`) and form, its CSRF value verified."""
        session = self.authorize(request, scope)
        if isinstance(session, web.Response):
            return session
        form = await request.post()
        if not session.csrf_ok(form_field(form, "csrf")):
            return html_response(
                error_page(
                    session.viewer,
                    "Form expired",
                    "The form did not come from this console session; reload the page "
                    "and try again.",
                ),
                403,
            )
        return session, form

    # -- signing in and out -------------------------------------------------------
    async def login_form(self, request: web.Request) -> web.Response:
        next_path = safe_next(request.query.get("next"))
        if self.session(request) is not None:
            return redirect(next_path)
        notice = Notice("Signed out.", "info") if request.query.get("bye") else None
        if not self.book.enabled:
            notice = Notice(
                "The console is off: no API tokens are configured (PSSYNC_API_TOKENS).",
                "error",
            )
        return self._login(request, next_path, notice, 200)

    def _login(
        self, request: web.Request, next_path: str, notice: Notice | None, status: int
    ) -> web.Response:
        nonce = secrets.token_urlsafe(24)
        response = html_response(login_page(nonce, next_path, notice), status)
        response.set_cookie(
            LOGIN_COOKIE,
            nonce,
            path=PREFIX,
            max_age=LOGIN_MAX_AGE_S,
            httponly=True,
            samesite="Strict",
            secure=is_https(request),
        )
        return response

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        next_path = safe_next(form_field(form, "next"))
        expected = request.cookies.get(LOGIN_COOKIE, "")
        presented = form_field(form, "nonce")
        if not expected or not hmac.compare_digest(expected.encode(), presented.encode()):
            notice = Notice("The sign-in form expired; please sign in again.", "error")
            return self._login(request, next_path, notice, 400)
        principal = self.book.authenticate(form_field(form, "token"))
        if principal is None:
            return self._login(request, next_path, Notice("That token is not known.", "error"), 401)
        if not principal.may("read"):
            notice = Notice(f"The token {principal.name} lacks the read scope.", "error")
            return self._login(request, next_path, notice, 403)
        sid = secrets.token_urlsafe(24)
        response = redirect(next_path)
        response.set_cookie(
            COOKIE,
            encode_session(sid, form_field(form, "token")),
            path=PREFIX,
            max_age=SESSION_MAX_AGE_S,
            httponly=True,
            samesite="Strict",
            secure=is_https(request),
        )
        response.del_cookie(LOGIN_COOKIE, path=PREFIX)
        log.info("console: %s signed in", principal.name)
        return response

    async def logout(self, request: web.Request) -> web.Response:
        checked = await self.checked_form(request, "read")
        if isinstance(checked, web.Response):
            return checked
        response = redirect(f"{PREFIX}/login?bye=1")
        response.del_cookie(COOKIE, path=PREFIX)
        log.info("console: %s signed out", checked[0].principal.name)
        return response

    # -- pages --------------------------------------------------------------------
    async def queue(self, request: web.Request) -> web.Response:
        session = self.authorize(request)
        if isinstance(session, web.Response):
            return session
        query = QueueQuery.from_query(request.query)
        status, notice = 200, None
        try:
            chosen = query.filters()
            page = self.service.list_exceptions(
                state=chosen["state"],
                rule=chosen["rule"],
                entity_type=chosen["entity_type"],
                entity_id=chosen["entity_id"],
                assignee=chosen["assignee"],
                age=chosen["age"],
                limit=PAGE_SIZE,
                cursor=query.cursor or None,
            )
        except ApiError as exc:
            page = {"items": [], "next": None}
            status, notice = exc.status, Notice(exc.message, "error")
        summary = self.service.summary()
        if notice is None and not self.service.view_ready:
            notice = Notice(
                "This worker is still reading the queue from the output topics; "
                "refresh in a moment.",
                "info",
            )
        return html_response(queue_page(session.viewer, query, page, summary, notice), status)

    def _exception(
        self, session: Session, exception_id: str, notice: Notice | None, status: int = 200
    ) -> web.Response:
        try:
            record = self.service.get_exception(exception_id)
        except ApiError as exc:
            return html_response(
                error_page(session.viewer, "Unknown exception", exc.message), exc.status
            )
        stream_ms = self.service.view.stream_ms
        stream_time = None if stream_ms is None else iso(stream_ms)
        return html_response(exception_page(session.viewer, record, stream_time, notice), status)

    async def exception(self, request: web.Request) -> web.Response:
        session = self.authorize(request)
        if isinstance(session, web.Response):
            return session
        exception_id = request.match_info["exception_id"]
        accepted = request.query.get("accepted", "")
        if accepted and _ACTION_ID.match(accepted):
            try:
                record = self.service.get_exception(exception_id)
            except ApiError:
                pass  # _exception answers it
            else:
                return self._exception(session, exception_id, accepted_notice(record, accepted))
        return self._exception(session, exception_id, None)

    async def act(self, request: web.Request) -> web.Response:
        checked = await self.checked_form(request, "act")
        if isinstance(checked, web.Response):
            return checked
        session, form = checked
        exception_id = request.match_info["exception_id"]
        action = form_field(form, "action")
        note = form_field(form, "note") or None
        assignee = (form_field(form, "assignee") or None) if action == "assign" else None
        if action == "assign" and assignee is None:
            return self._exception(
                session, exception_id, Notice("Name an assignee to assign it.", "error"), 422
            )
        who = session.principal.name
        try:
            result = await self.service.act(exception_id, action, note, who, assignee=assignee)
        except ApiError as exc:
            return self._exception(
                session, exception_id, Notice(f"Not accepted: {exc.message}", "error"), exc.status
            )
        action_id = str(result["action_id"])
        log.info("console: %s requested %s on %s (action %s)", who, action, exception_id, action_id)
        return redirect(exception_url(exception_id) + "?" + urlencode({"accepted": action_id}))

    async def entity(self, request: web.Request) -> web.Response:
        session = self.authorize(request)
        if isinstance(session, web.Response):
            return session
        entity_type = request.match_info["entity_type"]
        entity_id = request.match_info["entity_id"]
        try:
            found = await self.service.entity(
                entity_type, entity_id, authorization=f"Bearer {session.token}"
            )
        except ApiError as exc:
            title = "Unknown entity" if exc.status == 404 else "Not available"
            return html_response(error_page(session.viewer, title, exc.message), exc.status)
        return html_response(entity_page(session.viewer, entity_type, entity_id, found))

    async def slash(self, request: web.Request) -> web.Response:
        return redirect(PREFIX)


def install(web_app: web.Application, service: OpsService, book: TokenBook) -> Console:
    """Route `/console` on the worker's aiohttp application (before it starts), with the
    API's token book (`pssync.api.install` calls it)."""
    console = Console(service, book)
    router = web_app.router
    router.add_get(PREFIX, console.queue)
    router.add_get(PREFIX + "/", console.slash)
    router.add_get(PREFIX + "/login", console.login_form)
    router.add_post(PREFIX + "/login", console.login)
    router.add_post(PREFIX + "/logout", console.logout)
    router.add_get(PREFIX + "/exceptions/{exception_id}", console.exception)
    router.add_post(PREFIX + "/exceptions/{exception_id}/actions", console.act)
    router.add_get(PREFIX + "/entities/{entity_type}/{entity_id}", console.entity)
    return console


__all__ = ["COOKIE", "Console", "Session", "csrf_token", "install"]
