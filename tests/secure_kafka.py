"""A locked-down Kafka for the security tests: SASL_SSL only, SCRAM users, mutual TLS.

A separate single-node KRaft broker on free ports, never the shared dev stack: the
same Apache Kafka jars `pssync dev up` resolved (`devstack.fetch_kafka`), started and
stopped the way it starts its own (`devstack.Service`), with its own state directory.

- Certificates, generated here with openssl: a CA, the broker's certificate (for
  127.0.0.1 and localhost) in a PKCS12 keystore, and a client certificate whose key is
  encrypted (so the key-password setting is exercised too).
- The client listener is SASL_SSL and requires a client certificate signed by the CA;
  users are created when the storage is formatted (`StorageTool format --add-scram`):
  SCRAM-SHA-512 and SCRAM-SHA-256 credentials, and PLAIN users in the JAAS config.
- The controller, and the broker talking to itself, use a PLAINTEXT listener on
  127.0.0.1 that no client is told about.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import time
import uuid
from base64 import urlsafe_b64encode
from dataclasses import dataclass
from pathlib import Path

from pssync import devstack
from pssync.connectors.kafka import KafkaUnavailable, check_kafka
from pssync.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed:\n{proc.stderr}")


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path  # for 127.0.0.1 and localhost (the broker's, and the test proxy's)
    server_key: Path
    keystore: Path  # the broker's, PKCS12
    keystore_password: str
    client_cert: Path
    client_key: Path  # encrypted PKCS8 PEM
    client_key_password_file: Path


def make_certificates(folder: Path) -> Certificates:
    """A CA, the broker's keystore, and a client certificate with an encrypted key."""
    folder.mkdir(parents=True, exist_ok=True)
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=pssync test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=folder,
    )  # fmt: skip
    for name in ("broker", "client"):
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=folder,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", f"{name}.pem",
            cwd=folder,
        )  # fmt: skip
    store_password = secrets.token_hex(8)
    _openssl(
        "pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key",
        "-certfile", "ca.pem", "-name", "broker", "-passout", f"pass:{store_password}",
        "-out", "broker.p12", cwd=folder,
    )  # fmt: skip
    key_password = secrets.token_hex(8)
    (folder / "client-key-password").write_text(key_password + "\n")
    _openssl(
        "pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", "client.key",
        "-passout", f"pass:{key_password}", "-out", "client-encrypted.key", cwd=folder,
    )  # fmt: skip
    return Certificates(
        ca=folder / "ca.pem",
        server_cert=folder / "broker.pem",
        server_key=folder / "broker.key",
        keystore=folder / "broker.p12",
        keystore_password=store_password,
        client_cert=folder / "client.pem",
        client_key=folder / "client-encrypted.key",
        client_key_password_file=folder / "client-key-password",
    )


@dataclass
class SecureKafka:
    """A running locked-down broker and what a client needs to reach it."""

    bootstrap: str
    certs: Certificates
    users: dict[str, str]  # name -> password (SCRAM-SHA-512/256 and PLAIN)
    service: devstack.Service
    folder: Path

    def password_file(self, user: str, password: str | None = None) -> Path:
        """A file holding `user`'s password (or the one given), as a Secret mount would."""
        path = self.folder / f"password-{user}-{uuid.uuid4().hex[:6]}"
        path.write_text((password if password is not None else self.users[user]) + "\n")
        path.chmod(0o600)
        return path

    def settings(self, base: Settings, user: str = "alice", **overrides: object) -> Settings:
        """`base` (topics, registry, data dir) connected to this broker as `user`."""
        values: dict[str, object] = {
            "kafka_bootstrap": self.bootstrap,
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": user,
            "kafka_sasl_password_file": str(self.password_file(user)),
            "kafka_ssl_ca_file": str(self.certs.ca),
            "kafka_ssl_cert_file": str(self.certs.client_cert),
            "kafka_ssl_key_file": str(self.certs.client_key),
            "kafka_ssl_key_password_file": str(self.certs.client_key_password_file),
        }
        values.update(overrides)
        return base.model_copy(update=values)

    def log_tail(self) -> str:
        return self.service.log_tail(40)

    def stop(self) -> None:
        self.service.stop()


def start_secure_kafka(folder: Path, timeout_s: float = 120) -> SecureKafka:
    """Format and start the broker; returns once a SASL_SSL client is answered."""
    javas, mvn = devstack.require_tools()
    java = javas[-1][1] if javas[-1][0] >= 17 else javas[0][1]  # as `devstack.up`
    dev = devstack.StackConfig.from_env()  # the jars' cache: shared, read only
    home = devstack.fetch_kafka(dev, mvn)
    port, internal, controller = free_port(), free_port(), free_port()
    cfg = devstack.StackConfig(
        kafka_port=port,
        controller_port=controller,
        cache_dir=dev.cache_dir,
        state_dir=folder / "state",
    )
    certs = make_certificates(folder / "certs")
    users = {"alice": secrets.token_urlsafe(12), "bob": secrets.token_urlsafe(12)}
    svc = devstack.Service("kafka", cfg)
    svc.dir.mkdir(parents=True, exist_ok=True)
    data = svc.dir / "data"
    plain_users = " ".join(f'user_{name}="{pw}"' for name, pw in users.items())
    props = svc.dir / "server.properties"
    props.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers=127.0.0.1:{controller}",
                f"listeners=SASL_SSL://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal},"
                f"CONTROLLER://127.0.0.1:{controller}",
                f"advertised.listeners=SASL_SSL://127.0.0.1:{port},"
                f"INTERNAL://127.0.0.1:{internal},CONTROLLER://127.0.0.1:{controller}",
                "inter.broker.listener.name=INTERNAL",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,"
                "SASL_SSL:SASL_SSL",
                "sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                "listener.name.sasl_ssl.plain.sasl.jaas.config="
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
                "ssl.keystore.type=PKCS12",
                f"ssl.keystore.location={certs.keystore}",
                f"ssl.keystore.password={certs.keystore_password}",
                "ssl.truststore.type=PEM",
                f"ssl.truststore.location={certs.ca}",
                "listener.name.sasl_ssl.ssl.client.auth=required",
                f"log.dirs={data}",
                *devstack.SINGLE_NODE_BROKER,
                "",
            ]
        )
    )
    jopts = [
        "-Xms128m",
        "-Xmx512m",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={home / 'log4j2.xml'}",
        f"-Dkafka.logs.dir={svc.dir}",
    ]
    cp = str(home / "lib") + "/*"
    scram = []
    for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
        for name, pw in users.items():
            scram += ["--add-scram", f"{mechanism}=[name={name},password={pw}]"]
    cluster_id = urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    fmt = subprocess.run(
        [java, *jopts, "-cp", cp, "kafka.tools.StorageTool", "format", "-t", cluster_id,
         "-c", str(props), "--standalone", *scram],
        capture_output=True,
        text=True,
    )  # fmt: skip
    if fmt.returncode != 0:
        raise RuntimeError(f"formatting the secured broker failed:\n{fmt.stdout}{fmt.stderr}")
    svc.start([java, *jopts, "-cp", cp, "kafka.Kafka", str(props)], svc.dir)
    kafka = SecureKafka(f"127.0.0.1:{port}", certs, users, svc, folder)
    probe = kafka.settings(Settings(data_dir=folder / "probe"))
    deadline = time.monotonic() + timeout_s
    while True:
        if svc.pid() is None:
            raise RuntimeError(f"the secured broker exited:\n{kafka.log_tail()}")
        try:
            check_kafka(probe, timeout_s=2)
            return kafka
        except KafkaUnavailable as exc:
            if time.monotonic() > deadline:
                kafka.stop()
                raise RuntimeError(f"the secured broker did not answer: {exc}") from None
        time.sleep(0.5)
