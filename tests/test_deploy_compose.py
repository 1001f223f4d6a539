"""Deployment files (compose): checked with the real tools that run here."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from pssync.settings import Settings
from tests.deploy_tools import (
    COMPOSE_FILE,
    DASHBOARD,
    ROOT,
    RULES,
    SETTINGS_VARS,
    WORKER_PORT,
    run,
)


# -- docker-compose.yml ------------------------------------------------------------
@pytest.fixture(scope="session")
def compose(composecheck: str) -> dict[str, Any]:
    """The project as compose-go loads, validates and normalizes it."""
    proc = run([composecheck, str(COMPOSE_FILE)], timeout=60)
    assert proc.returncode == 0, f"docker-compose.yml is not valid:\n{proc.stderr}"
    project: dict[str, Any] = json.loads(proc.stdout)
    return project


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def pssync_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services running the image built from our Dockerfile."""
    return {
        name: svc
        for name, svc in services(compose).items()
        if svc.get("build", {}).get("context") == str(ROOT)
    }


def worker_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in pssync_services(compose).items() if s.get("command") == ["worker"]}


def env_of(svc: dict[str, Any]) -> dict[str, str]:
    return {k: "" if v is None else str(v) for k, v in (svc.get("environment") or {}).items()}


def test_compose_file_loads_with_the_compose_spec(compose: dict[str, Any]) -> None:
    assert compose["name"] == "pssync"
    assert set(services(compose)) >= {
        "kafka",
        "registry",
        "postgres",
        "connect",
        "connectors",
        "prometheus",
        "grafana",
    }
    assert len(worker_services(compose)) >= 2, "two workers, to show they share the partitions"


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (
            "services:\n  a:\n    image: x:1\n    depends_on:\n      b:\n"
            "        condition: service_healthy\n",
            "undefined service",
        ),
        (
            "services:\n  a:\n    image: x:1\n    healthcheck:\n      tests: [CMD, 'true']\n",
            "tests",
        ),
        ("services:\n  a:\n    image: x:${UNSET_TAG}\n", "UNSET_TAG"),
        ("services:\n  a:\n    image: x:1\n    volumes: [data:/data]\n", "data"),
        (
            "services:\n  a:\n    image: x:1\n    depends_on:\n      b:\n"
            "        condition: service_ready\n  b:\n    image: x:1\n",
            "condition",
        ),
    ],
    ids=["undefined-dependency", "unknown-key", "unset-variable", "undeclared-volume", "bad-enum"],
)
def test_composecheck_rejects_what_compose_rejects(
    composecheck: str, tmp_path: Path, content: str, complaint: str
) -> None:
    """The checker is strict: each of these is an error for `docker compose` too."""
    path = tmp_path / "compose.yml"
    path.write_text(content)
    proc = run([composecheck, str(path)], timeout=60)
    assert proc.returncode == 1, proc.stdout
    assert complaint in proc.stderr


def test_compose_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, svc in services(compose).items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo, f"{name}: image {image!r} has no tag"
        assert "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: {image!r} is not pinned"
        assert re.search(r"\d+\.\d+", tag), f"{name}: {image!r} is not pinned"


def test_compose_runs_the_versions_the_dev_stack_tests() -> None:
    """Compose and `pssync dev up` run the same Kafka, registry and Debezium."""
    from pssync import devstack

    text = COMPOSE_FILE.read_text()
    assert f"image: apache/kafka:{devstack.KAFKA_VERSION}\n" in text
    assert f"image: apicurio/apicurio-registry:{devstack.APICURIO_NEW[0]}\n" in text
    from pssync import connect_stack

    assert f"image: quay.io/debezium/connect:{connect_stack.DEBEZIUM_VERSION}\n" in text


def test_compose_every_long_running_service_has_a_health_check(compose: dict[str, Any]) -> None:
    for name, svc in services(compose).items():
        health = svc.get("healthcheck") or {}
        if svc.get("restart") == "no":
            # one-shot: it exits when done; nothing may wait for it to be healthy
            for other in services(compose).values():
                assert name not in (other.get("depends_on") or {}), f"{name} is one-shot"
            continue
        assert health.get("test"), f"{name} has no health check"
        assert not health.get("disable"), f"{name} has its health check disabled"
        assert health["test"][0] in ("CMD", "CMD-SHELL"), name


def test_compose_starts_services_once_their_dependencies_are_healthy(
    compose: dict[str, Any],
) -> None:
    all_services = services(compose)
    for name, svc in all_services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert spec["condition"] == "service_healthy", f"{name} -> {dep}"
            assert all_services[dep].get("healthcheck", {}).get("test"), f"{dep} has no check"
    workers = sorted(worker_services(compose))
    # the first worker creates the topics and registers the schemas; the rest follow it
    for later in workers[1:]:
        assert workers[0] in all_services[later]["depends_on"]
    connectors = all_services["connectors"]["depends_on"]
    assert {"connect", workers[0]} <= set(connectors), "connectors after the topics exist"


def test_compose_keeps_state_in_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])

    def named_volume_at(service: str, target: str) -> str:
        for vol in services(compose)[service].get("volumes") or []:
            if vol["target"] == target:
                assert vol["type"] == "volume", f"{service}:{target} is not a named volume"
                assert vol["source"] in declared
                return str(vol["source"])
        raise AssertionError(f"{service} has no volume at {target}")

    kafka_dir = env_of(services(compose)["kafka"])["KAFKA_LOG_DIRS"]
    named_volume_at("kafka", kafka_dir)
    named_volume_at("postgres", "/var/lib/postgresql/data")
    worker_volumes = [
        named_volume_at(name, env_of(svc)["PSSYNC_DATA_DIR"])
        for name, svc in worker_services(compose).items()
    ]
    assert len(set(worker_volumes)) == len(worker_volumes), "each worker needs its own RocksDB"


def test_compose_pssync_variables_are_real_settings(compose: dict[str, Any]) -> None:
    """Every PSSYNC_* a pssync container gets is read by pssync, with a valid value."""
    connect_api = (ROOT / "connectors" / "connect_api.py").read_text()
    connector_vars = set(re.findall(r"\"(PSSYNC_[A-Z_]+)\"", connect_api))
    for name, svc in pssync_services(compose).items():
        env = env_of(svc)
        names = {k for k in env if k.startswith("PSSYNC_")}
        known = SETTINGS_VARS | (connector_vars if name == "connectors" else set())
        assert names <= known, f"{name}: not pssync settings: {sorted(names - known)}"
        settings = Settings.from_env(env)
        assert settings.kafka_bootstrap == "kafka:9092"
        assert settings.schema_registry_url == "http://registry:8080/apis/ccompat/v7"
    for name, svc in worker_services(compose).items():
        settings = Settings.from_env(env_of(svc))
        assert settings.web_port == WORKER_PORT
        assert [p["target"] for p in svc["ports"]] == [settings.web_port], name
        assert f"http://127.0.0.1:{settings.web_port}/ready" in " ".join(svc["healthcheck"]["test"])


def test_compose_pssync_commands_parse_with_the_cli(compose: dict[str, Any]) -> None:
    from pssync.cli.main import build_parser

    for name, svc in pssync_services(compose).items():
        try:
            build_parser().parse_args(svc["command"])
        except SystemExit:
            pytest.fail(f"{name}: `pssync {shlex.join(svc['command'])}` is not a pssync command")


def test_compose_kafka_listeners_match_published_port(compose: dict[str, Any]) -> None:
    kafka = services(compose)["kafka"]
    env = env_of(kafka)
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert advertised["PLAINTEXT"] == "kafka:9092"
    (port,) = kafka["ports"]
    assert port["target"] == int(listeners["EXTERNAL"].rpartition(":")[2])
    assert advertised["EXTERNAL"] == f"localhost:{port['published']}"
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller", "KRaft, no ZooKeeper"


def test_compose_bind_mounts_exist(compose: dict[str, Any]) -> None:
    for name, svc in services(compose).items():
        for vol in svc.get("volumes") or []:
            if vol["type"] == "bind":
                assert Path(vol["source"]).is_file(), f"{name}: {vol['source']} is missing"
                assert vol.get("read_only"), f"{name}: {vol['target']} should be read-only"


def test_compose_postgres_is_ready_for_debezium(compose: dict[str, Any]) -> None:
    pg = services(compose)["postgres"]
    assert "wal_level=logical" in pg["command"]
    scripts = sorted(
        (v["target"], Path(v["source"]).name)
        for v in pg["volumes"]
        if v["target"].startswith("/docker-entrypoint-initdb.d/")
    )
    # name order is run order: the platforms' tables, then the ERP inbox
    assert [source for _, source in scripts] == ["platforms.sql", "erp_inbox.sql"]


def test_compose_connectors_point_at_compose_services(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connector configs, filled in by pssync's own code with the `connectors`
    service's environment, name hosts that exist in the Compose network."""
    from pssync.connectors import connect_api

    all_services = services(compose)
    env = env_of(all_services["connectors"])
    pg_env = env_of(all_services["postgres"])
    for key in list(os.environ):
        if key.startswith("PSSYNC_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    target = connect_api.Target.from_env(Settings.from_env(env))
    assert target.connect_url == "http://connect:8083"
    assert (target.db_host, target.db_port) == ("postgres", 5432)
    assert (target.db_name, target.db_user, target.db_password) == (
        pg_env["POSTGRES_DB"],
        pg_env["POSTGRES_USER"],
        pg_env["POSTGRES_PASSWORD"],
    )
    connectors = connect_api.load(target)
    assert {c.connector_class for c in connectors} >= {
        "io.debezium.connector.postgresql.PostgresConnector",
        "io.debezium.connector.jdbc.JdbcSinkConnector",
    }
    hosts = set()
    for connector in connectors:
        for key, value in connector.config.items():
            if key == "database.hostname":
                hosts.add(value)
            hosts.update(re.findall(r"(?:https?|jdbc:postgresql)://([a-z0-9-]+):\d+", value))
    assert hosts, "the connectors name no hosts"
    assert hosts <= set(all_services), f"unknown hosts {hosts - set(all_services)}"
    assert env_of(all_services["connect"])["ENABLE_APICURIO_CONVERTERS"] == "true"


def mount_tree(svc: dict[str, Any], root: Path) -> None:
    """Lay a service's bind mounts out under `root` as the container sees them."""
    for vol in svc.get("volumes") or []:
        if vol["type"] == "bind":
            dest = root / vol["target"].lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(vol["source"], dest)


def test_compose_prometheus_config_passes_promtool(compose: dict[str, Any], tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is needed (Debian package prometheus; ./run test installs it)"
    prom = services(compose)["prometheus"]
    mount_tree(prom, tmp_path)
    config_arg = next(a for a in prom["command"] if a.startswith("--config.file="))
    config = tmp_path / config_arg.partition("=")[2].lstrip("/")
    proc = run([promtool, "check", "config", str(config)], timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rule_count = sum(len(group["rules"]) for group in groups)
    assert f"SUCCESS: {rule_count} rules found" in proc.stdout, "ops/prometheus/rules.yml is loaded"
    # every worker is scraped, as job `pssync` (up{job="pssync"} in the rules)
    scrape = {job["job_name"]: job for job in yaml.safe_load(config.read_text())["scrape_configs"]}
    targets = {t for sc in scrape["pssync"]["static_configs"] for t in sc["targets"]}
    expected = {
        f"{name}:{Settings.from_env(env_of(svc)).web_port}"
        for name, svc in worker_services(compose).items()
    }
    assert targets == expected
    assert 'up{job="pssync"}' in RULES.read_text()


def test_compose_grafana_provisions_prometheus_and_the_dashboard(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    grafana = services(compose)["grafana"]
    mount_tree(grafana, tmp_path)
    provisioning = tmp_path / "etc" / "grafana" / "provisioning"
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "pssync.yml").read_text())[
        "datasources"
    ]
    assert datasource["type"] == "prometheus"
    assert datasource["isDefault"] is True
    host, _, port = datasource["url"].removeprefix("http://").partition(":")
    assert host in services(compose)
    assert int(port) in {p["target"] for p in services(compose)[host]["ports"]}
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "pssync.yml").read_text())[
        "providers"
    ]
    folder = tmp_path / provider["options"]["path"].lstrip("/")
    dashboards = list(folder.glob("*.json"))
    assert [d.read_bytes() for d in dashboards] == [DASHBOARD.read_bytes()]
    home = env_of(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (tmp_path / home.lstrip("/")).is_file()
