"""Settings from the contract's environment variables, validated by pydantic.

Every variable is `PSSYNC_<FIELD>`; a bad value stops start-up with a message
naming the variable, the value and what is expected.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

DEV_KAFKA_PORT = 9092
DEV_REGISTRY_PORT = 8081
DEV_REGISTRY_URL = f"http://127.0.0.1:{DEV_REGISTRY_PORT}/apis/ccompat/v7"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "pssync"


def default_instance_id(web_port: int) -> str:
    """This host's name and the worker's web port: stable across restarts of the same
    worker (a StatefulSet pod keeps its name), and different for two workers on one host
    (they cannot share a port), whatever data directory they use."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()) or "localhost"
    return f"{host[:200]}-{web_port}"


# variables earlier versions read, and what replaced them
RETIRED = {
    "PSSYNC_REORDER_WINDOW_S": "changes are aligned on event time; see PSSYNC_SOURCE_IDLE_S",
}


class SettingsError(ValueError):
    """A setting has a bad value; the message names the environment variable."""


KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]


def shown(field: str, values: Mapping[str, Any]) -> str:
    """A setting's value as an error message may show it: never a secret."""
    info = Settings.model_fields.get(field)
    if info is not None and info.repr is False:
        return "(hidden)"
    return re.sub(r"//[^/@\s]*@", "//(hidden)@", str(values.get(field, "")))


def security_problems(s: Settings) -> list[str]:
    """What is wrong with the combination of the security settings (no file is read)."""
    problems = []
    protocol = s.kafka_security_protocol
    uses_sasl, uses_tls = protocol.startswith("SASL_"), protocol.endswith("SSL")
    at = f"PSSYNC_KAFKA_SECURITY_PROTOCOL={protocol}"
    if uses_sasl:
        if not s.kafka_sasl_mechanism:
            problems.append(
                f"{at} needs PSSYNC_KAFKA_SASL_MECHANISM (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
            )
        if not s.kafka_sasl_username:
            problems.append(f"{at} needs PSSYNC_KAFKA_SASL_USERNAME")
        if not (s.kafka_sasl_password_file or s.kafka_sasl_password):
            problems.append(f"{at} needs PSSYNC_KAFKA_SASL_PASSWORD_FILE")
    else:
        sasl = [
            name
            for name in ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password_file")
            if getattr(s, name)
        ] + (["kafka_sasl_password"] if s.kafka_sasl_password else [])
        if sasl:
            names = ", ".join(f"PSSYNC_{n.upper()}" for n in sasl)
            problems.append(
                f"{names} set, but {at} does not use SASL: set it to SASL_SSL or SASL_PLAINTEXT"
            )
    if s.kafka_sasl_password_file and s.kafka_sasl_password:
        problems.append(
            "both PSSYNC_KAFKA_SASL_PASSWORD_FILE and PSSYNC_KAFKA_SASL_PASSWORD are set: keep one"
        )
    tls = ("kafka_ssl_ca_file", "kafka_ssl_cert_file", "kafka_ssl_key_file")
    tls_set = [n for n in (*tls, "kafka_ssl_key_password_file") if getattr(s, n)]
    if tls_set and not uses_tls:
        names = ", ".join(f"PSSYNC_{n.upper()}" for n in tls_set)
        problems.append(f"{names} set, but {at} does not use TLS: set it to SSL or SASL_SSL")
    problems += _key_pair(s, "kafka_ssl")
    registry = "PSSYNC_SCHEMA_REGISTRY"
    if s.schema_registry_password_file and s.schema_registry_password:
        problems.append(f"both {registry}_PASSWORD_FILE and {registry}_PASSWORD are set: keep one")
    has_password = bool(s.schema_registry_password_file or s.schema_registry_password)
    if s.schema_registry_username and not has_password:
        problems.append(f"{registry}_USERNAME needs {registry}_PASSWORD_FILE")
    if has_password and not s.schema_registry_username:
        problems.append(f"a schema registry password needs {registry}_USERNAME")
    registry_tls = [
        n
        for n in ("ca_file", "cert_file", "key_file", "key_password_file")
        if getattr(s, f"schema_registry_{n}")
    ]
    if registry_tls and not s.schema_registry_url.startswith("https://"):
        names = ", ".join(f"{registry}_{n.upper()}" for n in registry_tls)
        problems.append(f"{names} set, but PSSYNC_SCHEMA_REGISTRY_URL is not https://")
    problems += _key_pair(s, "schema_registry")
    return problems


def _key_pair(s: Settings, prefix: str) -> list[str]:
    """A client certificate comes with its key; a key password with a key."""
    cert = getattr(s, f"{prefix}_cert_file")
    key = getattr(s, f"{prefix}_key_file")
    name = f"PSSYNC_{prefix.upper()}"
    if bool(cert) != bool(key):
        return [f"{name}_CERT_FILE and {name}_KEY_FILE go together: set both or neither"]
    if getattr(s, f"{prefix}_key_password_file") and not key:
        return [f"{name}_KEY_PASSWORD_FILE set without {name}_KEY_FILE"]
    return []


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kafka_bootstrap: str = Field("localhost:9092", min_length=1)
    schema_registry_url: str = DEV_REGISTRY_URL
    app_id: str = Field("pssync", pattern=r"^[A-Za-z0-9._-]+$")
    data_dir: Path = Field(default_factory=default_data_dir)
    web_port: int = Field(6066, ge=1, le=65535)
    web_host: str = "0.0.0.0"
    topic_prefix: str = Field("", pattern=r"^[A-Za-z0-9._-]*$")
    dependency_timeout_s: float = Field(900, ge=0)
    orphan_grace_s: float = Field(900, ge=0)
    project_setup_sla_s: float = Field(86400, ge=0)
    # pssync's own: partitions of the internal topics it creates, batching, ticks
    partitions: int = Field(3, ge=1, le=1000)
    batch_size: int = Field(1000, ge=1, le=100_000)
    batch_within_s: float = Field(0.05, gt=0, le=10)
    tick_interval_s: float = Field(1.0, gt=0, le=60)
    # a caught-up source partition with no new record for this long stops holding back
    # stream time (the event-time alignment's skew bound; see streams/alignment.py)
    source_idle_s: float = Field(2.0, gt=0, le=3600)
    # while only snapshots have been read, every source idle this long before event time
    # starts moving (a snapshot's tables arrive one after another)
    snapshot_idle_s: float = Field(60.0, ge=0, le=86400)
    # how long (event time) what is finished stays in state: posted time in closed
    # periods, deleted entities, closed periods nothing reads (see streams/worker_flow.py)
    retention_s: float = Field(35 * 86400, ge=0)
    # a changelog restore fails (and is retried) only after this long without a record
    restore_stall_timeout_s: float = Field(60.0, gt=0)
    # static group membership (KIP-345): this worker's group.instance.id. A worker that
    # restarts with the same id gets its partitions back without a rebalance, however it
    # stopped. Empty: `<host name>-<web port>` (default_instance_id); "none": dynamic
    # membership (every start is a new member). Two live workers must not share one.
    instance_id: str = Field("", pattern=r"^[A-Za-z0-9._-]{0,249}$")
    # how long the group waits for a worker that stopped heartbeating (a crash, or a
    # static member that stopped) before its partitions move to the other workers
    session_timeout_s: float = Field(45.0, ge=6, le=1800)
    # how long a rebalance waits for every live worker to rejoin
    rebalance_timeout_s: float = Field(60.0, ge=1, le=1800)
    # the operations API (pssync.api): `name:scopes:sha256hex;...` (domain.md); hashes
    # only, and still kept out of reprs and logs
    api_tokens: str = Field("", repr=False)
    # how the other workers reach this one's API (forwarded requests); default
    # http://<host name>:<web port>
    advertised_url: str = Field("", pattern=r"^(https?://[^\s/]+)?$")
    # per token: sustained requests per second, and the burst above it
    api_rate_per_s: float = Field(50.0, gt=0)
    api_burst: int = Field(200, ge=1)
    # the largest request body the API reads
    api_max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    # what a crash can cost (streams/commit.py, README "Processing guarantee"):
    # at_least_once: a batch's outputs are flushed before its offsets are committed, so a
    #   crash replays at most one batch, whose records carry the same deterministic ids;
    # exactly_once: each batch's outputs, changelogs and input offsets commit in one Kafka
    #   transaction (consumers of the outputs must read with isolation.level=read_committed)
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    # -- connecting to a secured Kafka and registry (pssync.security applies them to
    # every client). Secrets are read from files (*_FILE) when a client is built; the
    # direct *_PASSWORD variants are for convenience and are kept out of reprs and logs.
    kafka_security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = ""
    kafka_sasl_username: str = ""
    kafka_sasl_password_file: str = ""
    kafka_sasl_password: str = Field("", repr=False)
    # PEM files: the CA that signed the brokers' certificates (empty: the system's CAs),
    # and this client's certificate and key, for brokers that require one (mutual TLS)
    kafka_ssl_ca_file: str = ""
    kafka_ssl_cert_file: str = ""
    kafka_ssl_key_file: str = ""
    kafka_ssl_key_password_file: str = ""
    # check that a broker's certificate names the host connected to (off only for tests)
    kafka_ssl_check_hostname: bool = True
    schema_registry_username: str = ""
    schema_registry_password_file: str = ""
    schema_registry_password: str = Field("", repr=False)
    schema_registry_ca_file: str = ""
    schema_registry_cert_file: str = ""
    schema_registry_key_file: str = ""
    schema_registry_key_password_file: str = ""

    @field_validator("schema_registry_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        if "@" in value.split("://", 1)[1].split("/", 1)[0]:
            raise ValueError(
                "must not carry credentials: use PSSYNC_SCHEMA_REGISTRY_USERNAME and "
                "PSSYNC_SCHEMA_REGISTRY_PASSWORD_FILE"
            )
        return value.rstrip("/")

    @model_validator(mode="after")
    def _security(self) -> Settings:
        problems = security_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{server!r} is not host:port")
        return value

    @property
    def idle_ttl_ms(self) -> int:
        """How long a keyed flow trusts an "idle" report (refreshed every tick)."""
        return int(max(5 * self.tick_interval_s, 2 * self.source_idle_s) * 1000)

    @property
    def kafka_url(self) -> str:
        return ",".join(f"kafka://{s.strip()}" for s in self.kafka_bootstrap.split(","))

    def topic(self, logical: str) -> str:
        """The physical Kafka topic of a contract topic."""
        return self.topic_prefix + logical

    def logical(self, physical: str) -> str:
        if self.topic_prefix and physical.startswith(self.topic_prefix):
            return physical[len(self.topic_prefix) :]
        return physical

    @property
    def group_instance_id(self) -> str | None:
        """The consumer's group.instance.id, or None for dynamic membership."""
        if self.instance_id == "none":
            return None
        return self.instance_id or default_instance_id(self.web_port)

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee == "exactly_once"

    @property
    def transactional_id(self) -> str:
        """The output producer's transactional.id (exactly_once): stable across restarts of
        one worker, so a restarted worker fences its previous incarnation and aborts the
        transaction that incarnation left open."""
        member = self.group_instance_id or default_instance_id(self.web_port)
        return f"{self.group_id}-{member}"

    @property
    def canonical_url(self) -> str:
        """This worker's API as the other workers reach it."""
        return self.advertised_url or f"http://{socket.gethostname()}:{self.web_port}"

    @property
    def group_id(self) -> str:
        """The consumer group (Faust app id): isolated per topic prefix, like the topics."""
        return f"{self.topic_prefix}{self.app_id}"

    def internal_topic(self, name: str) -> str:
        return f"{self.topic_prefix}{self.app_id}-{name}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build from `PSSYNC_*` variables (and explicit overrides, e.g. CLI flags)."""
        env = os.environ if env is None else env
        for name, instead in RETIRED.items():
            if env.get(name):
                logging.getLogger(__name__).warning("%s is no longer used: %s", name, instead)
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = env.get(f"PSSYNC_{name.upper()}")
            if raw is not None and raw != "":
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                message = str(err["msg"]).removeprefix("Value error, ")
                if not err["loc"]:  # a rule across several settings: it names them
                    problems.append(message)
                    continue
                field = str(err["loc"][0])
                problems.append(f"PSSYNC_{field.upper()}={shown(field, values)}: {message}")
            raise SettingsError("invalid settings: " + "; ".join(problems)) from None
