"""Shared fixtures. Kafka tests use the real dev stack and fail (never skip) without it.

- `stack`: session-wide; starts `pssync dev up` (or reuses a running stack), or
  uses PSSYNC_KAFKA_BOOTSTRAP / PSSYNC_SCHEMA_REGISTRY_URL when
  PSSYNC_TEST_EXTERNAL_STACK=1.
- `settings_factory`: Settings with a fresh topic prefix, app id and data dir
  per call, so tests never share topics, groups or state.
- `worker_factory`: runs `pssync worker` as a real subprocess and waits for /ready.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pssync.settings import Settings

# the deploy tests' tool fixtures (helm, composecheck), built once per session
pytest_plugins = ["tests.deploy_tools"]


@dataclass(frozen=True)
class Stack:
    bootstrap: str
    registry_url: str


@pytest.fixture(scope="session")
def stack() -> Stack:
    if os.environ.get("PSSYNC_TEST_EXTERNAL_STACK") == "1":
        return Stack(os.environ["PSSYNC_KAFKA_BOOTSTRAP"], os.environ["PSSYNC_SCHEMA_REGISTRY_URL"])
    from pssync import devstack

    cfg = devstack.StackConfig.from_env()
    try:
        devstack.up(cfg)
    except devstack.DevStackError as exc:
        pytest.fail(f"the dev stack (Kafka + schema registry) could not start: {exc}")
    return Stack(cfg.bootstrap, cfg.registry_url)


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def settings_factory(stack: Stack, tmp_path: Path) -> SettingsFactory:
    def make(**overrides: Any) -> Settings:
        tag = uuid.uuid4().hex[:10]
        values: dict[str, Any] = {
            "kafka_bootstrap": stack.bootstrap,
            "schema_registry_url": stack.registry_url,
            "topic_prefix": f"t{tag}.",
            "app_id": f"pssync-test-{tag}",
            "data_dir": tmp_path / f"state-{tag}",
            "batch_within_s": 0.02,
            "tick_interval_s": 0.5,
        }
        # the Kafka tests under the other guarantee: PSSYNC_TEST_PROCESSING_GUARANTEE=exactly_once
        guarantee = os.environ.get("PSSYNC_TEST_PROCESSING_GUARANTEE")
        if guarantee:
            values["processing_guarantee"] = guarantee
        values.update(overrides)
        return Settings(**values)

    return make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSSYNC_")}
    for name, value in settings.model_dump().items():
        env[f"PSSYNC_{name.upper()}"] = str(value)
    return env


@dataclass
class WorkerHandle:
    settings: Settings
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.web_port}"

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def log(self, tail: int = 5000) -> str:
        text = self.log_path.read_text(errors="replace")
        return text[-tail:] if tail else text

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


WorkerFactory = Callable[[Settings], WorkerHandle]


def launch_worker(settings: Settings, log_path: Path, timeout_s: float = 90) -> WorkerHandle:
    """`pssync worker` with exactly `settings`, once its /ready is 200 (fails the test if
    it exits or is not ready in time; the caller stops it)."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pssync", "worker"],
            env=settings_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    handle = WorkerHandle(settings, proc, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"worker exited with {proc.returncode}:\n{handle.log()}")
        try:
            if handle.get("/ready")[0] == 200:
                return handle
        except OSError:
            pass
        time.sleep(0.2)
    handle.stop()
    pytest.fail(f"worker not ready within {timeout_s:.0f}s:\n{handle.log()}")


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[WorkerFactory]:
    """Starts `pssync worker` with exactly the given settings (the same port and data dir
    on a restart, so the same default instance id) and waits for /ready."""
    started: list[WorkerHandle] = []

    def start(settings: Settings) -> WorkerHandle:
        handle = launch_worker(settings, tmp_path / f"worker-{len(started)}.log", 120)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[WorkerFactory]:
    started: list[WorkerHandle] = []

    def start(settings: Settings) -> WorkerHandle:
        settings = settings.model_copy(update={"web_port": free_port(), "web_host": "127.0.0.1"})
        handle = launch_worker(settings, tmp_path / f"worker-{len(started)}.log")
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()
