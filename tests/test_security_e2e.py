"""pssync through a locked-down Kafka and registry: SASL_SSL with SCRAM, mutual TLS, and a
registry behind HTTPS with basic authentication, all secrets read from files.

The broker is a separate one started for this module (`tests.secure_kafka`), never the
shared dev stack; the registry is the dev stack's, behind a TLS + basic-auth proxy
started here. A real `pssync worker`, `pssync produce` and `pssync consume` run
through both; then a wrong password must stop each of them with one clear line.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pssync.settings import Settings
from tests.conftest import SettingsFactory, Stack, free_port, launch_worker, settings_env
from tests.kafka_helpers import cdc_line, produce_cli
from tests.secure_kafka import SecureKafka, start_secure_kafka
from tests.worker_harness import cost_center, hr

pytestmark = pytest.mark.kafka

HR, CC = "cdc.hr.worker", "cdc.erp.cost_center"


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    try:
        kafka = start_secure_kafka(tmp_path_factory.mktemp("secure-kafka"))
    except Exception as exc:  # a missing JDK, openssl or jar is a failure, never a skip
        pytest.fail(f"the secured Kafka could not start: {exc}")
    yield kafka
    kafka.stop()


class RegistryProxy:
    """HTTPS with basic authentication in front of the dev registry (plain HTTP)."""

    def __init__(self, upstream: str, cert: Path, key: Path, user: str, password: str) -> None:
        self.upstream = upstream.split("/apis/", 1)[0]
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.port = free_port()
        self.authorized = 0
        self.refused = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/apis/ccompat/v7"

    async def _handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != self.expected:
            self.refused += 1
            return web.json_response({"error_code": 401, "message": "Unauthorized"}, status=401)
        self.authorized += 1
        headers = {k: v for k, v in request.headers.items() if k in ("Content-Type", "Accept")}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                self.upstream + request.rel_url.path_qs,
                data=await request.read(),
                headers=headers,
            ) as resp,
        ):
            body = await resp.read()
            return web.Response(body=body, status=resp.status, content_type=resp.content_type)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.context).start()

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture(scope="module")
def registry_proxy(stack: Stack, secure_kafka: SecureKafka) -> Iterator[RegistryProxy]:
    certs = secure_kafka.certs
    proxy = RegistryProxy(
        stack.registry_url, certs.server_cert, certs.server_key, "schemas", "reg-" + "s3cret"
    )
    proxy.start()
    yield proxy
    proxy.stop()


def secured(kafka: SecureKafka, proxy: RegistryProxy, base: Settings, **overrides: Any) -> Settings:
    registry_password = kafka.folder / "registry-password"
    registry_password.write_text("reg-s3cret\n")
    registry: dict[str, Any] = {
        "schema_registry_url": proxy.url,
        "schema_registry_username": "schemas",
        "schema_registry_password_file": str(registry_password),
        "schema_registry_ca_file": str(kafka.certs.ca),
    }
    return kafka.settings(base, **(registry | overrides))


def pssync(
    settings: Settings, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pssync", *args],
        env=settings_env(settings),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def consume_until(settings: Settings, topic: str, want: Any, timeout_s: float = 90) -> list[Any]:
    """`pssync consume TOPIC --from-beginning` until a record satisfies `want`."""
    deadline = time.monotonic() + timeout_s
    while True:
        proc = pssync(settings, "consume", topic, "--from-beginning", "--idle-timeout", "2")
        assert proc.returncode == 0, proc.stderr
        records = [json.loads(line) for line in proc.stdout.splitlines()]
        if any(want(r) for r in records):
            return records
        assert time.monotonic() < deadline, f"nothing matching on {topic}: {records}"
        time.sleep(1)


def secrets_of(kafka: SecureKafka) -> list[str]:
    return [*kafka.users.values(), "reg-s3cret", kafka.certs.keystore_password]


def test_worker_produce_and_consume_through_sasl_ssl_and_a_secured_registry(
    secure_kafka: SecureKafka,
    registry_proxy: RegistryProxy,
    settings_factory: SettingsFactory,
    tmp_path: Path,
) -> None:
    settings = secured(
        secure_kafka,
        registry_proxy,
        settings_factory(web_port=free_port(), web_host="127.0.0.1"),
    )
    log_path = tmp_path / "worker.log"
    worker = launch_worker(settings, log_path)
    try:
        produced = produce_cli(
            settings,
            [cdc_line(CC, cost_center("CC1"), lsn=1), cdc_line(HR, hr("W-SEC"), lsn=2)],
            tmp_path,
        )
        assert "sent 2 records" in produced

        commands = consume_until(
            settings, "erp.cmd.employee", lambda r: r["key"] == "W-SEC", timeout_s=90
        )

        (command,) = [c for c in commands if c["key"] == "W-SEC"]
        assert command["value"]["type"] == "UPSERT_EMPLOYEE"
        status, stats = worker.get("/stats")
        assert status == 200
        assert sum(stats["records_in"].values()) >= 2, stats["records_in"]
        status, ready = worker.get("/ready")
        assert status == 200, ready
        seen = json.dumps(stats) + json.dumps(ready) + worker.log(tail=0) + produced
    finally:
        worker.stop()
    # every request to the registry went through the proxy, authenticated
    assert registry_proxy.authorized > 0
    assert registry_proxy.refused == 0
    log = log_path.read_text()
    assert "SASL authentication error" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    for secret in secrets_of(secure_kafka):
        assert secret not in seen


def test_a_wrong_kafka_password_stops_each_command_with_one_clear_line(
    secure_kafka: SecureKafka,
    registry_proxy: RegistryProxy,
    settings_factory: SettingsFactory,
) -> None:
    wrong = secure_kafka.password_file("alice", "not-" + secure_kafka.users["alice"])
    settings = secured(
        secure_kafka,
        registry_proxy,
        settings_factory(web_port=free_port(), web_host="127.0.0.1"),
        kafka_sasl_password_file=str(wrong),
    )
    expected = (
        f"Kafka at {secure_kafka.bootstrap} refused the SASL credentials of user 'alice' "
        "(SCRAM-SHA-512): check PSSYNC_KAFKA_SASL_USERNAME / PSSYNC_KAFKA_SASL_PASSWORD_FILE"
    )
    for args in (["worker"], ["produce", "--file", "-"], ["consume", HR, "--idle-timeout", "1"]):
        started = time.monotonic()
        proc = pssync(settings, *args, timeout=60)
        took = time.monotonic() - started

        assert proc.returncode != 0, (args, proc.stdout, proc.stderr)
        errors = [line for line in proc.stderr.splitlines() if "Kafka at" in line]
        assert errors == [f"pssync {args[0]}: {expected}"], proc.stderr
        assert proc.stderr.splitlines()[-1] == errors[0]
        assert "Traceback" not in proc.stderr
        for secret in [*secrets_of(secure_kafka), "not-" + secure_kafka.users["alice"]]:
            assert secret not in proc.stdout + proc.stderr
        assert took < 30, f"{args[0]} took {took:.0f}s to give up"


def test_a_wrong_registry_password_stops_the_cli_with_one_clear_line(
    secure_kafka: SecureKafka,
    registry_proxy: RegistryProxy,
    settings_factory: SettingsFactory,
    tmp_path: Path,
) -> None:
    wrong = tmp_path / "registry-password"
    wrong.write_text("not-the-password\n")
    settings = secured(
        secure_kafka,
        registry_proxy,
        settings_factory(),
        schema_registry_password_file=str(wrong),
    )

    proc = pssync(settings, "consume", HR, "--idle-timeout", "1", timeout=60)

    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"pssync consume: schema registry at {registry_proxy.url} refused the credentials of "
        "user 'schemas' (HTTP 401): check PSSYNC_SCHEMA_REGISTRY_USERNAME / "
        "PSSYNC_SCHEMA_REGISTRY_PASSWORD_FILE"
    ]
    assert "not-the-password" not in proc.stderr


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "PLAIN"])
def test_the_other_sasl_mechanisms_connect(secure_kafka: SecureKafka, mechanism: str) -> None:
    from pssync.connectors.kafka import check_kafka

    base = Settings(data_dir=secure_kafka.folder / "unused")
    check_kafka(secure_kafka.settings(base, user="bob", kafka_sasl_mechanism=mechanism))
