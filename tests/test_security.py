"""The security settings without a broker: validation, what each client gets, and that no
secret shows in a repr, an error message or a log line. (The real broker: test_security_e2e.)
"""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from typing import Any

import faust
import pytest

from pssync.avro.registry import RegistryClient, RegistryError
from pssync.connectors.kafka import client_config
from pssync.security import faust_credentials, librdkafka_config, registry_tls
from pssync.settings import Settings, SettingsError
from tests.secure_kafka import Certificates, make_certificates

SASL = {
    "PSSYNC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "PSSYNC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "PSSYNC_KAFKA_SASL_USERNAME": "alice",
}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def secret_file(tmp_path: Path, content: str, name: str = "password") -> str:
    path = tmp_path / name
    path.write_text(content + "\n")
    return str(path)


def test_plaintext_by_default_and_no_security_properties() -> None:
    settings = Settings.from_env({})
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert librdkafka_config(settings) == {}
    assert faust_credentials(settings) is None
    assert set(client_config(settings)) == {"bootstrap.servers", "logger"}


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        (
            {"PSSYNC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            "PSSYNC_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs PSSYNC_KAFKA_SASL_MECHANISM "
            "(PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)",
        ),
        (
            {**SASL, "PSSYNC_KAFKA_SASL_USERNAME": ""},
            "PSSYNC_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs PSSYNC_KAFKA_SASL_USERNAME",
        ),
        (SASL, "needs PSSYNC_KAFKA_SASL_PASSWORD_FILE"),
        (
            {"PSSYNC_KAFKA_SASL_USERNAME": "alice"},
            "PSSYNC_KAFKA_SASL_USERNAME set, but PSSYNC_KAFKA_SECURITY_PROTOCOL=PLAINTEXT "
            "does not use SASL",
        ),
        (
            {
                "PSSYNC_KAFKA_SSL_CA_FILE": "/ca.pem",
                "PSSYNC_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            },
            "PSSYNC_KAFKA_SSL_CA_FILE set, but PSSYNC_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT "
            "does not use TLS",
        ),
        (
            {"PSSYNC_KAFKA_SECURITY_PROTOCOL": "SSL", "PSSYNC_KAFKA_SSL_CERT_FILE": "/c.pem"},
            "PSSYNC_KAFKA_SSL_CERT_FILE and PSSYNC_KAFKA_SSL_KEY_FILE go together",
        ),
        (
            {**SASL, "PSSYNC_KAFKA_SASL_PASSWORD": "x", "PSSYNC_KAFKA_SASL_PASSWORD_FILE": "/p"},
            "both PSSYNC_KAFKA_SASL_PASSWORD_FILE and PSSYNC_KAFKA_SASL_PASSWORD are set",
        ),
        (
            {"PSSYNC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "PSSYNC_KAFKA_SASL_MECHANISM": "GSSAPI"},
            "PSSYNC_KAFKA_SASL_MECHANISM=GSSAPI",
        ),
        (
            {"PSSYNC_SCHEMA_REGISTRY_USERNAME": "u"},
            "PSSYNC_SCHEMA_REGISTRY_USERNAME needs PSSYNC_SCHEMA_REGISTRY_PASSWORD_FILE",
        ),
        (
            {"PSSYNC_SCHEMA_REGISTRY_CA_FILE": "/ca.pem"},
            "PSSYNC_SCHEMA_REGISTRY_CA_FILE set, but PSSYNC_SCHEMA_REGISTRY_URL is not https://",
        ),
        (
            {"PSSYNC_SCHEMA_REGISTRY_URL": "https://u:topsecret@registry:8081"},
            "PSSYNC_SCHEMA_REGISTRY_URL=https://(hidden)@registry:8081: must not carry",
        ),
    ],
    ids=[
        "sasl-without-mechanism",
        "sasl-without-user",
        "sasl-without-password",
        "user-without-sasl",
        "ca-without-tls",
        "cert-without-key",
        "two-passwords",
        "unknown-mechanism",
        "registry-user-without-password",
        "registry-tls-over-http",
        "credentials-in-url",
    ],
)
def test_bad_combinations_are_refused_naming_the_variables(
    env: dict[str, str], complaint: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert complaint in str(caught.value)
    assert "topsecret" not in str(caught.value)


def test_a_direct_password_never_shows(tmp_path: Path) -> None:
    env = {**SASL, "PSSYNC_KAFKA_SASL_PASSWORD": "hunter2-direct"}
    env |= {"PSSYNC_SCHEMA_REGISTRY_USERNAME": "r", "PSSYNC_SCHEMA_REGISTRY_PASSWORD": "reg-pw"}
    settings = Settings.from_env(env)
    for text in (repr(settings), str(settings)):
        assert "hunter2-direct" not in text
        assert "reg-pw" not in text
    assert librdkafka_config(settings)["sasl.password"] == "hunter2-direct"
    with pytest.raises(SettingsError) as caught:  # a bad value elsewhere: still hidden
        Settings.from_env({**env, "PSSYNC_WEB_PORT": "0"})
    assert "hunter2-direct" not in str(caught.value)


def test_every_confluent_client_gets_sasl_ssl_from_files(
    tmp_path: Path, certs: Certificates
) -> None:
    settings = Settings.from_env(
        {
            **SASL,
            "PSSYNC_KAFKA_SASL_PASSWORD_FILE": secret_file(tmp_path, "s3cret"),
            "PSSYNC_KAFKA_SSL_CA_FILE": str(certs.ca),
            "PSSYNC_KAFKA_SSL_CERT_FILE": str(certs.client_cert),
            "PSSYNC_KAFKA_SSL_KEY_FILE": str(certs.client_key),
            "PSSYNC_KAFKA_SSL_KEY_PASSWORD_FILE": str(certs.client_key_password_file),
        }
    )
    config = client_config(settings, **{"group.id": "g"})
    key_password = certs.client_key_password_file.read_text().strip()
    assert {k: v for k, v in config.items() if k != "logger"} == {
        "bootstrap.servers": "localhost:9092",
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": "s3cret",  # the file's line, without its newline
        "ssl.ca.location": str(certs.ca),
        "ssl.certificate.location": str(certs.client_cert),
        "ssl.key.location": str(certs.client_key),
        "ssl.key.password": key_password,
        "ssl.endpoint.identification.algorithm": "https",
        "group.id": "g",
    }
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert (credentials.username, credentials.password) == ("alice", "s3cret")
    assert credentials.ssl_context is not None
    assert credentials.ssl_context.check_hostname
    assert "s3cret" not in repr(credentials)


@pytest.mark.parametrize(
    ("protocol", "kind", "aiokafka_protocol"),
    [
        ("SASL_PLAINTEXT", faust.SASLCredentials, "SASL_PLAINTEXT"),
        ("SSL", faust.SSLCredentials, "SSL"),
    ],
)
def test_faust_gets_the_matching_credentials(
    tmp_path: Path, protocol: str, kind: type, aiokafka_protocol: str
) -> None:
    env = {"PSSYNC_KAFKA_SECURITY_PROTOCOL": protocol}
    if protocol.startswith("SASL"):
        env |= {
            "PSSYNC_KAFKA_SASL_MECHANISM": "PLAIN",
            "PSSYNC_KAFKA_SASL_USERNAME": "bob",
            "PSSYNC_KAFKA_SASL_PASSWORD_FILE": secret_file(tmp_path, "pw"),
        }
    credentials = faust_credentials(Settings.from_env(env))
    assert isinstance(credentials, kind)
    assert credentials.protocol.value == aiokafka_protocol


def test_an_unreadable_secret_file_is_one_clear_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    settings = Settings.from_env({**SASL, "PSSYNC_KAFKA_SASL_PASSWORD_FILE": missing})
    with pytest.raises(SettingsError, match=r"PSSYNC_KAFKA_SASL_PASSWORD_FILE=.*/nope: cannot"):
        client_config(settings)
    empty = secret_file(tmp_path, "", "empty")
    settings = Settings.from_env({**SASL, "PSSYNC_KAFKA_SASL_PASSWORD_FILE": empty})
    with pytest.raises(SettingsError, match="the file is empty"):
        client_config(settings)


def registry_settings(tmp_path: Path, certs: Certificates, **env: str) -> Settings:
    return Settings.from_env(
        {
            "PSSYNC_SCHEMA_REGISTRY_URL": "https://127.0.0.1:1/apis/ccompat/v7",
            "PSSYNC_SCHEMA_REGISTRY_USERNAME": "schemas",
            "PSSYNC_SCHEMA_REGISTRY_PASSWORD_FILE": secret_file(tmp_path, "reg-pw"),
            "PSSYNC_SCHEMA_REGISTRY_CA_FILE": str(certs.ca),
            **env,
        }
    )


def test_registry_requests_carry_basic_auth_and_verify_tls(
    tmp_path: Path, certs: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = registry_settings(
        tmp_path,
        certs,
        PSSYNC_SCHEMA_REGISTRY_CERT_FILE=str(certs.client_cert),
        PSSYNC_SCHEMA_REGISTRY_KEY_FILE=str(certs.client_key),
        PSSYNC_SCHEMA_REGISTRY_KEY_PASSWORD_FILE=str(certs.client_key_password_file),
    )
    client = RegistryClient.from_settings(settings)
    sent: list[tuple[Any, Any]] = []

    class Reply:
        def __enter__(self) -> Reply:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def read(self) -> bytes:
            return b'["s"]'

    def fake_urlopen(req: Any, timeout: float, context: Any) -> Reply:
        sent.append((req, context))
        return Reply()

    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen)

    assert client.subjects() == ["s"]

    ((req, context),) = sent
    expected = "Basic " + base64.b64encode(b"schemas:reg-pw").decode()
    assert req.get_header("Authorization") == expected
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert "reg-pw" not in repr(client)


def test_registry_tls_context_trusts_the_given_ca_only(tmp_path: Path, certs: Certificates) -> None:
    context = registry_tls(registry_settings(tmp_path, certs))
    assert context is not None
    subjects = [dict(x[0] for x in c["subject"]) for c in context.get_ca_certs()]
    assert subjects == [{"commonName": "pssync test CA"}]
    plain = Settings.from_env({})
    assert registry_tls(plain) is None
    assert RegistryClient.from_settings(plain).ssl_context is None


def test_a_wrong_key_password_is_one_clear_error(tmp_path: Path, certs: Certificates) -> None:
    settings = registry_settings(
        tmp_path,
        certs,
        PSSYNC_SCHEMA_REGISTRY_CERT_FILE=str(certs.client_cert),
        PSSYNC_SCHEMA_REGISTRY_KEY_FILE=str(certs.client_key),
        PSSYNC_SCHEMA_REGISTRY_KEY_PASSWORD_FILE=secret_file(tmp_path, "wrong-key-pw", "k"),
    )
    with pytest.raises(SettingsError, match="cannot load the client certificate and key") as e:
        registry_tls(settings)
    assert "wrong-key-pw" not in str(e.value)


def test_a_refused_registry_login_names_the_settings_not_the_password(
    tmp_path: Path, certs: Certificates
) -> None:
    import http.server
    import threading

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b'{"message": "Unauthorized"}')

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.HTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/apis/ccompat/v7"
        settings = Settings.from_env(
            {
                "PSSYNC_SCHEMA_REGISTRY_URL": url,
                "PSSYNC_SCHEMA_REGISTRY_USERNAME": "schemas",
                "PSSYNC_SCHEMA_REGISTRY_PASSWORD_FILE": secret_file(tmp_path, "reg-pw"),
            }
        )
        with pytest.raises(RegistryError) as caught:
            RegistryClient.from_settings(settings).ping()
    finally:
        server.shutdown()
        server.server_close()
    assert str(caught.value) == (
        f"schema registry at {url} refused the credentials of user 'schemas' (HTTP 401): "
        "check PSSYNC_SCHEMA_REGISTRY_USERNAME / PSSYNC_SCHEMA_REGISTRY_PASSWORD_FILE"
    )
    assert caught.value.status == 401
