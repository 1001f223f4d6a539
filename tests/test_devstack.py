"""The dev stack's user-facing behaviour: clear errors, idempotence, status."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pssync import devstack
from tests.conftest import Stack


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(devstack.DevStackError, match=f"port {port} for Kafka is taken"):
            devstack._check_port_free(port, "Kafka")


def test_missing_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devstack, "find_javas", lambda: [])
    with pytest.raises(devstack.DevStackError, match="Java 17 or newer is needed"):
        devstack.require_tools()


def test_old_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devstack, "find_javas", lambda: [(11, "/usr/bin/java")])
    with pytest.raises(devstack.DevStackError, match="Java 17 or newer"):
        devstack.require_tools()


def test_missing_maven_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devstack, "find_javas", lambda: [(17, "/usr/bin/java")])
    monkeypatch.setattr(devstack.shutil, "which", lambda name: None)
    with pytest.raises(devstack.DevStackError, match="Maven"):
        devstack.require_tools()


def test_bad_port_variable_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PSSYNC_DEV_KAFKA_PORT", "ninety")
    with pytest.raises(devstack.DevStackError, match="PSSYNC_DEV_KAFKA_PORT"):
        devstack.StackConfig.from_env()


def test_down_with_nothing_started_touches_nothing(tmp_path: Path) -> None:
    cfg = devstack.StackConfig(cache_dir=tmp_path / "cache", state_dir=tmp_path / "state")
    assert devstack.down(cfg) == {
        "registry": "not running (nothing of ours)",
        "kafka": "not running (nothing of ours)",
    }


def test_a_recycled_pid_is_not_ours(tmp_path: Path) -> None:
    cfg = devstack.StackConfig(cache_dir=tmp_path / "cache", state_dir=tmp_path / "state")
    svc = devstack.Service("kafka", cfg)
    svc.dir.mkdir(parents=True)
    svc.pid_file.write_text("1")  # alive, but not a Java we started
    assert svc.pid() is None


@pytest.mark.kafka
def test_up_is_idempotent_and_status_reports_both(stack: Stack) -> None:
    cfg = devstack.StackConfig.from_env()
    assert devstack.up(cfg) == {"kafka": "already running", "registry": "already running"}
    status = devstack.status(cfg)
    assert status["kafka"]["answering"] is True
    assert status["registry"]["answering"] is True
    assert status["kafka"]["bootstrap"] == stack.bootstrap
