"""`pssync dev`: a local Kafka (KRaft) and schema registry, real parts from Maven Central.

- Kafka: `org.apache.kafka:kafka_2.13` resolved with Maven into a cache outside
  git, KRaft storage formatted once, one combined broker+controller node on
  127.0.0.1.
- Schema registry: Apicurio Registry (`io.apicurio:apicurio-registry-app`,
  its Quarkus assembly), in-memory storage, Confluent-compatible API under
  `/apis/ccompat/v7`. 3.x needs Java 21+ for its newest release; with only
  Java 17 the 3.0 line is used.

`up` is idempotent (a service already answering is left alone) and returns once
both answer; `down` stops only processes whose pid files `up` wrote.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
import uuid
from base64 import urlsafe_b64encode
from dataclasses import dataclass
from pathlib import Path

KAFKA_VERSION = "4.4.0"
LOG4J_VERSION = "2.25.5"
APICURIO_NEW = ("3.3.3", 21)  # version, minimum Java
APICURIO_OLD = ("3.0.9", 17)


_STARTED: list[subprocess.Popen[bytes]] = []


class DevStackError(RuntimeError):
    """Something the user must fix (missing Java/Maven, port taken, start failed)."""


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise DevStackError(f"{name}={raw!r} is not a port number")
    return int(raw)


@dataclass(frozen=True)
class StackConfig:
    kafka_port: int = 9092
    controller_port: int = 9093
    registry_port: int = 8081
    registry_mgmt_port: int = 9001
    cache_dir: Path = Path.home() / ".cache" / "pssync"
    state_dir: Path = Path.home() / ".local" / "state" / "pssync" / "dev"
    # the registry's schemas in a file under the state dir, so they survive its restart
    # (PSSYNC_DEV_REGISTRY_PERSIST=1; default: in memory, gone when it stops)
    registry_persistent: bool = False

    @classmethod
    def from_env(cls, **overrides: int | None) -> StackConfig:
        base = cls()
        kafka = overrides.get("kafka_port") or _env_int("PSSYNC_DEV_KAFKA_PORT", base.kafka_port)
        registry = overrides.get("registry_port") or _env_int(
            "PSSYNC_DEV_REGISTRY_PORT", base.registry_port
        )
        cache = Path(os.environ.get("PSSYNC_CACHE_DIR") or base.cache_dir)
        state = Path(os.environ.get("PSSYNC_DEV_STATE_DIR") or base.state_dir)
        persistent = os.environ.get("PSSYNC_DEV_REGISTRY_PERSIST", "") == "1"
        return cls(kafka, kafka + 1, registry, registry + 920, cache, state, persistent)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def registry_url(self) -> str:
        return f"http://127.0.0.1:{self.registry_port}/apis/ccompat/v7"


# A one-node KRaft broker's settings for internal topics and defaults (the dev stack's,
# and the secured broker the tests start, `tests/secure_kafka.py`).
SINGLE_NODE_BROKER = (
    "num.partitions=1",
    "default.replication.factor=1",
    "offsets.topic.replication.factor=1",
    "offsets.topic.num.partitions=3",
    "transaction.state.log.replication.factor=1",
    "transaction.state.log.min.isr=1",
    "share.coordinator.state.topic.replication.factor=1",
    "share.coordinator.state.topic.min.isr=1",
    "group.initial.rebalance.delay.ms=0",
    "auto.create.topics.enable=false",
)


def say(msg: str) -> None:
    print(f"[dev] {msg}", file=sys.stderr, flush=True)


# -- tools ------------------------------------------------------------------
def java_version(java: str) -> int:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    m = re.search(r'version "(\d+)', out.stderr + out.stdout)
    return int(m.group(1)) if m else 0


def find_javas() -> list[tuple[int, str]]:
    """(major version, path) of every Java found, newest first."""
    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    candidates += [str(p) for p in sorted(Path("/usr/lib/jvm").glob("*/bin/java"))]
    if shutil.which("java"):
        candidates.append(str(shutil.which("java")))
    seen: dict[str, int] = {}
    for c in candidates:
        real = os.path.realpath(c)
        if real not in seen and os.access(real, os.X_OK):
            seen[real] = java_version(real)
    return sorted(((v, p) for p, v in seen.items() if v), reverse=True)


def require_tools() -> tuple[list[tuple[int, str]], str]:
    javas = find_javas()
    if not javas or javas[0][0] < 17:
        raise DevStackError(
            "Java 17 or newer is needed for Kafka and the schema registry, and none was "
            "found (looked at JAVA_HOME, /usr/lib/jvm, PATH). Install a JDK, e.g. "
            "`apt-get install openjdk-17-jdk-headless`."
        )
    mvn = shutil.which("mvn")
    if not mvn:
        raise DevStackError(
            "Maven (`mvn`) is needed to fetch Kafka and the registry from Maven Central; "
            "install it, e.g. `apt-get install maven`."
        )
    return javas, mvn


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        return state != "Z"
    except OSError:
        return True


# -- fetching ---------------------------------------------------------------
KAFKA_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>pssync.dev</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <!-- Kafka logs through SLF4J 1.x; this binds it to log4j 2 -->
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
      <scope>runtime</scope>
    </dependency>
  </dependencies>
</project>
"""

LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="${sys:kafka.logs.dir}/server.log" append="true">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Logger name="kafka" level="WARN"/>
    <Logger name="org.apache.kafka" level="WARN"/>
    <Logger name="kafka.server.KafkaRaftServer" level="INFO"/>
    <Root level="WARN"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
"""


def _mvn(mvn: str, args: list[str], cwd: Path, what: str) -> None:
    say(f"resolving {what} from Maven Central (first run only) ...")
    started = time.monotonic()
    proc = subprocess.run([mvn, "-B", "-q", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-2000:]
        raise DevStackError(f"Maven could not resolve {what}:\n{tail}")
    say(f"resolved {what} in {time.monotonic() - started:.0f}s")


def fetch_kafka(cfg: StackConfig, mvn: str) -> Path:
    home = cfg.cache_dir / f"kafka-{KAFKA_VERSION}"
    marker = home / "lib" / ".complete"
    if marker.exists():
        return home
    home.mkdir(parents=True, exist_ok=True)
    (home / "pom.xml").write_text(KAFKA_POM.format(kafka=KAFKA_VERSION, log4j=LOG4J_VERSION))
    _mvn(
        mvn,
        ["dependency:copy-dependencies", "-DoutputDirectory=lib", "-DincludeScope=runtime"],
        home,
        f"Apache Kafka {KAFKA_VERSION}",
    )
    (home / "log4j2.xml").write_text(LOG4J2)
    marker.touch()
    return home


def fetch_registry(cfg: StackConfig, mvn: str, version: str) -> Path:
    home = cfg.cache_dir / f"apicurio-registry-{version}"
    marker = home / ".complete"
    if marker.exists():
        return home
    home.mkdir(parents=True, exist_ok=True)
    artifact = f"io.apicurio:apicurio-registry-app:{version}:tar.gz:all"
    _mvn(
        mvn,
        ["dependency:get", f"-Dartifact={artifact}", "-Dtransitive=false"],
        home,
        f"Apicurio Registry {version}",
    )
    repo = Path(os.environ.get("MAVEN_REPO") or Path.home() / ".m2" / "repository")
    tarball = (
        repo
        / "io/apicurio/apicurio-registry-app"
        / version
        / f"apicurio-registry-app-{version}-all.tar.gz"
    )
    with tarfile.open(tarball) as tar:
        tar.extractall(home, filter="data")
    marker.touch()
    return home


# -- processes --------------------------------------------------------------
class Service:
    def __init__(self, name: str, cfg: StackConfig) -> None:
        self.name = name
        self.cfg = cfg
        self.dir = cfg.state_dir / name
        self.pid_file = self.dir / f"{name}.pid"
        self.log_file = self.dir / f"{name}.log"

    def pid(self) -> int | None:
        """The pid `up` recorded, if that process still runs and is still our Java."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if not pid_alive(pid):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return pid
        # a recycled pid belongs to someone else: never signal it
        return pid if b"java" in cmdline and str(self.cfg.cache_dir).encode() in cmdline else None

    def start(self, argv: list[str], cwd: Path) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        # the service outlives this process on purpose (pid file, `dev down`): keep the
        # handle so it is not reaped, or warned about, when this function returns
        _STARTED.append(proc)
        # until the child has exec'd, /proc/<pid>/cmdline is still this Python's, and
        # `pid()` (which checks it is our Java) would take the service for gone
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if os.fsencode(argv[0]) in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
                    break
            except OSError:
                break
            time.sleep(0.01)
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def stop(self, timeout_s: float = 20.0) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            # its sockets close as it exits: a restart binding its port must wait for that
            deadline = time.monotonic() + 15
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def kafka_ready(cfg: StackConfig) -> bool:
    if not port_open(cfg.kafka_port):
        return False
    from confluent_kafka.admin import AdminClient

    try:
        md = AdminClient({"bootstrap.servers": cfg.bootstrap}).list_topics(timeout=2)
    except Exception:
        return False
    return bool(md.brokers)


def registry_ready(cfg: StackConfig) -> bool:
    try:
        with urllib.request.urlopen(cfg.registry_url + "/subjects", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _wait(check: object, what: str, svc: Service, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        if svc.pid() is None:
            raise DevStackError(
                f"{what} exited during start-up; last log lines ({svc.log_file}):\n{svc.log_tail()}"
            )
        time.sleep(0.5)
    raise DevStackError(f"{what} did not answer within {timeout_s:.0f}s; see {svc.log_file}")


def _check_port_free(port: int, what: str) -> None:
    if port_open(port):
        raise DevStackError(
            f"port {port} for {what} is taken by another process; stop it, or choose "
            f"other ports with --kafka-port/--registry-port (or PSSYNC_DEV_KAFKA_PORT/"
            f"PSSYNC_DEV_REGISTRY_PORT)"
        )


def start_kafka(cfg: StackConfig, java: str, mvn: str) -> str:
    svc = Service("kafka", cfg)
    if svc.pid() is not None and kafka_ready(cfg):
        return "already running"
    if svc.pid() is None:
        _check_port_free(cfg.kafka_port, "Kafka")
        _check_port_free(cfg.controller_port, "the Kafka controller")
        home = fetch_kafka(cfg, mvn)
        data = svc.dir / "data"
        props = svc.dir / "server.properties"
        props.parent.mkdir(parents=True, exist_ok=True)
        props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers=127.0.0.1:{cfg.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{cfg.kafka_port},"
                    f"CONTROLLER://127.0.0.1:{cfg.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{cfg.kafka_port},"
                    f"CONTROLLER://127.0.0.1:{cfg.controller_port}",
                    "inter.broker.listener.name=PLAINTEXT",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    f"log.dirs={data}",
                    *SINGLE_NODE_BROKER,
                    "",
                ]
            )
        )
        jopts = [
            "-Xms256m",
            "-Xmx768m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={home / 'log4j2.xml'}",
            f"-Dkafka.logs.dir={svc.dir}",
        ]
        cp = str(home / "lib") + "/*"
        if not (data / "meta.properties").exists():
            cluster_id = urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            fmt = subprocess.run(
                [
                    java,
                    *jopts,
                    "-cp",
                    cp,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(props),
                    "--standalone",
                    "--ignore-formatted",
                ],
                capture_output=True,
                text=True,
            )
            if fmt.returncode != 0:
                raise DevStackError(f"formatting KRaft storage failed:\n{fmt.stdout}{fmt.stderr}")
        svc.start([java, *jopts, "-cp", cp, "kafka.Kafka", str(props)], svc.dir)
    _wait(lambda: kafka_ready(cfg), "Kafka", svc, 120)
    return "started"


def start_registry(cfg: StackConfig, javas: list[tuple[int, str]], mvn: str) -> str:
    svc = Service("registry", cfg)
    if svc.pid() is not None and registry_ready(cfg):
        return "already running"
    if svc.pid() is None:
        _check_port_free(cfg.registry_port, "the schema registry")
        newest, java = javas[0]
        version = APICURIO_NEW[0] if newest >= APICURIO_NEW[1] else APICURIO_OLD[0]
        home = fetch_registry(cfg, mvn, version)
        if (home / "quarkus-run.jar").exists():
            jar = home / "quarkus-run.jar"
        else:
            jar = next(home.glob("*-runner.jar"))
        argv = [
            java,
            "-Xms64m",
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Dquarkus.http.host=127.0.0.1",
            f"-Dquarkus.http.port={cfg.registry_port}",
            "-Dquarkus.management.host=127.0.0.1",
            f"-Dquarkus.management.port={cfg.registry_mgmt_port}",
            "-Dapicurio.datasource.jdbc.initial-size=2",
            "-Dapicurio.datasource.jdbc.min-size=2",
            "-Dapicurio.datasource.jdbc.max-size=10",
            *(
                [f"-Dapicurio.datasource.url=jdbc:h2:file:{svc.dir / 'db' / 'registry'}"]
                if cfg.registry_persistent
                else []
            ),
            "-jar",
            str(jar),
        ]
        svc.start(argv, home)
    _wait(lambda: registry_ready(cfg), "the schema registry", svc, 180)
    # Make compatibility explicit: the contract evolves by adding defaulted fields.
    req = urllib.request.Request(
        cfg.registry_url + "/config",
        data=json.dumps({"compatibility": "BACKWARD"}).encode(),
        method="PUT",
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
    )
    urllib.request.urlopen(req, timeout=10).close()
    return "started"


def up(cfg: StackConfig) -> dict[str, str]:
    javas, mvn = require_tools()
    java17 = javas[-1][1] if javas[-1][0] >= 17 else javas[0][1]
    result = {"kafka": start_kafka(cfg, java17, mvn)}
    result["registry"] = start_registry(cfg, javas, mvn)
    return result


def down(cfg: StackConfig) -> dict[str, str]:
    out = {}
    for name in ("registry", "kafka"):
        out[name] = "stopped" if Service(name, cfg).stop() else "not running (nothing of ours)"
    return out


def status(cfg: StackConfig) -> dict[str, dict[str, object]]:
    kafka, registry = Service("kafka", cfg), Service("registry", cfg)
    return {
        "kafka": {
            "pid": kafka.pid(),
            "answering": kafka_ready(cfg),
            "bootstrap": cfg.bootstrap,
            "log": str(kafka.log_file),
        },
        "registry": {
            "pid": registry.pid(),
            "answering": registry_ready(cfg),
            "url": cfg.registry_url,
            "log": str(registry.log_file),
        },
    }
