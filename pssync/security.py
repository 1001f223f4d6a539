"""Credentials and TLS for every client pssync opens, from the settings; secrets never shown.

`pssync.settings` names the files (`PSSYNC_*_FILE`); this module reads them each time
a client is built (so a rotated secret is picked up by the next client) and turns them
into what each library takes: librdkafka properties for confluent-kafka's consumers,
producers and admin clients (`librdkafka_config`), Faust credentials with an
`ssl.SSLContext` for aiokafka (`faust_credentials`), and the registry's
`Authorization` header and TLS context (`registry_auth_header`, `registry_tls`).

A secret goes only to the library that sends it: never into a log line, an error
message, a repr, or `/stats`. A file that cannot be read stops start-up with a
`SettingsError` naming the variable and the path, never the content.
"""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from typing import Any

from pssync.settings import Settings, SettingsError


def read_secret(path: str, variable: str) -> str:
    """The secret in a file (one line; a trailing newline is not part of it)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{variable}={path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{variable}={path}: not a UTF-8 text file") from None
    secret = text.rstrip("\r\n")
    if not secret:
        raise SettingsError(f"{variable}={path}: the file is empty")
    return secret


def _secret(settings: Settings, field: str) -> str | None:
    """`<field>_file`'s content, else `<field>` given directly, else None."""
    path = getattr(settings, f"{field}_file")
    if path:
        return read_secret(path, f"PSSYNC_{field.upper()}_FILE")
    direct = getattr(settings, field, "")
    return str(direct) if direct else None


def _readable(path: str, variable: str) -> str:
    if not Path(path).is_file():
        raise SettingsError(f"{variable}={path}: no such file")
    return path


def kafka_sasl_password(settings: Settings) -> str | None:
    return _secret(settings, "kafka_sasl_password")


def librdkafka_config(settings: Settings) -> dict[str, Any]:
    """The security properties of a confluent-kafka client (none for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    config: dict[str, Any] = {"security.protocol": protocol.lower()}
    if protocol.startswith("SASL_"):
        config |= {
            "sasl.mechanism": settings.kafka_sasl_mechanism,
            "sasl.username": settings.kafka_sasl_username,
            "sasl.password": kafka_sasl_password(settings),
        }
    if protocol.endswith("SSL"):
        if settings.kafka_ssl_ca_file:
            config["ssl.ca.location"] = _readable(
                settings.kafka_ssl_ca_file, "PSSYNC_KAFKA_SSL_CA_FILE"
            )
        if settings.kafka_ssl_cert_file:
            config["ssl.certificate.location"] = _readable(
                settings.kafka_ssl_cert_file, "PSSYNC_KAFKA_SSL_CERT_FILE"
            )
            config["ssl.key.location"] = _readable(
                settings.kafka_ssl_key_file, "PSSYNC_KAFKA_SSL_KEY_FILE"
            )
        key_password = _secret(settings, "kafka_ssl_key_password")
        if key_password is not None:
            config["ssl.key.password"] = key_password
        config["ssl.endpoint.identification.algorithm"] = (
            "https" if settings.kafka_ssl_check_hostname else "none"
        )
    return config


def tls_context(
    *,
    ca_file: str,
    cert_file: str,
    key_file: str,
    key_password: str | None,
    check_hostname: bool,
    prefix: str,
) -> ssl.SSLContext:
    """A client TLS context: server verified against `ca_file` (or the system's CAs),
    with a client certificate when one is given. `prefix` names the variables."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(
            f"{prefix}_CA_FILE={ca_file}: not a readable PEM CA file ({_reason(exc)})"
        ) from None
    context.check_hostname = check_hostname
    if cert_file:
        try:
            context.load_cert_chain(cert_file, key_file, password=key_password)
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(
                f"{prefix}_CERT_FILE={cert_file} / {prefix}_KEY_FILE={key_file}: cannot load "
                f"the client certificate and key ({_reason(exc)}; a wrong or missing "
                f"{prefix}_KEY_PASSWORD_FILE gives this too)"
            ) from None
    return context


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc)


def kafka_tls(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the aiokafka side (Faust), or None when Kafka is not TLS."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    return tls_context(
        ca_file=settings.kafka_ssl_ca_file,
        cert_file=settings.kafka_ssl_cert_file,
        key_file=settings.kafka_ssl_key_file,
        key_password=_secret(settings, "kafka_ssl_key_password"),
        check_hostname=settings.kafka_ssl_check_hostname,
        prefix="PSSYNC_KAFKA_SSL",
    )


def faust_credentials(settings: Settings) -> Any:
    """`faust.App(broker_credentials=...)`: SASL (over TLS or not) or TLS alone; None for
    PLAINTEXT. Faust hands them to aiokafka's consumer, producer and admin client."""
    import faust

    protocol = settings.kafka_security_protocol
    context = kafka_tls(settings)
    if protocol.startswith("SASL_"):
        # SASL_SSL when given a context, SASL_PLAINTEXT without (faust.auth)
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=kafka_sasl_password(settings),
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def registry_auth_header(settings: Settings) -> str | None:
    """HTTP basic authentication for the schema registry, or None."""
    if not settings.schema_registry_username:
        return None
    password = _secret(settings, "schema_registry_password") or ""
    pair = f"{settings.schema_registry_username}:{password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def registry_tls(settings: Settings) -> ssl.SSLContext | None:
    """The registry's TLS context when its URL is https:// (None: plain HTTP)."""
    if not settings.schema_registry_url.startswith("https://"):
        return None
    return tls_context(
        ca_file=settings.schema_registry_ca_file,
        cert_file=settings.schema_registry_cert_file,
        key_file=settings.schema_registry_key_file,
        key_password=_secret(settings, "schema_registry_key_password"),
        check_hostname=True,
        prefix="PSSYNC_SCHEMA_REGISTRY",
    )
