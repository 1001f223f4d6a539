"""Compose and Helm hand the credentials to the workers as files from secrets, never as
environment values (the deploy tests' tools: tests/deploy_tools.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pssync.settings import Settings
from tests.deploy_tools import COMPOSE_FILE, run
from tests.test_deploy_compose import env_of, worker_services
from tests.test_deploy_helm import chart_env, helm_template, one, worker_container


def test_chart_mounts_a_secret_as_files_for_the_file_settings(helm: str) -> None:
    docs = helm_template(
        helm,
        "--set",
        "secretFiles.secretName=kafka-credentials",
        "--set",
        "config.kafkaSecurityProtocol=SASL_SSL",
        "--set",
        "config.kafkaSaslMechanism=SCRAM-SHA-512",
        "--set",
        "config.kafkaSaslUsername=pssync",
        "--set",
        "config.kafkaSaslPasswordFile=/var/run/secrets/pssync/kafka-sasl-password",
        "--set",
        "config.kafkaSslCaFile=/var/run/secrets/pssync/kafka-ca.pem",
    )
    container = worker_container(docs)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["secret-files"]["mountPath"] == "/var/run/secrets/pssync"
    assert mounts["secret-files"]["readOnly"] is True
    volumes = {
        v["name"]: v for v in one(docs, "StatefulSet")["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["secret-files"]["secret"]["secretName"] == "kafka-credentials"
    assert volumes["secret-files"]["secret"]["defaultMode"] == 0o440
    settings = Settings.from_env(chart_env(docs))
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_password_file == "/var/run/secrets/pssync/kafka-sasl-password"
    assert one(docs, "ConfigMap")["data"]["PSSYNC_KAFKA_SASL_PASSWORD"] == ""  # only the path


def test_chart_mounts_nothing_by_default(helm: str) -> None:
    docs = helm_template(helm)
    assert "secret-files" not in {m["name"] for m in worker_container(docs)["volumeMounts"]}


def test_compose_takes_the_credentials_from_secrets(composecheck: str, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "PSSYNC_KAFKA_SECURITY_PROTOCOL=SASL_SSL\n"
        "PSSYNC_KAFKA_SASL_MECHANISM=SCRAM-SHA-256\n"
        "PSSYNC_KAFKA_SASL_USERNAME=pssync\n"
        f"KAFKA_SASL_PASSWORD_FILE={tmp_path / 'sasl-password'}\n"
        f"KAFKA_SSL_CA_FILE={tmp_path / 'ca.pem'}\n"
    )
    proc = run([composecheck, "-env-file", str(env_file), str(COMPOSE_FILE)], timeout=60)
    assert proc.returncode == 0, proc.stderr
    project: dict[str, Any] = json.loads(proc.stdout)
    for name, svc in worker_services(project).items():
        settings = Settings.from_env(env_of(svc))
        assert settings.kafka_security_protocol == "SASL_SSL", name
        assert settings.kafka_sasl_password_file == "/run/secrets/kafka_sasl_password"
        assert settings.kafka_ssl_ca_file == "/run/secrets/kafka_ssl_ca"
        assert settings.kafka_ssl_cert_file == ""  # not given: not set
        assert "kafka_sasl_password" in {s["source"] for s in svc["secrets"]}
    assert project["secrets"]["kafka_sasl_password"]["file"] == str(tmp_path / "sasl-password")
    assert project["secrets"]["kafka_ssl_cert"]["file"] == "/dev/null"
