"""`pssync connectors`: clear errors, and an invalid config applies nothing (real Connect)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pssync import connect_stack
from pssync.connectors import connect_api
from pssync.devstack import DevStackError
from pssync.settings import Settings
from tests.conftest import SettingsFactory, free_port, settings_env


def cli(settings_env_: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pssync", "connectors", *args],
        env=settings_env_,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_unreachable_connect_is_one_clear_line(settings_factory: SettingsFactory) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    proc = cli(settings_env(settings_factory()), "validate", "--connect-url", url)
    assert proc.returncode == 1
    assert proc.stderr.startswith("pssync connectors: ")
    assert url in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_connector_name_lists_the_known_ones(settings_factory: SettingsFactory) -> None:
    proc = cli(settings_env(settings_factory()), "apply", "--only", "nope")
    assert proc.returncode == 1
    assert "no connector config 'nope'" in proc.stderr
    assert "cdc-postgres" in proc.stderr
    assert "erp-inbox-sink" in proc.stderr


def test_unknown_placeholder_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "config": {"connector.class": "${NOPE}"}}))
    target = connect_api.Target.from_env(Settings())
    with pytest.raises(connect_api.ConnectError, match=r"bad.json: unknown placeholder \$\{NOPE\}"):
        connect_api.load(target, directory=tmp_path)


@pytest.mark.kafka
def test_an_invalid_config_is_reported_per_field_and_nothing_is_applied(
    settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    cfg = connect_stack.ConnectStackConfig.from_env()
    try:
        connect_stack.up(cfg)  # reuses the running stack
    except DevStackError as exc:
        pytest.fail(f"Kafka Connect could not start: {exc}")
    settings = settings_factory()
    target = connect_api.Target.from_env(settings, connect_url=cfg.connect_url)
    good = connect_api.load(target, ["erp-inbox-sink"])[0]
    broken = connect_api.Connector(
        f"{good.name}-broken", {**good.config, "errors.tolerance": "sometimes"}, good.source
    )
    client = connect_api.ConnectClient(cfg.connect_url)
    errors = connect_api.validate_all(client, [broken])
    assert "errors.tolerance" in errors[broken.name]
    with pytest.raises(connect_api.ConnectError, match=r"errors\.tolerance"):
        connect_api.apply_all(client, [good, broken])
    names = client.get("/connectors")
    assert good.name not in names
    assert broken.name not in names
