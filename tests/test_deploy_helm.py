"""Deployment files (helm): checked with the real tools that run here."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kube_validate

from pssync.settings import Settings
from tests.deploy_tools import (
    CHART,
    CRD_KINDS,
    DEPLOY_README,
    HELM_VERSION,
    ROOT,
    SETTINGS_VARS,
    helm_module_version,
    run,
)

# -- helm/pssync -------------------------------------------------------------------
KUBE_VERSIONS = ["1.27.0", kube_validate.latest_version()]  # Chart.yaml's minimum, newest
VALUE_SETS = {
    "defaults": [],
    "servicemonitor-3-replicas": [
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "replicaCount=3",
    ],
}


def test_chart_kube_version_floor_is_the_one_validated() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">={KUBE_VERSIONS[0]}-0"


@pytest.mark.parametrize("values", list(VALUE_SETS), ids=list(VALUE_SETS))
def test_helm_lint_strict(helm: str, values: str) -> None:
    proc = run(
        [
            helm,
            "lint",
            "--strict",
            "--kube-version",
            KUBE_VERSIONS[-1],
            str(CHART),
            *VALUE_SETS[values],
        ],
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def helm_template(
    helm: str, *args: str, kube_version: str = KUBE_VERSIONS[-1]
) -> list[dict[str, Any]]:
    proc = run(
        [
            helm,
            "template",
            "pssync",
            str(CHART),
            "--namespace",
            "sync",
            "--kube-version",
            kube_version,
            *args,
        ],
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="module", params=list(VALUE_SETS))
def rendered(request: pytest.FixtureRequest, helm: str) -> tuple[str, list[dict[str, Any]]]:
    return request.param, helm_template(helm, *VALUE_SETS[request.param])


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = by_kind(docs, kind)
    return doc


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_rendered_manifests_validate_against_kubernetes_schemas(
    helm: str, kube_version: str
) -> None:
    for values, args in VALUE_SETS.items():
        docs = helm_template(helm, *args, kube_version=kube_version)
        for doc in docs:
            if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
                # A CRD (Prometheus Operator): not in Kubernetes' own schemas. Skipped by
                # name only; its fields are checked in test_chart_service_monitor.
                continue
            try:
                kube_validate.validate(doc, kube_version, strict=True)
            except kube_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{values}: {doc['kind']} {where}: {exc.message} (k8s {kube_version})")
            except kube_validate.SchemaNotFoundError as exc:
                pytest.fail(f"{values}: {exc.message}")
        kinds = {d["kind"] for d in docs}
        assert kinds >= {"StatefulSet", "Service", "ConfigMap", "Secret", "PodDisruptionBudget"}


def test_kubernetes_validate_is_strict() -> None:
    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 1}], "clusterIp": "None"},
    }
    with pytest.raises(kube_validate.ValidationError):
        kube_validate.validate(bad, KUBE_VERSIONS[-1], strict=True)


def worker_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    return dict(container)


def chart_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    env = dict(one(docs, "ConfigMap")["data"])
    env.update(one(docs, "Secret").get("stringData") or {})
    return env


def test_chart_probes_health_and_ready(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    container = worker_container(docs)
    (port,) = container["ports"]
    settings = Settings.from_env(chart_env(docs))
    assert (port["name"], port["containerPort"]) == ("http", settings.web_port)
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["args"] == ["worker"]
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]


def test_chart_environment_is_real_settings(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    env = chart_env(docs)
    assert set(env) <= SETTINGS_VARS, sorted(set(env) - SETTINGS_VARS)
    settings = Settings.from_env(env)  # and every value is valid
    statefulset = one(docs, "StatefulSet")
    mounts = {m["name"]: m["mountPath"] for m in worker_container(docs)["volumeMounts"]}
    assert str(settings.data_dir) == mounts["data"]
    sources = worker_container(docs)["envFrom"]
    assert {"configMapRef": {"name": one(docs, "ConfigMap")["metadata"]["name"]}} in sources
    assert {"secretRef": {"name": one(docs, "Secret")["metadata"]["name"]}} in sources
    assert statefulset["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_chart_exposes_every_setting() -> None:
    """values.yaml's config (snake-cased) plus what the chart derives = every setting;
    values.schema.json knows the same names, so a misspelt one fails the install."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    snake = {re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower() for key in values["config"]}
    derived = {"data_dir", "web_port", "web_host", "advertised_url"}
    assert snake | derived == set(Settings.model_fields)
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]
    for block in (schema["config"], schema["secret"]["properties"]["settings"]):
        assert set(block["properties"]) == set(values["config"])
        assert block["additionalProperties"] is False


def test_chart_secret_settings_move_out_of_the_config_map(helm: str) -> None:
    docs = helm_template(
        helm,
        "--set",
        "secret.settings.kafkaBootstrap=kafka-internal:9092",
        "--set",
        "config.projectSetupSlaS=1000000",
    )
    config_map, secret = one(docs, "ConfigMap")["data"], one(docs, "Secret")["stringData"]
    assert "PSSYNC_KAFKA_BOOTSTRAP" not in config_map
    assert secret == {"PSSYNC_KAFKA_BOOTSTRAP": "kafka-internal:9092"}
    assert config_map["PSSYNC_PROJECT_SETUP_SLA_S"] == "1000000"  # not 1e+06
    assert Settings.from_env({**config_map, **secret}).kafka_bootstrap == "kafka-internal:9092"


def test_chart_rejects_unknown_settings(helm: str) -> None:
    proc = run(
        [
            helm,
            "template",
            "x",
            str(CHART),
            "--kube-version",
            KUBE_VERSIONS[-1],
            "--set",
            "config.kafkaBootstrapp=x:1",
        ],
        timeout=120,
    )
    assert proc.returncode != 0
    assert "kafkaBootstrapp" in proc.stderr


def test_chart_statefulset_keeps_state_per_worker(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    values, docs = rendered
    statefulset = one(docs, "StatefulSet")
    spec = statefulset["spec"]
    assert spec["replicas"] == (3 if values == "servicemonitor-3-replicas" else 2)
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"]
    headless = next(
        s for s in by_kind(docs, "Service") if s["metadata"]["name"] == spec["serviceName"]
    )
    assert headless["spec"]["clusterIP"] == "None"
    pod_labels = spec["template"]["metadata"]["labels"]
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert pdb["spec"]["maxUnavailable"] == 1
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert worker_container(docs)["securityContext"]["readOnlyRootFilesystem"] is True
    for service in by_kind(docs, "Service"):
        assert service["spec"]["selector"].items() <= pod_labels.items()


def test_chart_service_monitor(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    values, docs = rendered
    monitors = by_kind(docs, "ServiceMonitor")
    if values == "defaults":
        assert monitors == [], "off by default"
        return
    (monitor,) = monitors
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    matched = [
        s for s in by_kind(docs, "Service") if selector.items() <= s["metadata"]["labels"].items()
    ]
    assert len(matched) == 1, "exactly the metrics Service: no worker scraped twice"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in matched[0]["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    (relabel,) = endpoint["relabelings"]
    assert (relabel["targetLabel"], relabel["replacement"]) == ("job", "pssync")
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == ["sync"]


def test_chart_notes_warn_about_idle_workers(helm: str, tmp_path: Path) -> None:
    """NOTES.txt renders (helm template skips it: render it through a copy as a ConfigMap)."""
    chart = tmp_path / "pssync"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "_notes.tpl").write_text(
        '{{- define "test.notes" -}}' + notes + "{{- end -}}"
    )
    (chart / "templates" / "notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ include "test.notes" . | quote }}\n'
    )

    def render(*args: str) -> str:
        proc = run(
            [
                helm,
                "template",
                "pssync",
                str(chart),
                "--kube-version",
                KUBE_VERSIONS[-1],
                "--show-only",
                "templates/notes.yaml",
                *args,
            ],
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        return str(yaml.safe_load(proc.stdout)["data"]["notes"])

    assert "WARNING" not in render()
    text = render("--set", "replicaCount=8")
    assert "replicaCount (8) is above config.partitions (6)" in text
    assert "2 worker(s) will have no partition" in text


def test_values_yaml_documents_every_value() -> None:
    """Each value has a comment right above it, or sits under a key documented as a
    whole by a `# --` comment (e.g. resources, probes.startup)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    open_keys: list[tuple[int, bool]] = []  # (indent, documented as a whole)
    undocumented = []
    for n, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):(.*)$", line)
        if not match:
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3).strip()
        while open_keys and open_keys[-1][0] >= indent:
            open_keys.pop()
        comments = []
        for above in reversed(lines[:n]):
            if not above.strip().startswith("#"):
                break
            comments.append(above.strip())
        following = next((x for x in lines[n + 1 :] if x.strip()), "")
        is_value = rest != "" or following.strip().startswith("- ")
        if is_value and not comments and not any(whole for _, whole in open_keys):
            undocumented.append(f"line {n + 1}: {key}")
        open_keys.append((indent, any(c.startswith("# --") for c in comments)))
    assert undocumented == []


def test_scaling_is_explained() -> None:
    chart_readme = (CHART / "README.md").read_text()
    values = (CHART / "values.yaml").read_text()
    for text in (chart_readme, values, DEPLOY_README.read_text()):
        assert "idle" in text
        assert "partitions" in text
    assert "PSSYNC_PARTITIONS" in chart_readme
    assert "PSSYNC_PARTITIONS" in values


def test_deploy_readme_names_files_that_exist() -> None:
    text = DEPLOY_README.read_text()
    paths = set(
        re.findall(
            r"`((?:connectors|deploy|helm|ops|tests)/[\w./*-]+|Dockerfile|docker-compose\.yml)`",
            text,
        )
    )
    assert len(paths) > 5
    for path in paths:
        assert list(ROOT.glob(path)), f"README.md names {path}, which does not exist"


def test_helm_is_the_pinned_release(helm: str) -> None:
    assert helm_module_version(Path(helm)) == HELM_VERSION
