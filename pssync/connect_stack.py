"""`pssync dev up --with-connect`: PostgreSQL for the platforms and a Kafka Connect worker.

The real path into and out of Kafka, next to the dev stack of `pssync.devstack`:

- PostgreSQL from Debian's packages (`apt-get install postgresql` when missing and we
  are root): a cluster of its own (initdb once, `wal_level=logical`) on 127.0.0.1, a
  role `pssync` with REPLICATION owning the database `platforms`, into which the
  platforms' DDL (`connectors/sql/platforms.sql`) and the ERP inbox
  (`connectors/sql/erp_inbox.sql`) are loaded. The server never runs as root: as
  root it runs as the `postgres` user, with its data under
  /var/lib/postgresql/pssync-dev-<port> (root's home is closed to other users);
  otherwise under `<state>/postgres`.
- Kafka Connect: `org.apache.kafka:connect-runtime` of the broker's Kafka version and
  the plugins (Debezium's PostgreSQL source and JDBC sink, Apicurio's Avro converter
  writing the Confluent wire format; the PostgreSQL JDBC driver comes with both
  Debezium archives) resolved with Maven from Maven Central into the cache; one
  distributed-mode worker on 127.0.0.1, internal topics with replication 1.

`up` is idempotent (what answers is left alone) and returns once PostgreSQL accepts
connections and Connect's `/health` says the worker is ready; `down` stops only what
`up` started.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from pssync import devstack
from pssync.devstack import DevStackError, Service, StackConfig, port_open, say

CONNECT_VERSION = devstack.KAFKA_VERSION
DEBEZIUM_VERSION = "3.6.1.Final"
# The JDBC sink's 3.6.1.Final is not on Maven Central; 3.6.0.Final is its newest there.
DEBEZIUM_JDBC_VERSION = "3.6.0.Final"
# Apicurio's 3.x converter does not resolve from Maven Central (its parent POM is
# missing); 2.6.x talks to the registry's v2 API, which Apicurio 3 still serves.
APICURIO_CONVERTER_VERSION = "2.6.13.Final"
SQL_DIR = Path(__file__).resolve().parent / "connectors" / "sql"
DDL_FILES = ("platforms.sql", "erp_inbox.sql")
PG_SERVER_USER = "postgres"


@dataclass(frozen=True)
class ConnectStackConfig:
    stack: StackConfig = field(default_factory=StackConfig)
    connect_port: int = 8083
    postgres_port: int = 55432
    database: str = "platforms"
    user: str = "pssync"
    password: str = "pssync"

    @classmethod
    def from_env(
        cls,
        stack: StackConfig | None = None,
        connect_port: int | None = None,
        postgres_port: int | None = None,
    ) -> ConnectStackConfig:
        base = cls()
        return cls(
            stack or StackConfig.from_env(),
            connect_port or devstack._env_int("PSSYNC_DEV_CONNECT_PORT", base.connect_port),
            postgres_port or devstack._env_int("PSSYNC_DEV_POSTGRES_PORT", base.postgres_port),
        )

    @property
    def connect_url(self) -> str:
        return f"http://127.0.0.1:{self.connect_port}"

    @property
    def pg_dir(self) -> Path:
        if os.geteuid() == 0:  # the server runs as `postgres`, which cannot enter /root
            return Path("/var/lib/postgresql") / f"pssync-dev-{self.postgres_port}"
        return self.stack.state_dir / "postgres"

    @property
    def pg_data(self) -> Path:
        return self.pg_dir / "data"

    @property
    def pg_socket_dir(self) -> Path:
        return self.pg_dir / "run"

    @property
    def pg_log(self) -> Path:
        return self.pg_dir / "postgres.log"


# -- PostgreSQL ---------------------------------------------------------------
def pg_bin() -> Path:
    """The newest PostgreSQL server's bin dir; installs Debian's package if root."""
    found = _pg_bins()
    if not found and os.geteuid() == 0 and shutil.which("apt-get"):
        say("installing PostgreSQL with apt-get (first run only) ...")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for args in ("update -qq", "install -y -qq postgresql"):
            argv = ["apt-get", *args.split()]
            proc = subprocess.run(argv, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise DevStackError(f"`{' '.join(argv)}` failed:\n{proc.stderr[-2000:]}")
        found = _pg_bins()
    if not found:
        raise DevStackError(
            "PostgreSQL's server programs (initdb, pg_ctl) were not found under "
            "/usr/lib/postgresql/*/bin; install them, e.g. `apt-get install postgresql`."
        )
    return found[0]


def _pg_bins() -> list[Path]:
    bins = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "pg_ctl").exists()]
    return sorted(bins, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)[::-1]


def _as_server_user(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its programs as `postgres` then."""
    if os.geteuid() != 0:
        return argv
    if shutil.which("runuser") is None:
        raise DevStackError("`runuser` (util-linux) is needed to run PostgreSQL as postgres")
    return ["runuser", "-u", PG_SERVER_USER, "--", *argv]


def _run(argv: list[str], what: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0:
        raise DevStackError(f"{what} failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
    return proc.stdout


def postgres_pid(cfg: ConnectStackConfig) -> int | None:
    """The postmaster of our data dir, if it runs."""
    try:
        pid = int((cfg.pg_data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if not devstack.pid_alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid
    return pid if b"postgres" in cmdline else None


def postgres_ready(cfg: ConnectStackConfig, bin_dir: Path) -> bool:
    if not port_open(cfg.postgres_port):
        return False
    argv = [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(cfg.postgres_port)]
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


SERVER_CONF = """# written by `pssync dev up --with-connect` on every start
port = {port}
listen_addresses = '127.0.0.1'
unix_socket_directories = '{sockets}'
wal_level = logical
max_wal_senders = 32
max_replication_slots = 32
timezone = 'UTC'
log_timezone = 'UTC'
"""


def start_postgres(cfg: ConnectStackConfig) -> str:
    bin_dir = pg_bin()
    if postgres_pid(cfg) is not None and postgres_ready(cfg, bin_dir):
        provision(cfg)
        return "already running"
    if postgres_pid(cfg) is None:
        devstack._check_port_free(cfg.postgres_port, "PostgreSQL")
        for d in (cfg.pg_dir, cfg.pg_socket_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            d.chmod(0o700)
            if os.geteuid() == 0:
                shutil.chown(d, PG_SERVER_USER, PG_SERVER_USER)
        if not (cfg.pg_data / "PG_VERSION").exists():
            # local (socket) connections are trusted: the socket's directory is the server
            # user's alone; TCP needs a password
            flags = "-U postgres -E UTF8 --locale=C.UTF-8 --auth-local=trust"
            initdb = [str(bin_dir / "initdb"), "-D", str(cfg.pg_data), *flags.split()]
            _run(_as_server_user([*initdb, "--auth-host=scram-sha-256"]), "initdb")
            with open(cfg.pg_data / "postgresql.conf", "a") as main_conf:
                main_conf.write("\ninclude_if_exists = 'pssync.conf'\n")
        conf = SERVER_CONF.format(port=cfg.postgres_port, sockets=cfg.pg_socket_dir)
        (cfg.pg_data / "pssync.conf").write_text(conf)
        pg_ctl = [str(bin_dir / "pg_ctl"), "start", "-D", str(cfg.pg_data), "-l", str(cfg.pg_log)]
        _run(_as_server_user([*pg_ctl, "-w", "-t", "60"]), f"starting PostgreSQL ({cfg.pg_log})")
    deadline = time.monotonic() + 60
    while not postgres_ready(cfg, bin_dir):
        if time.monotonic() > deadline:
            raise DevStackError(f"PostgreSQL did not accept connections; see {cfg.pg_log}")
        time.sleep(0.3)
    provision(cfg)
    return "started"


def stop_postgres(cfg: ConnectStackConfig) -> bool:
    if postgres_pid(cfg) is None:
        return False
    pg_ctl = [str(pg_bin() / "pg_ctl"), "stop", "-D", str(cfg.pg_data), "-m", "fast", "-w"]
    _run(_as_server_user(pg_ctl), "stopping PostgreSQL")
    return True


def _psql(cfg: ConnectStackConfig, host: str, user: str, database: str) -> list[str]:
    port = str(cfg.postgres_port)
    conn = ["-h", host, "-p", port, "-U", user, "-d", database]
    return [str(pg_bin() / "psql"), *conn, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"]


def admin_sql(cfg: ConnectStackConfig, sql: str, database: str = "postgres") -> str:
    """Run SQL as the superuser over the server's private socket; returns rows as text."""
    argv = [*_psql(cfg, str(cfg.pg_socket_dir), "postgres", database), "-c", sql]
    return _run(argv, f"psql ({sql.strip().splitlines()[0][:80]})", env=_clean_env())


def sql(cfg: ConnectStackConfig, statements: str, database: str | None = None) -> list[list[str]]:
    """Run SQL as the platforms' role over TCP, as an application would; rows as lists."""
    database = database or cfg.database
    argv = [*_psql(cfg, "127.0.0.1", cfg.user, database), "-F", "\t", "-f", "-"]
    env = {**_clean_env(), "PGPASSWORD": cfg.password}
    proc = subprocess.run(argv, input=statements, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise DevStackError(f"SQL failed on {database}: {proc.stderr.strip()}")
    return [line.split("\t") for line in proc.stdout.splitlines() if line]


def _check_name(name: str) -> None:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise DevStackError(f"{name!r} is not a plain database name ([a-z_][a-z0-9_]*)")


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def provision(cfg: ConnectStackConfig) -> None:
    """The `pssync` role and the `platforms` database with the DDL loaded (idempotent)."""
    admin_sql(
        cfg,
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{cfg.user}') "
        f"THEN CREATE ROLE {cfg.user} LOGIN REPLICATION PASSWORD '{cfg.password}'; "
        "END IF; END $$;",
    )
    create_database(cfg, cfg.database)


def create_database(cfg: ConnectStackConfig, name: str) -> None:
    """A database owned by the platforms' role, with the platforms' DDL and the inbox."""
    _check_name(name)
    exists = admin_sql(cfg, f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip()
    if not exists:
        admin_sql(cfg, f'CREATE DATABASE "{name}" OWNER {cfg.user}')
    for ddl in DDL_FILES:
        sql(cfg, (SQL_DIR / ddl).read_text(), database=name)


def drop_database(cfg: ConnectStackConfig, name: str, timeout_s: float = 30.0) -> None:
    """Drop a database and its replication slots (a slot pins WAL, and blocks the drop)."""
    _check_name(name)
    slots = f"FROM pg_replication_slots WHERE database = '{name}'"
    deadline = time.monotonic() + timeout_s
    while admin_sql(cfg, f"SELECT count(*) {slots}").strip() != "0":
        # a slot still streaming belongs to a connector being stopped: end its sender
        admin_sql(cfg, f"SELECT pg_terminate_backend(active_pid) {slots} AND active")
        admin_sql(cfg, f"SELECT pg_drop_replication_slot(slot_name) {slots} AND NOT active")
        if time.monotonic() > deadline:
            raise DevStackError(f"replication slots on {name} stay in use")
        time.sleep(0.5)
    admin_sql(cfg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- Kafka Connect ------------------------------------------------------------
def _pom(name: str, dependencies: str) -> str:
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>pssync.dev</groupId><artifactId>{name}</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>{dependencies}
  </dependencies>
</project>
"""


RUNTIME_DEPENDENCIES = """
    <dependency><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>connect-json</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>connect-transforms</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version><scope>runtime</scope></dependency>"""

# the archives hold every jar a plugin needs: none of their POMs' dependencies
PLUGIN_DEPENDENCIES = """
    <dependency><groupId>io.debezium</groupId><artifactId>debezium-connector-postgres</artifactId>
      <version>{debezium}</version><classifier>plugin</classifier><type>tar.gz</type>
      <exclusions><exclusion><groupId>*</groupId><artifactId>*</artifactId></exclusion></exclusions>
    </dependency>
    <dependency><groupId>io.debezium</groupId><artifactId>debezium-connector-jdbc</artifactId>
      <version>{jdbc}</version><classifier>plugin</classifier><type>tar.gz</type>
      <exclusions><exclusion><groupId>*</groupId><artifactId>*</artifactId></exclusion></exclusions>
    </dependency>"""

CONVERTER_DEPENDENCIES = """
    <dependency><groupId>io.apicurio</groupId><artifactId>apicurio-registry-utils-converter</artifactId>
      <version>{apicurio}</version></dependency>"""

CONNECT_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="out" target="SYSTEM_OUT"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console>
  </Appenders>
  <Loggers>
    <Logger name="org.apache.kafka.connect" level="INFO"/>
    <Logger name="org.apache.kafka.connect.runtime.isolation" level="WARN"/>
    <Logger name="io.debezium" level="INFO"/>
    <Logger name="org.hibernate" level="WARN"/>
    <Logger name="org.reflections" level="ERROR"/>
    <Root level="WARN"><AppenderRef ref="out"/></Root>
  </Loggers>
</Configuration>
"""


def fetch_connect(cfg: ConnectStackConfig, mvn: str) -> Path:
    home = cfg.stack.cache_dir / f"connect-{CONNECT_VERSION}"
    marker = home / "lib" / ".complete"
    if marker.exists():
        return home
    home.mkdir(parents=True, exist_ok=True)
    deps = RUNTIME_DEPENDENCIES.format(kafka=CONNECT_VERSION, log4j=devstack.LOG4J_VERSION)
    (home / "pom.xml").write_text(_pom("connect-runtime", deps))
    devstack._mvn(
        mvn,
        ["dependency:copy-dependencies", "-DoutputDirectory=lib", "-DincludeScope=runtime"],
        home,
        f"Kafka Connect {CONNECT_VERSION}",
    )
    (home / "log4j2.xml").write_text(CONNECT_LOG4J2)
    marker.touch()
    return home


def fetch_plugins(cfg: ConnectStackConfig, mvn: str) -> Path:
    """plugin.path: Debezium's PostgreSQL source and JDBC sink, Apicurio's converter."""
    path = cfg.stack.cache_dir / "connect-plugins"
    versions = f"{DEBEZIUM_VERSION} {DEBEZIUM_JDBC_VERSION} {APICURIO_CONVERTER_VERSION}\n"
    marker = path / ".complete"
    if marker.exists() and marker.read_text() == versions:
        return path
    shutil.rmtree(path, ignore_errors=True)
    build = path / ".build"
    build.mkdir(parents=True)
    deps = PLUGIN_DEPENDENCIES.format(debezium=DEBEZIUM_VERSION, jdbc=DEBEZIUM_JDBC_VERSION)
    (build / "pom.xml").write_text(_pom("connect-plugins", deps))
    devstack._mvn(
        mvn,
        ["dependency:unpack-dependencies", f"-DoutputDirectory={path}", "-DincludeTypes=tar.gz"],
        build,
        f"Debezium PostgreSQL source {DEBEZIUM_VERSION} and JDBC sink {DEBEZIUM_JDBC_VERSION}",
    )
    shutil.rmtree(path / "PaxHeaders.X", ignore_errors=True)  # tar metadata, not a plugin
    deps = CONVERTER_DEPENDENCIES.format(apicurio=APICURIO_CONVERTER_VERSION)
    (build / "pom.xml").write_text(_pom("apicurio-converter", deps))
    devstack._mvn(
        mvn,
        [
            "dependency:copy-dependencies",
            f"-DoutputDirectory={path / 'apicurio-converter'}",
            "-DincludeScope=runtime",
            # the worker provides Kafka's and SLF4J's classes to every plugin
            "-DexcludeGroupIds=org.apache.kafka,org.slf4j",
        ],
        build,
        f"Apicurio's Avro converter {APICURIO_CONVERTER_VERSION}",
    )
    shutil.rmtree(build)
    marker.write_text(versions)
    return path


def connect_ready(cfg: ConnectStackConfig) -> bool:
    """Connect's `/health` answers 200 once the worker has joined its group."""
    if not port_open(cfg.connect_port):
        return False
    try:
        with urllib.request.urlopen(cfg.connect_url + "/health", timeout=3) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


WORKER_PROPERTIES = """# written by `pssync dev up --with-connect` on every start
bootstrap.servers={bootstrap}
group.id=pssync-connect
config.storage.topic=pssync-connect-configs
offset.storage.topic=pssync-connect-offsets
status.storage.topic=pssync-connect-status
config.storage.replication.factor=1
offset.storage.replication.factor=1
status.storage.replication.factor=1
# connectors name their own converters; these are for those that do not
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
listeners=http://127.0.0.1:{port}
rest.advertised.host.name=127.0.0.1
rest.advertised.port={port}
plugin.path={plugins}
offset.flush.interval.ms=1000
"""


def start_connect(cfg: ConnectStackConfig, java: str, mvn: str) -> str:
    svc = Service("connect", cfg.stack)
    if svc.pid() is not None and connect_ready(cfg):
        return "already running"
    if svc.pid() is None:
        devstack._check_port_free(cfg.connect_port, "Kafka Connect")
        home = fetch_connect(cfg, mvn)
        plugins = fetch_plugins(cfg, mvn)
        svc.dir.mkdir(parents=True, exist_ok=True)
        props = svc.dir / "connect-distributed.properties"
        props.write_text(
            WORKER_PROPERTIES.format(
                bootstrap=cfg.stack.bootstrap, port=cfg.connect_port, plugins=plugins
            )
        )
        jopts = ["-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true"]
        log4j = f"-Dlog4j2.configurationFile={home / 'log4j2.xml'}"
        main = "org.apache.kafka.connect.cli.ConnectDistributed"
        with warnings.catch_warnings():
            # the worker outlives us on purpose (own session); Popen warns when dropped
            warnings.simplefilter("ignore", ResourceWarning)
            svc.start([java, *jopts, log4j, "-cp", f"{home / 'lib'}/*", main, str(props)], svc.dir)
    devstack._wait(lambda: connect_ready(cfg), "Kafka Connect", svc, 240)
    return "started"


def up(cfg: ConnectStackConfig) -> dict[str, str]:
    """PostgreSQL and Connect (Kafka and the registry must be up: `devstack.up`)."""
    javas, mvn = devstack.require_tools()
    java17 = javas[-1][1] if javas[-1][0] >= 17 else javas[0][1]
    result = {"postgres": start_postgres(cfg)}
    result["connect"] = start_connect(cfg, java17, mvn)
    return result


def down(cfg: ConnectStackConfig) -> dict[str, str]:
    nothing = "not running (nothing of ours)"
    out = {"connect": "stopped" if Service("connect", cfg.stack).stop(60) else nothing}
    out["postgres"] = "stopped" if stop_postgres(cfg) else nothing
    return out


def status(cfg: ConnectStackConfig) -> dict[str, dict[str, object]]:
    connect = Service("connect", cfg.stack)
    pg_running = postgres_pid(cfg)
    bins = _pg_bins()
    return {
        "connect": {
            "pid": connect.pid(),
            "answering": connect_ready(cfg),
            "url": cfg.connect_url,
            "log": str(connect.log_file),
        },
        "postgres": {
            "pid": pg_running,
            "answering": bool(bins) and postgres_ready(cfg, bins[0]),
            "url": f"postgresql://{cfg.user}@127.0.0.1:{cfg.postgres_port}/{cfg.database}",
            "data": str(cfg.pg_data),
            "log": str(cfg.pg_log),
        },
    }
