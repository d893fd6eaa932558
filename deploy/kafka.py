"""Apache Kafka's own broker, from Maven Central jars, run in KRaft mode with the local Java."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import socket
import subprocess
import uuid
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from deploy._process import DeployError, ManagedProcess, ServiceStartError, free_port, tail
from deploy.tls import CertificateAuthority
from schemas.kafka_connection import KafkaConnection

__all__ = [
    "DEFAULT_KAFKA_VERSION",
    "SECOND_KAFKA_VERSION",
    "VERSION_VARIABLE",
    "BrokerSecurity",
    "KafkaBroker",
    "ensure_kafka_jars",
    "kafka_version",
]

#: The newest line Maven Central serves here, what Strimzi deploys now.
DEFAULT_KAFKA_VERSION = "4.4.0"
#: The last line before Kafka 4 removed old protocol versions (KIP-896); the tests' second leg.
SECOND_KAFKA_VERSION = "3.9.1"
#: Chooses the broker's version; a Maven version of org.apache.kafka:kafka_2.13.
VERSION_VARIABLE = "RAGSTREAM_KAFKA_VERSION"

KAFKA_DIR = Path(__file__).resolve().parent / "kafka"
POM = KAFKA_DIR / "pom.xml"
LIBS = KAFKA_DIR / "libs"
# Written in a version's folder after a complete download; holds the pom's hash, so that a
# changed pom fetches again.
_STAMP = ".complete"

_JAVA_OPTS = ["-Xmx512m", "-Xms256m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true"]

# Kafka 4 logs through log4j 2 (KIP-653), 3.x through log4j 1 (reload4j): the same file either way.
_LOG4J2 = """\
status = warn
shutdownHook = disable
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {path}
appender.file.filePattern = {path}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 2
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""

_LOG4J = """\
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File={path}
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
"""


def kafka_version() -> str:
    """The broker version to run: ``RAGSTREAM_KAFKA_VERSION``, else `DEFAULT_KAFKA_VERSION`."""
    version = os.environ.get(VERSION_VARIABLE, "").strip() or DEFAULT_KAFKA_VERSION
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise DeployError(
            f"{VERSION_VARIABLE}={version!r} is not a Kafka release such as {DEFAULT_KAFKA_VERSION}"
        )
    return version


def _major(version: str) -> int:
    return int(version.split(".", 1)[0])


def ensure_kafka_jars(version: str | None = None) -> Path:
    """Fetch one broker version's jars (`kafka_version()` by default) into
    deploy/kafka/libs/VERSION unless a complete copy is there; return that folder."""
    version = version or kafka_version()
    libs = LIBS / version
    pom_hash = hashlib.sha256(POM.read_bytes()).hexdigest()
    if _jars_complete(libs, pom_hash):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DeployError("mvn (Apache Maven) is not installed; it fetches the Kafka jars")
    # Two test sessions starting at once must not download into the same folder together;
    # locking the pom itself leaves no lock file behind.
    with POM.open("rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _jars_complete(libs, pom_hash):
            return libs
        shutil.rmtree(libs, ignore_errors=True)
        cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies"]
        cmd += [f"-Dkafka.version={version}", f"-DoutputDirectory={libs}"]
        if _major(version) < 4:
            cmd.append("-Pkafka-3")
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()[-4000:]
            raise DeployError(f"fetching the Kafka {version} jars failed ({' '.join(cmd)}):\n{output}")
        (libs / _STAMP).write_text(pom_hash)
    return libs


def _jars_complete(libs: Path, pom_hash: str) -> bool:
    stamp = libs / _STAMP
    return stamp.is_file() and stamp.read_text() == pom_hash


def _random_cluster_id() -> str:
    # Kafka's own format (Uuid.randomUuid().toString()): url-safe base64 of 16 bytes, unpadded.
    # Like Kafka, never start with "-": the storage tool would read the id as an option.
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _run_coroutine(coro: Coroutine[Any, Any, bool]) -> bool:
    # A fresh thread has no running loop, so this works from sync code and from inside async tests.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _broker_answers(host: str, port: int) -> bool:
    # A plain connect first: aiokafka logs an error for every refused connection.
    try:
        socket.create_connection((host, port), timeout=2.0).close()
    except OSError:
        return False
    return _run_coroutine(_describe_cluster(f"{host}:{port}"))


async def _describe_cluster(bootstrap_servers: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return bool(cluster["brokers"])
    finally:
        await admin.close()


# What the storage tool's --add-scram accepts unquoted: no "=", ",", "[", "]" or spaces.
_SCRAM_TOKEN = re.compile(r"[A-Za-z0-9._~-]+")


@dataclass(frozen=True)
class BrokerSecurity:
    """A second listener that takes only TLS connections logging in with SCRAM-SHA-512.

    `authority` signs the broker's certificate (clients trust its `ca_file`); `users` maps each
    user name to its password. Users are stored when the broker's data directory is formatted,
    so a broker started again on its data keeps the users it was first made with.
    """

    authority: CertificateAuthority
    users: Mapping[str, str] = field(repr=False)

    def __post_init__(self) -> None:
        for name, password in self.users.items():
            if not (_SCRAM_TOKEN.fullmatch(name) and _SCRAM_TOKEN.fullmatch(password)):
                raise DeployError(
                    f"SCRAM user {name!r}: names and passwords may hold only letters, digits and ._~-"
                )


class KafkaBroker:
    """One KRaft node acting as broker and controller, listening on 127.0.0.1 only.

    Data lives in ``state_dir/kafka-<port>/``; starting again on an existing, formatted
    directory keeps its topics and messages. For a multi-node cluster pass the same
    `cluster_id` and `voters` (node id -> controller port) to every node. `version` is a Kafka
    release (`kafka_version()` by default).

    With `security`, the broker also listens on `secure_port` for SASL_SSL clients logging in
    with SCRAM-SHA-512 (`client_connection(user)`); the plaintext `port` stays for the
    launcher's readiness check and between brokers.
    """

    def __init__(
        self,
        state_dir: Path,
        port: int,
        controller_port: int | None = None,
        node_id: int = 1,
        *,
        cluster_id: str | None = None,
        voters: Mapping[int, int] | None = None,
        overrides: Mapping[str, str] | None = None,
        version: str | None = None,
        security: BrokerSecurity | None = None,
    ) -> None:
        self.version = version or kafka_version()
        self.libs = LIBS / self.version
        self.port = port
        self.node_id = node_id
        self.home = Path(state_dir) / f"kafka-{port}"
        self.data_dir = self.home / "data"
        self.properties_file = self.home / "server.properties"
        self.server_log = self.home / "logs" / "server.log"
        self.controller_port = controller_port or self._saved_port("CONTROLLER") or free_port()
        self.security = security
        self.secure_port = (self._saved_port("SASL_SSL") or free_port()) if security else None
        self.voters = dict(voters) if voters is not None else {node_id: self.controller_port}
        self.cluster_id = cluster_id
        self.overrides = dict(overrides or {})
        self._process = ManagedProcess(
            f"kafka broker {node_id} on port {port}",
            [self._java(), *self._jvm_args(), "kafka.Kafka", str(self.properties_file)],
            log_file=self.home / "kafka.out",
            pid_file=self.home / "kafka.pid",
            extra_logs=[self.server_log],
        )

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def secure_bootstrap_servers(self) -> str:
        """The SASL_SSL listener's address; only on a broker started with `security`."""
        if self.secure_port is None:
            raise DeployError(f"the Kafka broker on port {self.port} has no secured listener")
        return f"127.0.0.1:{self.secure_port}"

    def client_connection(self, user: str) -> KafkaConnection:
        """How `user` reaches this broker over SASL_SSL with SCRAM-SHA-512, trusting its CA."""
        if self.security is None or user not in self.security.users:
            known = sorted(self.security.users) if self.security else []
            raise DeployError(
                f"no SCRAM user {user!r} on the Kafka broker on port {self.port} (users: {known})"
            )
        return KafkaConnection(
            bootstrap_servers=self.secure_bootstrap_servers,
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username=user,
            sasl_password=self.security.users[user],
            ssl_cafile=self.security.authority.ca_file,
        )

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def start(self, timeout: float = 90.0) -> None:
        """Format the data dir on first use, start the broker and wait until it answers metadata."""
        if not self._process.is_running():
            ensure_kafka_jars(self.version)
            self._write_config()
            if not (self.data_dir / "meta.properties").exists():
                self._format()
            self._process.start()
        self._process.wait_until(
            self._answers,
            timeout,
            f"Kafka broker at {self.bootstrap_servers}",
            not_yet=(OSError, KafkaError),
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the broker down cleanly (SIGTERM), killing it if it takes longer than `timeout`."""
        self._process.stop(timeout)

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would; its data stays for a later start()."""
        self._process.kill()

    def _java(self) -> str:
        # Resolved lazily by the OS if missing, so that stop() works without Java.
        return shutil.which("java") or "java"

    def _jvm_args(self) -> list[str]:
        if _major(self.version) >= 4:
            logging = f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}"
        else:
            logging = f"-Dlog4j.configuration=file:{self.home / 'log4j.properties'}"
        return [*_JAVA_OPTS, logging, "-cp", f"{self.libs}/*"]

    def _answers(self) -> bool:
        if self.secure_port is not None:
            # Both listeners open together, but a connection refused here says so at once.
            socket.create_connection(("127.0.0.1", self.secure_port), timeout=2.0).close()
        return _broker_answers("127.0.0.1", self.port)

    def _saved_port(self, listener_name: str) -> int | None:
        # A restart from another process must keep the controller port the data was made with,
        # and the secured port its clients were told.
        with contextlib.suppress(FileNotFoundError):
            for line in self.properties_file.read_text().splitlines():
                key, _, value = line.partition("=")
                if key == "listeners":
                    for listener in value.split(","):
                        if listener.startswith(f"{listener_name}://"):
                            return int(listener.rsplit(":", 1)[1])
        return None

    def _write_config(self) -> None:
        if shutil.which("java") is None:
            raise DeployError("java is not installed; the Kafka broker needs Java 17")
        self.server_log.parent.mkdir(parents=True, exist_ok=True)
        if _major(self.version) >= 4:
            (self.home / "log4j2.properties").write_text(_LOG4J2.format(path=self.server_log))
        else:
            (self.home / "log4j.properties").write_text(_LOG4J.format(path=self.server_log))
        properties = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": ",".join(f"{n}@127.0.0.1:{p}" for n, p in self.voters.items()),
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            # A broker restarted after a crash is refused registration until its old session
            # expires (9 s by default); fault tests restart brokers often.
            "broker.session.timeout.ms": "4000",
            "broker.heartbeat.interval.ms": "1000",
            # 50 partitions each (the defaults) cost seconds per start and first join on 2 cores.
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.num.partitions": "4",
        }
        if self.security is not None:
            properties |= self._secure_listener(properties)
        properties |= self.overrides
        self.properties_file.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
        if self.security is not None:
            self.properties_file.chmod(0o600)  # it holds the keystore's password

    def _secure_listener(self, plain: Mapping[str, str]) -> dict[str, str]:
        """The properties that add the SASL_SSL listener to the `plain` ones."""
        assert self.security is not None
        server = self.security.authority.issue(f"kafka-{self.port}")
        secure = f"SASL_SSL://127.0.0.1:{self.secure_port}"
        prefix = "listener.name.sasl_ssl."
        return {
            "listeners": f"{plain['listeners']},{secure}",
            "advertised.listeners": f"{plain['advertised.listeners']},{secure}",
            "listener.security.protocol.map": f"{plain['listener.security.protocol.map']},SASL_SSL:SASL_SSL",
            f"{prefix}sasl.enabled.mechanisms": "SCRAM-SHA-512",
            # The broker only checks logins here (against the users stored at format time); it
            # logs in nowhere itself, so the module needs no user of its own.
            f"{prefix}scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            f"{prefix}ssl.keystore.type": "PKCS12",
            f"{prefix}ssl.keystore.location": str(server.keystore),
            f"{prefix}ssl.keystore.password": server.keystore_password,
            f"{prefix}ssl.key.password": server.keystore_password,
            f"{prefix}ssl.truststore.type": "PEM",
            f"{prefix}ssl.truststore.location": str(self.security.authority.ca_file),
        }

    def _format(self) -> None:
        cluster_id = self.cluster_id or _random_cluster_id()
        cmd = [self._java(), *self._jvm_args(), "kafka.tools.StorageTool", "format"]
        cmd += ["-t", cluster_id, "-c", str(self.properties_file)]
        for name, password in (self.security.users if self.security else {}).items():
            cmd += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise ServiceStartError(
                f"formatting Kafka storage in {self.data_dir}", output[-2000:], tail(self.server_log)
            )
