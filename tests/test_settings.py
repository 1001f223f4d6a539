"""Settings from the contract's PSSYNC_* environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from pssync.settings import DEV_REGISTRY_URL, Settings, SettingsError


def test_defaults_match_the_contract(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))

    settings = Settings.from_env({})

    assert settings.kafka_bootstrap == "localhost:9092"
    assert settings.schema_registry_url == DEV_REGISTRY_URL
    assert DEV_REGISTRY_URL == "http://127.0.0.1:8081/apis/ccompat/v7"
    assert settings.app_id == "pssync"
    assert settings.data_dir == tmp_path / "pssync"
    assert settings.web_port == 6066
    assert settings.topic_prefix == ""
    assert settings.dependency_timeout_s == 900
    assert settings.orphan_grace_s == 900
    assert settings.project_setup_sla_s == 86400


def test_from_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PSSYNC_APP_ID", "from-os-env")
    monkeypatch.setenv("PSSYNC_WEB_PORT", "7070")

    settings = Settings.from_env()

    assert settings.app_id == "from-os-env"
    assert settings.web_port == 7070


def test_every_contract_variable_overrides(tmp_path: Path) -> None:
    env = {
        "PSSYNC_KAFKA_BOOTSTRAP": "kafka-1:9093,kafka-2:9093",
        "PSSYNC_SCHEMA_REGISTRY_URL": "https://registry.example.com/apis/ccompat/v7/",
        "PSSYNC_APP_ID": "pssync-prod",
        "PSSYNC_DATA_DIR": str(tmp_path / "state"),
        "PSSYNC_WEB_PORT": "8080",
        "PSSYNC_TOPIC_PREFIX": "staging.",
        "PSSYNC_DEPENDENCY_TIMEOUT_S": "30",
        "PSSYNC_ORPHAN_GRACE_S": "60.5",
        "PSSYNC_PROJECT_SETUP_SLA_S": "3600",
    }

    settings = Settings.from_env(env)

    assert settings.kafka_bootstrap == "kafka-1:9093,kafka-2:9093"
    assert settings.kafka_url == "kafka://kafka-1:9093,kafka://kafka-2:9093"
    assert settings.schema_registry_url == "https://registry.example.com/apis/ccompat/v7"
    assert settings.app_id == "pssync-prod"
    assert settings.data_dir == tmp_path / "state"
    assert settings.web_port == 8080
    assert settings.topic_prefix == "staging."
    assert settings.dependency_timeout_s == 30
    assert settings.orphan_grace_s == 60.5
    assert settings.project_setup_sla_s == 3600


def test_empty_variable_means_default() -> None:
    settings = Settings.from_env({"PSSYNC_WEB_PORT": "", "PSSYNC_TOPIC_PREFIX": ""})

    assert settings.web_port == 6066
    assert settings.topic_prefix == ""


def test_unrelated_variables_are_ignored() -> None:
    settings = Settings.from_env({"PSSYNC_NOT_A_SETTING": "x", "APP_ID": "nope"})

    assert settings.app_id == "pssync"


def test_explicit_overrides_beat_the_environment() -> None:
    env = {"PSSYNC_APP_ID": "from-env", "PSSYNC_WEB_PORT": "7000"}

    settings = Settings.from_env(env, app_id="from-flag", web_port=None)

    assert settings.app_id == "from-flag"
    assert settings.web_port == 7000


def test_topic_names_with_prefix() -> None:
    settings = Settings.from_env({"PSSYNC_TOPIC_PREFIX": "t1.", "PSSYNC_APP_ID": "app"})

    assert settings.topic("cdc.hr.worker") == "t1.cdc.hr.worker"
    assert settings.logical("t1.cdc.hr.worker") == "cdc.hr.worker"
    assert settings.logical("cdc.hr.worker") == "cdc.hr.worker"
    assert settings.internal_topic("parked") == "t1.app-parked"


def test_settings_are_frozen() -> None:
    settings = Settings.from_env({})

    with pytest.raises(ValueError, match="frozen"):
        settings.web_port = 1


@pytest.mark.parametrize(
    ("variable", "value", "message_part"),
    [
        ("PSSYNC_WEB_PORT", "abc", "integer"),
        ("PSSYNC_WEB_PORT", "0", "greater than or equal to 1"),
        ("PSSYNC_WEB_PORT", "65536", "less than or equal to 65535"),
        ("PSSYNC_KAFKA_BOOTSTRAP", "localhost", "is not host:port"),
        ("PSSYNC_KAFKA_BOOTSTRAP", "kafka:9092,kafka-2", "is not host:port"),
        ("PSSYNC_SCHEMA_REGISTRY_URL", "registry:8081", "http:// or https://"),
        ("PSSYNC_APP_ID", "my app", "pattern"),
        ("PSSYNC_TOPIC_PREFIX", "team/a", "pattern"),
        ("PSSYNC_DEPENDENCY_TIMEOUT_S", "soon", "number"),
        ("PSSYNC_ORPHAN_GRACE_S", "-1", "greater than or equal to 0"),
        ("PSSYNC_PROJECT_SETUP_SLA_S", "1d", "number"),
        ("PSSYNC_LOG_LEVEL", "TRACE", "'DEBUG'"),
    ],
)
def test_bad_value_names_the_variable(variable: str, value: str, message_part: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({variable: value})

    message = str(info.value)
    assert message.startswith(f"invalid settings: {variable}={value}: ")
    assert message_part in message


def test_every_bad_variable_is_reported() -> None:
    env = {"PSSYNC_WEB_PORT": "-5", "PSSYNC_APP_ID": "a b", "PSSYNC_TOPIC_PREFIX": "ok."}

    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)

    message = str(info.value)
    assert "PSSYNC_WEB_PORT=-5" in message
    assert "PSSYNC_APP_ID=a b" in message
    assert "PSSYNC_TOPIC_PREFIX" not in message


def test_bad_override_names_the_variable_it_stands_for() -> None:
    with pytest.raises(SettingsError, match="PSSYNC_WEB_PORT=70000"):
        Settings.from_env({}, web_port=70000)


def test_processing_guarantee_and_its_transactional_id() -> None:
    default = Settings.from_env({})
    assert default.processing_guarantee == "at_least_once"
    assert not default.exactly_once

    env = {
        "PSSYNC_PROCESSING_GUARANTEE": "exactly_once",
        "PSSYNC_INSTANCE_ID": "pssync-1",
        "PSSYNC_TOPIC_PREFIX": "acme.",
    }
    eos = Settings.from_env(env)
    assert eos.exactly_once
    # the worker's own and stable across restarts: a restart fences its predecessor
    assert eos.transactional_id == "acme.pssync-pssync-1"
    assert Settings.from_env(env).transactional_id == eos.transactional_id
    other = Settings.from_env(env | {"PSSYNC_INSTANCE_ID": "pssync-2"})
    assert other.transactional_id != eos.transactional_id
    # dynamic membership still gets a stable id: host and port
    dynamic = Settings.from_env(env | {"PSSYNC_INSTANCE_ID": "none", "PSSYNC_WEB_PORT": "7001"})
    assert dynamic.transactional_id.endswith("-7001")

    with pytest.raises(SettingsError, match="PSSYNC_PROCESSING_GUARANTEE=twice"):
        Settings.from_env({"PSSYNC_PROCESSING_GUARANTEE": "twice"})
