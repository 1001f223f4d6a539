"""The JSON routes of the operations API (domain.md, "Operations API"), over `OpsService`.

Each handler parses the request (400 for a bad query, 422 for a bad body, 413 past
the size limit), calls the service and answers JSON; every answer, errors included,
carries `X-Pssync-Served-By` (the worker that computed it). Authentication, scopes
and rate limits are the guard's (`api.auth`), applied before any handler runs.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from pssync.api.auth import BodyTooLarge, json_error, principal_of, read_body
from pssync.api.forward import FORWARDED_BY_HEADER, FORWARDED_HEADER, SERVED_BY_HEADER
from pssync.api.openapi import document
from pssync.api.service import LIMIT_DEFAULT, ActionRequest, Answer, ApiError, OpsService

log = logging.getLogger(__name__)

SERVICE_KEY = web.AppKey("pssync.ops_service", OpsService)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":"), default=str).encode(),
        content_type="application/json",
        headers=headers,
    )


def _query(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    return value or None


Method = Callable[["Handlers", web.Request], Awaitable[web.Response]]


def api(method: Method) -> Method:
    """ApiError -> its JSON error; anything unexpected -> a logged 500 without details."""

    @functools.wraps(method)
    async def run(self: Handlers, request: web.Request) -> web.Response:
        try:
            return await method(self, request)
        except ApiError as exc:
            headers = {**self.served(), **exc.headers}
            return json_error(exc.status, exc.code, exc.message, headers)
        except (web.HTTPException, BodyTooLarge):
            raise
        except Exception as exc:
            log.exception("%s %s failed", request.method, request.path)
            return json_error(
                500, "internal", f"internal error ({type(exc).__name__})", self.served()
            )

    return run


class Handlers:
    def __init__(self, service: OpsService, max_body_bytes: int) -> None:
        self.service = service
        self.max_body_bytes = max_body_bytes
        self._openapi = json.dumps(document()).encode()

    def served(self, answer: Answer | None = None) -> dict[str, str]:
        if answer is None:
            return {SERVED_BY_HEADER: self.service.self_url}
        headers = {SERVED_BY_HEADER: answer.served_by}
        if answer.forwarded_by:
            headers[FORWARDED_BY_HEADER] = answer.forwarded_by
        return headers

    async def _body(self, request: web.Request) -> Any:
        raw = await read_body(request, self.max_body_bytes)
        try:
            return json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError):
            raise ApiError(422, "invalid_json", "the body is not JSON") from None

    @api
    async def list_exceptions(self, request: web.Request) -> web.Response:
        raw_limit = request.query.get("limit")
        try:
            limit = LIMIT_DEFAULT if raw_limit is None else int(raw_limit)
        except ValueError:
            raise ApiError(400, "invalid_query", "limit: an integer") from None
        raw_age = _query(request, "min_age_s")
        try:
            min_age_s = None if raw_age is None else float(raw_age)
        except ValueError:
            raise ApiError(400, "invalid_query", "min_age_s: a number of seconds") from None
        if min_age_s is not None and min_age_s != min_age_s:  # NaN
            raise ApiError(400, "invalid_query", "min_age_s: a number of seconds")
        page = self.service.list_exceptions(
            state=_query(request, "state"),
            rule=_query(request, "rule"),
            entity_type=_query(request, "entity_type"),
            entity_id=_query(request, "entity_id"),
            assignee=_query(request, "assignee"),
            age=_query(request, "age"),
            limit=limit,
            cursor=_query(request, "cursor"),
            min_age_s=min_age_s,
        )
        return _json(page, headers=self.served())

    @api
    async def get_exception(self, request: web.Request) -> web.Response:
        record = self.service.get_exception(request.match_info["exception_id"])
        return _json(record, headers=self.served())

    @api
    async def act(self, request: web.Request) -> web.Response:
        who = principal_of(request).name
        action = ActionRequest.from_json(await self._body(request))
        accepted = await self.service.act(
            request.match_info["exception_id"],
            action.action,
            action.note,
            who,
            assignee=action.assignee,
            action_id=action.action_id,
        )
        return _json(accepted, status=202, headers=self.served())

    @api
    async def entity(self, request: web.Request) -> web.Response:
        answer = await self.service.entity_answer(
            request.match_info["entity_type"],
            request.match_info["entity_id"],
            authorization=request.headers.get("Authorization"),
            forwarded=request.headers.get(FORWARDED_HEADER) == "1",
        )
        return _json(answer.body, headers=self.served(answer))

    @api
    async def validate_project(self, request: web.Request) -> web.Response:
        answer = await self.service.validate_answer(
            await self._body(request),
            authorization=request.headers.get("Authorization"),
            forwarded=request.headers.get(FORWARDED_HEADER) == "1",
        )
        return _json(answer.body, headers=self.served(answer))

    @api
    async def summary(self, request: web.Request) -> web.Response:
        return _json(self.service.summary(), headers=self.served())

    @api
    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._openapi, content_type="application/json", headers=self.served()
        )


def add_routes(web_app: web.Application, service: OpsService, max_body_bytes: int) -> None:
    """Mount the API on `web_app` (before the server starts)."""
    handlers = Handlers(service, max_body_bytes)
    web_app[SERVICE_KEY] = service
    router = web_app.router
    router.add_get("/api/exceptions", handlers.list_exceptions)
    router.add_get("/api/exceptions/{exception_id}", handlers.get_exception)
    router.add_post("/api/exceptions/{exception_id}/actions", handlers.act)
    router.add_get("/api/entities/{entity_type}/{entity_id}", handlers.entity)
    router.add_post("/api/validate/project", handlers.validate_project)
    router.add_get("/api/summary", handlers.summary)
    router.add_get("/api/openapi.json", handlers.openapi)
