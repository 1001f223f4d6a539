"""pssync's Kafka Connect connectors: their configs, validated and applied over Connect's REST API.

The configs are the `*.json` files beside this module in `connect/`, each
`{"name": ..., "config": {...}}` as Connect's API takes it, with `${VAR}`
placeholders for what differs per deployment (`Target.values`): the topic prefix
(`TOPIC_PREFIX`; Debezium's topic.prefix is `${TOPIC_PREFIX}cdc`), the database
(`DB_HOST`, `DB_PORT`, `DB_NAME`, `DB_USER`, `DB_PASSWORD`), the replication slot and
publication (`SLOT_NAME`) and the registry's Apicurio v2 API (`APICURIO_URL`, for
Apicurio's converter, which writes the Confluent wire format the codec reads).
Connect's own `${provider:path:key}` references pass through untouched.

- `cdc-postgres.json`: Debezium's PostgreSQL source, every platform table into
  `cdc.<platform>.<table>`, keys and values Avro through the registry.
- `erp-inbox-sink.json`: Debezium's JDBC sink, `erp.cmd.*` into the ERP inbox
  (`connectors/sql/erp_inbox.sql`) upserted by command_id, so that a command
  delivered again (the sink is at-least-once) is applied once; records it cannot
  convert go to `erp.cmd.dlq` with the error in headers, and the sink goes on.

`apply` is idempotent: `PUT /connectors/{name}/config` creates or updates, and a
config equal to the running one is left alone; it returns once the connectors and
their tasks run, or names the one that failed.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pssync.settings import Settings

CONFIG_DIR = Path(__file__).resolve().parent / "connect"
_PLACEHOLDER = re.compile(r"\$\{([A-Z_]+)\}")


class ConnectError(RuntimeError):
    """Connect refused a request, or a connector config is invalid."""


class ConnectUnavailable(ConnectError):
    """Nothing answers at the Connect URL."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where the connectors run and what they connect to."""

    connect_url: str
    topic_prefix: str
    db_host: str
    db_port: int
    db_name: str
    db_user: str
    db_password: str
    apicurio_url: str

    @classmethod
    def from_env(cls, settings: Settings, **overrides: Any) -> Target:
        """From settings and `PSSYNC_CONNECT_*` / `PSSYNC_DB_*` (defaults: the dev stack)."""
        env = os.environ
        values: dict[str, Any] = {
            "connect_url": env.get("PSSYNC_CONNECT_URL") or "http://127.0.0.1:8083",
            "topic_prefix": settings.topic_prefix,
            "db_host": env.get("PSSYNC_DB_HOST") or "127.0.0.1",
            "db_port": env.get("PSSYNC_DB_PORT") or env.get("PSSYNC_DEV_POSTGRES_PORT") or 55432,
            "db_name": env.get("PSSYNC_DB_NAME") or "platforms",
            "db_user": env.get("PSSYNC_DB_USER") or "pssync",
            "db_password": env.get("PSSYNC_DB_PASSWORD") or "pssync",
            "apicurio_url": env.get("PSSYNC_CONNECT_REGISTRY_URL")
            or apicurio_v2_url(settings.schema_registry_url),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            values["db_port"] = int(values["db_port"])
        except ValueError:
            raise ConnectError(f"PSSYNC_DB_PORT={values['db_port']!r} is not a port") from None
        return cls(**values)

    @property
    def slot_name(self) -> str:
        """Replication slot and publication: one per topic prefix ([a-z0-9_], <= 63)."""
        return re.sub(r"[^a-z0-9_]", "_", f"pssync_{self.topic_prefix}cdc".lower())[:63]

    @property
    def values(self) -> dict[str, str]:
        return {
            "TOPIC_PREFIX": self.topic_prefix,
            "DB_HOST": self.db_host,
            "DB_PORT": str(self.db_port),
            "DB_NAME": self.db_name,
            "DB_USER": self.db_user,
            "DB_PASSWORD": self.db_password,
            "SLOT_NAME": self.slot_name,
            "APICURIO_URL": self.apicurio_url,
        }


def apicurio_v2_url(registry_url: str) -> str:
    """Apicurio's v2 API beside its Confluent-compatible one (`.../apis/ccompat/v7`)."""
    base, sep, _ = registry_url.rstrip("/").rpartition("/apis/ccompat/")
    if not sep:
        raise ConnectError(
            f"cannot derive Apicurio's v2 API from the registry URL {registry_url!r} (the "
            "connectors' Avro converter is Apicurio's); set PSSYNC_CONNECT_REGISTRY_URL, "
            "e.g. http://registry:8080/apis/registry/v2"
        )
    return f"{base}/apis/registry/v2"


@dataclass(frozen=True, slots=True)
class Connector:
    name: str
    config: dict[str, str]
    source: Path

    @property
    def connector_class(self) -> str:
        return self.config["connector.class"]


def substitute(text: str, values: dict[str, str], source: Path) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ConnectError(f"{source.name}: unknown placeholder ${{{name}}}")
        return values[name]

    return _PLACEHOLDER.sub(one, text)


def load(
    target: Target, only: list[str] | None = None, directory: Path = CONFIG_DIR
) -> list[Connector]:
    """The connector configs in `directory`, placeholders filled; `only` by file stem."""
    files = sorted(directory.glob("*.json"))
    if only:
        unknown = sorted(set(only) - {f.stem for f in files})
        if unknown:
            known = ", ".join(f.stem for f in files)
            raise ConnectError(f"no connector config {unknown[0]!r} (known: {known})")
        files = [f for f in files if f.stem in only]
    out = []
    for path in files:
        text = substitute(path.read_text(), target.values, path)
        try:
            doc = json.loads(text)
            name, config = str(doc["name"]), doc["config"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConnectError(f"{path}: not a {{name, config}} object ({exc})") from None
        if "connector.class" not in config:
            raise ConnectError(f"{path}: config has no connector.class")
        out.append(Connector(name, {k: str(v) for k, v in config.items()}, path))
    return out


class ConnectClient:
    """Blocking client of Connect's REST API."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                detail = json.loads(raw).get("message") or raw.decode(errors="replace")
            except (ValueError, AttributeError):
                detail = raw.decode(errors="replace")
            raise ConnectError(f"{method} {path} -> HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ConnectUnavailable(
                f"Kafka Connect at {self.url} is unreachable ({exc}); start it with "
                "`pssync dev up --with-connect` or set PSSYNC_CONNECT_URL"
            ) from None

    def get(self, path: str) -> Any:
        return self.request("GET", path)[1]

    def validate(self, connector: Connector) -> dict[str, list[str]]:
        """Field -> errors, as Connect's validation of the connector's plugin finds them."""
        plugin = urllib.parse.quote(connector.connector_class, safe="")
        body = {**connector.config, "name": connector.name}
        _, reply = self.request("PUT", f"/connector-plugins/{plugin}/config/validate", body)
        errors: dict[str, list[str]] = {}
        for item in reply.get("configs", []):
            value = item.get("value") or {}
            if value.get("errors"):
                errors[str(value.get("name"))] = [str(e) for e in value["errors"]]
        return errors

    def apply(self, connector: Connector) -> str:
        """Create or update; 'created', 'updated' or 'unchanged'."""
        name = urllib.parse.quote(connector.name, safe="")
        try:
            current = self.get(f"/connectors/{name}/config")
        except ConnectUnavailable:
            raise
        except ConnectError:
            current = None
        wanted = {**connector.config, "name": connector.name}
        if current == wanted:
            return "unchanged"
        status, _ = self.request("PUT", f"/connectors/{name}/config", connector.config)
        return "created" if status == 201 else "updated"

    def wait_running(self, name: str, timeout_s: float = 60.0) -> None:
        """Until the connector and every task run; a failed one is a ConnectError.

        Some plugins check parts of their config only when a task starts (Debezium's
        JDBC sink its enumerations), so a config Connect validated can still fail here.
        """
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                last = self.status(name)
            except ConnectUnavailable:
                raise
            except ConnectError:  # not known yet, just after it was created
                time.sleep(0.5)
                continue
            parts = [("connector", last["connector"])]
            parts += [(f"task {t['id']}", t) for t in last.get("tasks", [])]
            for what, part in parts:
                if part["state"] == "FAILED":
                    trace = (part.get("trace") or "?").strip().splitlines()[0]
                    raise ConnectError(f"{name}: {what} FAILED: {trace} (see Connect's log)")
            if len(parts) > 1 and all(part["state"] == "RUNNING" for _, part in parts):
                return
            time.sleep(0.5)
        raise ConnectError(f"{name} is not running after {timeout_s:.0f}s: {last}")

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get(f"/connectors/{urllib.parse.quote(name, safe='')}/status"))

    def action(self, name: str, verb: str) -> None:
        """pause, resume, stop (PUT) or restart (POST, with its tasks)."""
        quoted = urllib.parse.quote(name, safe="")
        if verb == "restart":
            self.request("POST", f"/connectors/{quoted}/restart?includeTasks=true")
        else:
            self.request("PUT", f"/connectors/{quoted}/{verb}")

    def delete(self, name: str) -> None:
        self.request("DELETE", f"/connectors/{urllib.parse.quote(name, safe='')}")


def validate_all(
    client: ConnectClient, connectors: list[Connector]
) -> dict[str, dict[str, list[str]]]:
    """Connector name -> field -> errors (empty for a valid config)."""
    return {c.name: client.validate(c) for c in connectors}


def apply_all(
    client: ConnectClient, connectors: list[Connector], wait_s: float | None = 60.0
) -> dict[str, str]:
    """Validate every config first (nothing is applied if one is invalid), apply each,
    then (unless `wait_s` is None) wait until each runs."""
    invalid = {n: e for n, e in validate_all(client, connectors).items() if e}
    if invalid:
        raise ConnectError("invalid connector config:\n" + format_errors(invalid))
    result = {c.name: client.apply(c) for c in connectors}
    if wait_s is not None:
        for c in connectors:
            client.wait_running(c.name, wait_s)
    return result


def format_errors(errors: dict[str, dict[str, list[str]]]) -> str:
    lines = []
    for name, fields in errors.items():
        for field, messages in sorted(fields.items()):
            for message in messages:
                lines.append(f"{name}: {field}: {message}")
    return "\n".join(lines)
