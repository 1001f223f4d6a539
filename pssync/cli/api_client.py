"""The operations API over HTTP for the command line: JSON in and out, failures as exit codes.

`ApiClient` talks to one worker's HTTP port with `Authorization: Bearer <token>` and turns
every failure into an `ApiFailure` carrying one line to print and the exit code it maps
to (EXIT_*), so each command reports the same failure the same way. A 429 is retried
after the Retry-After it names (a few times), and so is a GET's 503 with Retry-After (a
worker whose peer is restarting); nothing else is retried here, since only the caller
knows whether a request is safe to repeat. The token goes in one header and
nowhere else: messages never hold it, and redirects are refused, since urllib would
carry the header to wherever they point.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any

from pssync import __version__

EXIT_USAGE = 2  # the API rejected the request (400, 413, 422)
EXIT_AUTH = 3  # 401 (no or unknown token) or 403 (token without the scope)
EXIT_NOT_FOUND = 4  # 404
EXIT_CONFLICT = 5  # 409
EXIT_SERVER = 6  # 5xx, 429 after retries, unreachable, timed out, not the API's JSON

RATE_LIMIT_RETRIES = 3
RETRY_AFTER_MAX_S = 10.0


class ApiFailure(Exception):
    """A failure to report as one line, with the exit code it maps to."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """The API never redirects; following one would send the token where it points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_RefuseRedirects())


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _server_message(raw: bytes) -> str:
    """The reason in an error body: the API's `{"error": code, "message": text}`, or
    `{"error": {"code", "message"}}`, `{"error": text}`, `{"detail"}`, plain text."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return _one_line(raw.decode("utf-8", "replace"))
    if not isinstance(doc, dict):
        return _one_line(json.dumps(doc))
    err = doc.get("error")
    src = err if isinstance(err, dict) else doc
    code, message = src.get("code"), src.get("message") or src.get("detail")
    if isinstance(err, str):
        code, message = (err, message) if message else (code, err)
    parts = [str(p) for p in (code, message) if p not in (None, "")]
    return _one_line(": ".join(parts) if parts else json.dumps(doc))


# HTTP status -> (exit code, what it means, a hint)
_STATUS = {
    400: (EXIT_USAGE, "rejected", ""),
    401: (EXIT_AUTH, "unauthorised", "; give a valid token with PSSYNC_API_TOKEN or --token"),
    403: (EXIT_AUTH, "forbidden", "; the token lacks the scope (read, or act for actions)"),
    404: (EXIT_NOT_FOUND, "not found", ""),
    409: (EXIT_CONFLICT, "conflict", ""),
    413: (EXIT_USAGE, "rejected: too large", ""),
    422: (EXIT_USAGE, "rejected", ""),
    429: (EXIT_SERVER, "rate limited, still after retries", ""),
}


def _status_failure(status: int, what: str, message: str) -> ApiFailure:
    code, meaning, hint = _STATUS.get(status, (EXIT_SERVER, "failed", ""))
    reason = f": {message}" if message else ""
    return ApiFailure(code, f"{what} -> HTTP {status} {meaning}{reason}{hint}")


def _retry_after_s(headers: Message) -> float:
    try:
        wait = float(headers.get("Retry-After", "1"))
    except ValueError:
        wait = 1.0
    return min(max(wait, 0.0), RETRY_AFTER_MAX_S)


@dataclass(frozen=True)
class ApiClient:
    """JSON over HTTP to one worker; every failure becomes an `ApiFailure`."""

    base_url: str
    token: str | None
    timeout_s: float

    def get(self, path: str, query: Mapping[str, str | int | None] | None = None) -> Any:
        return self._request("GET", path, query, None)

    def post(self, path: str, body: Mapping[str, Any]) -> Any:
        return self._request("POST", path, None, body)

    def _request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str | int | None] | None,
        body: Mapping[str, Any] | None,
    ) -> Any:
        url = self.base_url.rstrip("/") + path
        params = {k: str(v) for k, v in (query or {}).items() if v is not None}
        if params:
            url += "?" + urllib.parse.urlencode(params)
        what = f"{method} {path}"
        headers = {"Accept": "application/json", "User-Agent": f"pssync/{__version__}"}
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with _OPENER.open(request, timeout=self.timeout_s) as response:
                    raw = response.read()
                break
            except urllib.error.HTTPError as exc:
                with exc:
                    status, reply, reply_headers = exc.code, exc.read(), exc.headers
                # a 503 with Retry-After (owner unreachable) passes; a GET may wait it out
                passing = status == 503 and method == "GET" and "Retry-After" in reply_headers
                if (status == 429 or passing) and attempt < RATE_LIMIT_RETRIES:
                    time.sleep(_retry_after_s(reply_headers))
                    continue
                if 300 <= status < 400:
                    raise ApiFailure(
                        EXIT_SERVER, f"{what} -> HTTP {status} redirect refused (check --api-url)"
                    ) from None
                message = _server_message(reply)
                if self.token:  # a server that echoes what it was sent
                    message = message.replace(self.token, "***")
                raise _status_failure(status, what, message) from None
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, TimeoutError):
                    raise self._timed_out(what) from None
                raise ApiFailure(
                    EXIT_SERVER, f"cannot reach {self.base_url}: {_one_line(str(exc.reason))}"
                ) from None
            except TimeoutError:
                raise self._timed_out(what) from None
            except (OSError, http.client.HTTPException) as exc:
                raise ApiFailure(
                    EXIT_SERVER, f"{what}: connection failed: {_one_line(str(exc) or repr(exc))}"
                ) from None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiFailure(EXIT_SERVER, f"{what}: the answer is not JSON") from None

    def _timed_out(self, what: str) -> ApiFailure:
        return ApiFailure(
            EXIT_SERVER, f"{what}: no answer from {self.base_url} within {self.timeout_s:g}s"
        )
