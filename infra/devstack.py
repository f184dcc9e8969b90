"""Run a real Apache Kafka broker and a real PostgreSQL server as local child processes.

Both services run from project-local files only (see ``infra/setup.sh``):

* Kafka: the broker jars resolved by ``infra/kafka/pom.xml`` into ``.local/kafka/libs``, started
  as a single KRaft node (broker + controller in one JVM); ``infra/kafka_cluster.py`` runs three
  of them as one replicated cluster.
* PostgreSQL: the server programs of the Debian package, running a *private* cluster (own data
  folder, own port, own socket folder); the system cluster is never used.

Tests start them on free ports in temporary folders; ``python -m infra.devstack kafka`` (or
``postgres``) runs one in the foreground under ``.local/`` with the default development ports.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import contextlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, ClassVar

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

LOCALHOST = "127.0.0.1"
DEFAULT_KAFKA_PORT = 9092
DEFAULT_KAFKA_CONTROLLER_PORT = 9093
DEFAULT_POSTGRES_PORT = 5432
DEFAULT_DATABASE = "studentperf"
POSTGRES_SUPERUSER = "postgres"


class ServiceError(RuntimeError):
    """A service could not be started, did not become ready, or failed."""


def repo_root() -> Path:
    """The repository's top folder (the parent of ``infra/``)."""
    return Path(__file__).resolve().parent.parent


def local_dir() -> Path:
    """The git-ignored folder holding everything project-local (``<repo>/.local``)."""
    return repo_root() / ".local"


def kafka_libs_dir() -> Path:
    """Where ``infra/setup.sh`` puts the broker jars."""
    return local_dir() / "kafka" / "libs"


def kafka_log4j_config() -> Path:
    return repo_root() / "infra" / "kafka" / "log4j2.yaml"


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port that is free right now (for tests; another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _read_end(path: Path, max_bytes: int = 256 * 1024) -> list[str]:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return []


_ERROR_MARKERS = (" ERROR ", " FATAL ", "FATAL:", "PANIC:", "ERROR:", "Caused by:", "Exception: ")


def _error_lines(lines: list[str], limit: int) -> list[str]:
    """The last ``limit`` lines that report an error (stack frames left out)."""
    hits = [
        line
        for line in lines
        if any(marker in line for marker in _ERROR_MARKERS) and not line.startswith("\tat ")
    ]
    return hits[-limit:]


# Services still running when the interpreter exits (a test run aborted half-way, an unhandled
# exception in the CLI) are stopped so no broker or postmaster outlives its owner by accident.
_live_services: set[Service] = set()


@atexit.register
def _stop_leftovers() -> None:
    for service in list(_live_services):
        with contextlib.suppress(Exception):
            service.stop(timeout=10)


class Service(ABC):
    """One server process, started and supervised by this Python process."""

    name: ClassVar[str] = "service"

    def __init__(self, state_dir: Path | str, *, host: str, port: int) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.host = host
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    # -- to implement --------------------------------------------------------------------------

    @abstractmethod
    def start(self) -> None:
        """Prepare the state folder (first time only) and launch the server process."""

    @abstractmethod
    async def _probe(self) -> bool:
        """One readiness check; True when the service answers real requests."""

    @abstractmethod
    def log_files(self) -> list[Path]:
        """The service's log files, most useful first (their tails go into error messages)."""

    def _stop_signal(self) -> signal.Signals:
        return signal.SIGTERM

    # -- process handling ----------------------------------------------------------------------

    @property
    def stdout_path(self) -> Path:
        return self.state_dir / f"{self.name}.out"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def _launch(
        self,
        cmd: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
    ) -> None:
        if self.running:
            raise ServiceError(f"{self.name} is already running (pid {self.pid})")
        self._close_out()
        self._out = self.stdout_path.open("ab")
        self._out.write(f"\n===== {time.strftime('%F %T')} {' '.join(cmd)}\n".encode())
        self._out.flush()
        self._proc = subprocess.Popen(
            _as_user(user, cmd),
            cwd=cwd or self.state_dir,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            # Own session: a Ctrl-C in the terminal reaches only the supervising Python process,
            # which then stops the services in order.
            start_new_session=True,
        )
        _live_services.add(self)

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful shutdown; SIGKILL when it takes longer than ``timeout`` seconds."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(self._stop_signal())
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap()

    def kill(self) -> None:
        """Crash the service (SIGKILL, no shutdown work), e.g. for fault-injection tests."""
        if self._proc is not None and self._proc.poll() is None:
            self._hard_kill()
        self._reap()

    def _hard_kill(self) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()
        self._proc.wait()

    def _reap(self) -> None:
        _live_services.discard(self)
        self._close_out()

    def _close_out(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def log_tail(self, lines: int = 30) -> str:
        """Error lines and the last ``lines`` lines of each log file (for error messages)."""
        parts = []
        for path in [*self.log_files(), self.stdout_path]:
            content = _read_end(path)
            if not any(line.strip() for line in content):
                continue
            errors = _error_lines(content, 12)
            if errors:
                parts.append(f"--- {path}: errors\n" + "\n".join(errors))
            parts.append(f"--- {path}: last {lines} lines\n" + "\n".join(content[-lines:]))
        return "\n".join(parts) or "(no log output)"

    async def wait_ready(self, timeout: float = 60.0) -> float:
        """Wait until the service answers; returns the seconds waited.

        Raises ServiceError, with the tail of the logs, when the process exits or when
        ``timeout`` seconds pass first.
        """
        if self._proc is None:
            raise ServiceError(f"{self.name} was not started")
        started = time.monotonic()
        deadline = started + timeout
        last_error = "no answer yet"
        while True:
            code = self._proc.poll()
            if code is not None:
                self._reap()
                raise ServiceError(
                    f"{self.name} exited with code {code} before it was ready\n{self.log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServiceError(
                    f"{self.name} not ready after {timeout:.0f} s (last probe: {last_error})\n"
                    f"{self.log_tail()}"
                )
            try:
                async with asyncio.timeout(min(remaining, 5.0)):
                    if await self._probe():
                        return time.monotonic() - started
                last_error = "not ready"
            except Exception as exc:  # still starting: refused, not ready, timed out, ...
                last_error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.2)

    async def start_and_wait(self, timeout: float = 60.0) -> float:
        """``start()`` then ``wait_ready()``; stops the process again if it never gets ready."""
        self.start()
        try:
            return await self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise

    def describe(self) -> str:
        return f"{self.name} on {self.host}:{self.port}"


def _as_user(user: str | None, cmd: Sequence[str]) -> list[str]:
    """``cmd`` run as ``user`` (only when we are root), through ``setpriv``, which execs.

    Not Popen(user=...): that makes subprocess fork instead of vfork, and a fork of a process
    with gRPC loaded runs gRPC's fork handlers, which crash the child now and then (seen as a
    postmaster dying with SIGSEGV before it logged a line, in the fault tests).
    """
    if user is None or os.geteuid() != 0:
        return list(cmd)
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *cmd]


# ----------------------------------------------------------------------------------------------
# Kafka


def new_cluster_id() -> str:
    """A Kafka cluster id, as ``kafka-storage random-uuid`` makes (URL-safe base64, 16 bytes)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class KafkaBroker(Service):
    """A KRaft Kafka node (broker and controller in one JVM): alone by default, or one of the
    nodes of an ``infra.kafka_cluster.KafkaCluster``.

    State folder layout: ``server.properties``, ``data/`` (the log dir), ``logs/server.log``
    (log4j2) and ``kafka.out`` (the JVM's stdout and stderr). Restarting on the same folder and
    ports reuses the data.
    """

    name = "kafka"

    def __init__(
        self,
        state_dir: Path | str,
        *,
        host: str = LOCALHOST,
        port: int = DEFAULT_KAFKA_PORT,
        controller_port: int = DEFAULT_KAFKA_CONTROLLER_PORT,
        num_partitions: int = 3,
        heap: str = "512m",
        libs_dir: Path | None = None,
        log4j_config: Path | None = None,
        java: str = "java",
        extra_properties: Mapping[str, str] | None = None,
        node_id: int = 1,
        quorum_voters: str | None = None,
        cluster_id: str | None = None,
        replication_factor: int = 1,
        min_insync_replicas: int = 1,
    ) -> None:
        super().__init__(state_dir, host=host, port=port)
        self.controller_port = controller_port
        # One node of a cluster (infra.kafka_cluster) names every voter and shares the
        # cluster's id; alone, it is the only voter and formats with an id of its own.
        self.node_id = node_id
        self.quorum_voters = quorum_voters or f"{node_id}@{host}:{controller_port}"
        self.cluster_id = cluster_id
        self.replication_factor = replication_factor
        self.min_insync_replicas = min_insync_replicas
        self.num_partitions = num_partitions
        self.heap = heap
        self.libs_dir = (libs_dir or kafka_libs_dir()).resolve()
        self.log4j_config = (log4j_config or kafka_log4j_config()).resolve()
        self.java = java
        self.extra_properties = dict(extra_properties or {})

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def properties_path(self) -> Path:
        return self.state_dir / "server.properties"

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def formatted(self) -> bool:
        return (self.data_dir / "meta.properties").exists()

    def log_files(self) -> list[Path]:
        return [self.logs_dir / "server.log"]

    def describe(self) -> str:
        return f"kafka on {self.bootstrap_servers} (controller :{self.controller_port})"

    def server_properties(self) -> dict[str, str]:
        replicas, min_isr = str(self.replication_factor), str(self.min_insync_replicas)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.quorum_voters,
            "listeners": (
                f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(self.data_dir),
            "num.partitions": str(self.num_partitions),
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": "0",
            # After a crash (kill()) the restarted broker can only register once the session of
            # its previous incarnation has expired: keep that short (default 9 s).
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "3000",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
        }
        props.update(self.extra_properties)
        return props

    def _write_properties(self) -> None:
        lines = ["# Written by infra/devstack.py on every start; edits are overwritten."]
        lines += [f"{key}={value}" for key, value in self.server_properties().items()]
        self.properties_path.write_text("\n".join(lines) + "\n")

    def _java_cmd(self, main_class: str, *args: str) -> list[str]:
        return [
            self.java,
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_config}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp",
            f"{self.libs_dir}/*",
            main_class,
            *args,
        ]

    def _check_installed(self) -> None:
        if not any(self.libs_dir.glob("kafka_*.jar")):
            raise ServiceError(f"no Kafka jars in {self.libs_dir}: run `bash infra/setup.sh`")
        if shutil.which(self.java) is None:
            raise ServiceError(f"{self.java!r} not found on PATH (Kafka needs Java 17+)")

    def format_storage(self) -> None:
        """Format the log dir for KRaft (only when not yet formatted)."""
        if self.formatted:
            return
        cmd = self._java_cmd(
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            self.cluster_id or new_cluster_id(),
            "--config",
            str(self.properties_path),
        )
        result = subprocess.run(
            cmd, cwd=self.state_dir, capture_output=True, text=True, check=False, timeout=120
        )
        if result.returncode != 0 or not self.formatted:
            raise ServiceError(
                f"kafka storage format failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )

    def start(self) -> None:
        self._check_installed()
        for folder in (self.state_dir, self.data_dir, self.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._write_properties()
        self.format_storage()
        self._launch(self._java_cmd("kafka.Kafka", str(self.properties_path)))

    def admin_client(self, request_timeout_ms: int = 10_000) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers, request_timeout_ms=request_timeout_ms
        )

    async def _probe(self) -> bool:
        # A plain TCP check first: it keeps aiokafka from logging connection errors while the
        # JVM is still starting.
        if not port_open(self.host, self.port):
            return False
        admin = self.admin_client(request_timeout_ms=3_000)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
        finally:
            await admin.close()
        brokers = cluster.get("brokers") or []
        controller = cluster.get("controller_id", -1)
        return len(brokers) > 0 and controller is not None and controller >= 0

    async def create_topic(
        self,
        name: str,
        partitions: int | None = None,
        *,
        configs: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> bool:
        """Create a topic (this node's replication factor); no-op when it already exists.

        Returns True when this call created it. Waits until every partition has a leader, so
        producers can use the topic right away.
        """
        return await create_topic(
            self.bootstrap_servers,
            name,
            partitions if partitions is not None else self.num_partitions,
            replication_factor=self.replication_factor,
            min_insync_replicas=self.min_insync_replicas,
            configs=configs,
            timeout=timeout,
        )


async def create_topic(
    bootstrap_servers: str,
    name: str,
    partitions: int,
    *,
    replication_factor: int,
    min_insync_replicas: int,
    configs: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> bool:
    """Create a topic with ``min.insync.replicas`` set on it; no-op when it already exists.

    Returns True when this call created it. Waits until every partition has a leader.
    """
    topic = NewTopic(
        name=name,
        num_partitions=partitions,
        replication_factor=replication_factor,
        topic_configs={"min.insync.replicas": str(min_insync_replicas), **(configs or {})},
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    created = False
    try:
        await admin.start()
        response = await admin.create_topics([topic], timeout_ms=int(timeout * 1000))
        for entry in response.to_object()["topic_errors"]:
            code = int(entry["error_code"])
            if code == TopicAlreadyExistsError.errno:
                continue
            if code != 0:
                message = entry.get("error_message") or ""
                raise for_code(code)(f"creating topic {name!r}: {message}")
            created = True
        await _wait_leaders(admin, name, partitions, timeout)
    finally:
        await admin.close()
    return created


async def _wait_leaders(
    admin: AIOKafkaAdminClient, topic: str, partitions: int, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        described = await admin.describe_topics([topic])
        ready = [
            p
            for t in described
            if t["topic"] == topic and t["error_code"] == 0
            for p in t["partitions"]
            if p["error_code"] == 0 and p["leader"] >= 0
        ]
        if len(ready) >= partitions:
            return
        if time.monotonic() > deadline:
            raise ServiceError(f"topic {topic!r}: partitions without leader after {timeout} s")
        await asyncio.sleep(0.1)


# ----------------------------------------------------------------------------------------------
# PostgreSQL


def find_postgres_bindir() -> Path:
    """The folder with ``initdb``/``postgres``: ``pg_config --bindir``, else the newest
    ``/usr/lib/postgresql/*/bin`` (Debian keeps them off PATH)."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        if result.returncode == 0 and result.stdout.strip():
            candidates.append(Path(result.stdout.strip()))

    def version(path: Path) -> tuple[int, ...]:
        try:
            return tuple(int(x) for x in path.parent.name.split("."))
        except ValueError:
            return (0,)

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    raise ServiceError("PostgreSQL server programs not found: run `bash infra/setup.sh`")


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PostgresServer(Service):
    """A private PostgreSQL cluster: own data folder, port and socket folder.

    State folder layout: ``data/`` (PGDATA, owned by the ``postgres`` user when we are root),
    ``run/`` (the Unix socket) and ``postgres.out`` (the server log). Authentication is ``trust``
    and the server only listens on 127.0.0.1.
    """

    name = "postgres"

    def __init__(
        self,
        state_dir: Path | str,
        *,
        host: str = LOCALHOST,
        port: int = DEFAULT_POSTGRES_PORT,
        bindir: Path | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(state_dir, host=host, port=port)
        self._bindir = bindir
        self.settings = dict(settings or {})
        # initdb/postgres refuse to run as root: run them as the package's postgres user.
        self.run_as: str | None = POSTGRES_SUPERUSER if os.geteuid() == 0 else None

    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            self._bindir = find_postgres_bindir()
        return self._bindir

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def log_files(self) -> list[Path]:
        return []  # the server logs to stderr, i.e. postgres.out

    def _stop_signal(self) -> signal.Signals:
        return signal.SIGINT  # "fast" shutdown: roll back open transactions, checkpoint, exit

    def dsn(self, dbname: str = DEFAULT_DATABASE, user: str = POSTGRES_SUPERUSER) -> str:
        return f"postgresql://{user}@{self.host}:{self.port}/{dbname}"

    def describe(self) -> str:
        return f"postgres on {self.host}:{self.port} ({self.dsn()})"

    def _prepare_dirs(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o755)
        for folder in (self.data_dir, self.socket_dir):
            folder.mkdir(mode=0o700, exist_ok=True)
        if self.run_as is not None:
            entry = pwd.getpwnam(self.run_as)
            _make_traversable(self.state_dir)
            for folder in (self.data_dir, self.socket_dir):
                st = folder.stat()
                if st.st_uid != entry.pw_uid:
                    os.chown(folder, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)

    def initdb(self) -> None:
        """Create the cluster (only when the data folder is not initialized yet)."""
        if self.initialized:
            return
        cmd = [
            str(self.bindir / "initdb"),
            "--pgdata",
            str(self.data_dir),
            "--username",
            POSTGRES_SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C.UTF-8",
        ]
        result = subprocess.run(
            _as_user(self.run_as, cmd),
            cwd=self.state_dir,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if result.returncode != 0:
            raise ServiceError(
                f"initdb failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )

    def start(self) -> None:
        self._prepare_dirs()
        self.initdb()
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "fsync": "on",
            "logging_collector": "off",
            "log_line_prefix": "%m [%p] ",
            **self.settings,
        }
        cmd = [str(self.bindir / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            cmd += ["-c", f"{key}={value}"]
        self._launch(cmd, user=self.run_as)

    async def _probe(self) -> bool:
        conn = await asyncpg.connect(self.dsn("postgres"), timeout=3)
        try:
            return bool(await conn.fetchval("SELECT 1") == 1)
        finally:
            await conn.close()

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends (like a crash of the whole server).

        The backends are killed too, otherwise the next start refuses to run while they still
        hold the old shared memory.
        """
        pid = self.pid
        children: list[int] = []
        if pid is not None and self.running:
            # Freeze the postmaster first so it neither forks nor restarts children meanwhile.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
            children = _child_pids(pid)
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
        super().kill()
        deadline = time.monotonic() + 10
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.02)

    async def ensure_database(self, name: str = DEFAULT_DATABASE, owner: str | None = None) -> bool:
        """Create database ``name`` (and role ``owner``, when given) if missing.

        Returns True when the database was created by this call.
        """
        conn = await asyncpg.connect(self.dsn("postgres"), timeout=10)
        try:
            if owner is not None:
                exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", owner)
                if not exists:
                    with contextlib.suppress(asyncpg.DuplicateObjectError):
                        await conn.execute(f"CREATE ROLE {_quote_ident(owner)} LOGIN")
            if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                return False
            sql = f"CREATE DATABASE {_quote_ident(name)}"
            if owner is not None:
                sql += f" OWNER {_quote_ident(owner)}"
            try:
                await conn.execute(sql)
            except asyncpg.DuplicateDatabaseError:
                return False
            return True
        finally:
            await conn.close()


def _child_pids(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("PPid:"):
                if int(line.split()[1]) == pid:
                    children.append(int(entry.name))
                break
    return children


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (orphans may wait a while to be reaped)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_line.rpartition(")")[2].split()[0] not in ("Z", "X")


def _make_traversable(path: Path) -> None:
    """Give "others" search (x) permission on every ancestor of ``path`` that lacks it.

    The server runs as the ``postgres`` user and must reach its data folder; pytest's temporary
    folders (``/tmp/pytest-of-root``) are 0700. Only the x bit is added: nobody can list them.
    """
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


# ----------------------------------------------------------------------------------------------
# Command line: run services in the foreground until Ctrl-C / SIGTERM.


async def prepare_service(service: Service) -> None:
    """The default work done once a service answers: create the project's database."""
    if isinstance(service, PostgresServer):
        await service.ensure_database(DEFAULT_DATABASE)


async def run_foreground(
    services: Sequence[Service],
    *,
    ready_timeout: float = 120.0,
    on_ready: Callable[[Service], Awaitable[None]] = prepare_service,
) -> int:
    """Start ``services`` in order, wait for each (then ``on_ready(service)``), and supervise
    them until SIGINT/SIGTERM or until one exits; stop them in reverse order.

    Returns a process exit code (0 after a requested stop, 1 when a service failed).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started: list[Service] = []
    code = 0
    try:
        for service in services:
            t0 = time.monotonic()
            service.start()
            started.append(service)
            waiting = asyncio.ensure_future(service.wait_ready(ready_timeout))
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not waiting.done():
                waiting.cancel()
                return 130
            waiting.result()
            print(f"{service.describe()}: ready in {time.monotonic() - t0:.1f} s", flush=True)
            await on_ready(service)
        print("running; Ctrl-C to stop", flush=True)
        while not stop.is_set():
            dead = [s for s in started if not s.running]
            if dead:
                for s in dead:
                    print(f"{s.name} exited ({s.returncode})\n{s.log_tail()}", file=sys.stderr)
                code = 1
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    finally:
        for service in reversed(started):
            service.stop()
            print(f"{service.name}: stopped", flush=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return code


def default_kafka(state_dir: Path | None = None, port: int = DEFAULT_KAFKA_PORT) -> KafkaBroker:
    """The development broker: ``.local/kafka/state``, ports 9092 (client) and 9093 by default;
    the controller listens on the port after the client's."""
    return KafkaBroker(
        state_dir or local_dir() / "kafka" / "state",
        port=port,
        controller_port=port + DEFAULT_KAFKA_CONTROLLER_PORT - DEFAULT_KAFKA_PORT,
    )


def default_postgres(
    state_dir: Path | None = None, port: int = DEFAULT_POSTGRES_PORT
) -> PostgresServer:
    """The development PostgreSQL: ``.local/postgres``, port 5432 by default."""
    return PostgresServer(state_dir or local_dir() / "postgres", port=port)


SERVICES: dict[str, Callable[[Path | None], Service]] = {
    "kafka": default_kafka,
    "postgres": default_postgres,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.devstack",
        description="Run a development service in the foreground under .local/ (Ctrl-C stops it).",
    )
    parser.add_argument("service", choices=sorted(SERVICES))
    parser.add_argument("--state-dir", type=Path, default=None, help="default: under .local/")
    args = parser.parse_args(argv)
    service = SERVICES[args.service](args.state_dir)
    return asyncio.run(run_foreground([service]))


if __name__ == "__main__":
    sys.exit(main())
