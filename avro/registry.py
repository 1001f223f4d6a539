"""A small client for a Confluent-compatible schema registry (REST v7 API).

Only what pssync needs: register a schema under a subject, fetch a schema by
its global ID, set compatibility. Calls are blocking (urllib); the codec makes
them at start-up and, for an ID it has not seen, off the event loop.

`RegistryClient.from_settings` adds what a locked-down registry asks for: HTTP basic
authentication (the password read from its file) and a TLS context (a private CA, a
client certificate). The credentials go into the Authorization header only: never
into an error message or a repr.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pssync.settings import Settings

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryError(Exception):
    """The registry could not be reached or refused a request."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SchemaNotFound(RegistryError):
    """The registry has no schema with that ID."""


class RegistryClient:
    """Blocking REST client; caches what it has fetched (schemas are immutable)."""

    def __init__(
        self,
        url: str,
        timeout_s: float = 10.0,
        *,
        authorization: str | None = None,
        username: str = "",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`authorization`: the Authorization header's value (e.g. "Basic ..."), sent
        with every request; `username` only names the user in error messages."""
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.username = username
        self._headers = {"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE}
        if authorization:
            self._headers["Authorization"] = authorization
        self.ssl_context = ssl_context
        self._by_id: dict[int, str] = {}
        self._registered: dict[tuple[str, str], int] = {}

    @classmethod
    def from_settings(cls, settings: Settings, timeout_s: float = 10.0) -> RegistryClient:
        """The client of `PSSYNC_SCHEMA_REGISTRY_*`: URL, basic auth, TLS."""
        from pssync.security import registry_auth_header, registry_tls

        return cls(
            settings.schema_registry_url,
            timeout_s,
            authorization=registry_auth_header(settings),
            username=settings.schema_registry_username,
            ssl_context=registry_tls(settings),
        )

    def __repr__(self) -> str:
        return f"RegistryClient({self.url!r}, username={self.username!r})"

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers=dict(self._headers)
        )
        try:
            with urllib.request.urlopen(
                req, timeout=self.timeout_s, context=self.ssl_context
            ) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            if exc.code == 404 and path.startswith("/schemas/ids/"):
                raise SchemaNotFound(f"schema {path} not found: {detail}", 404) from exc
            if exc.code in (401, 403):
                raise RegistryError(self._refused(exc.code), exc.code) from None
            raise RegistryError(
                f"{method} {self.url}{path} -> HTTP {exc.code}: {detail}", exc.code
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = exc if isinstance(exc, ssl.SSLError) else getattr(exc, "reason", None)
            if isinstance(reason, ssl.SSLError):
                raise RegistryError(
                    f"schema registry at {self.url}: TLS handshake failed ({reason}): check "
                    "PSSYNC_SCHEMA_REGISTRY_CA_FILE (and PSSYNC_SCHEMA_REGISTRY_CERT_FILE / "
                    "PSSYNC_SCHEMA_REGISTRY_KEY_FILE if it requires a client certificate)"
                ) from None
            raise RegistryError(f"schema registry at {self.url} unreachable: {exc}") from exc
        return json.loads(raw) if raw else None

    def _refused(self, status: int) -> str:
        what = "refused the credentials of user " + repr(self.username)
        if "Authorization" not in self._headers:
            what = "requires credentials"
        elif status == 403:
            what = f"denied user {self.username!r} access"
        return (
            f"schema registry at {self.url} {what} (HTTP {status}): check "
            "PSSYNC_SCHEMA_REGISTRY_USERNAME / PSSYNC_SCHEMA_REGISTRY_PASSWORD_FILE"
        )

    def register(self, subject: str, schema: str) -> int:
        """Register (or find) `schema` under `subject`; returns its global ID."""
        cached = self._registered.get((subject, schema))
        if cached is not None:
            return cached
        reply = self._request("POST", f"/subjects/{subject}/versions", {"schema": schema})
        schema_id = int(reply["id"])
        self._registered[(subject, schema)] = schema_id
        self._by_id.setdefault(schema_id, schema)
        return schema_id

    def schema_by_id(self, schema_id: int) -> str:
        cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        reply = self._request("GET", f"/schemas/ids/{schema_id}")
        text = str(reply["schema"])
        self._by_id[schema_id] = text
        return text

    def set_compatibility(self, level: str, subject: str | None = None) -> None:
        path = "/config" if subject is None else f"/config/{subject}"
        self._request("PUT", path, {"compatibility": level})

    def subjects(self) -> list[str]:
        return list(self._request("GET", "/subjects"))

    def ping(self) -> None:
        """Raise RegistryError unless the registry answers."""
        self._request("GET", "/subjects")
