"""A real Apache Kafka broker as a local child process: a single KRaft node (broker and
controller in one JVM) from the jars ``infra/kafka/pom.xml`` resolves into ``.local/kafka/libs``;
``infra/kafka_cluster.py`` runs three of them as one replicated cluster. Also: creating a topic
and waiting until every partition has a leader, for a broker or a cluster (``KafkaEndpoint``).

Why this module is a little over 300 lines: one broker's life (configuration, start, readiness,
stop) is one class, and the topic helpers beside it wait on the same broker.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from infra.devstack.service import (
    DEFAULT_KAFKA_CONTROLLER_PORT,
    DEFAULT_KAFKA_PORT,
    LOCALHOST,
    Service,
    ServiceError,
    local_dir,
    port_open,
    repo_root,
)


def kafka_libs_dir() -> Path:
    """Where ``infra/setup.sh`` puts the broker jars."""
    return local_dir() / "kafka" / "libs"


def kafka_log4j_config() -> Path:
    return repo_root() / "infra" / "kafka" / "log4j2.yaml"


def new_cluster_id() -> str:
    """A Kafka cluster id, as ``kafka-storage random-uuid`` makes (URL-safe base64, 16 bytes)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class KafkaEndpoint(ABC):
    """What a lone broker and a cluster of them (``infra.kafka_cluster.KafkaCluster``) share:
    the address clients bootstrap from, an admin client there, and topic creation with their
    replication factor, ``min.insync.replicas`` and default partition count."""

    num_partitions: int
    replication_factor: int
    min_insync_replicas: int

    @property
    @abstractmethod
    def bootstrap_servers(self) -> str: ...

    def admin_client(self, request_timeout_ms: int = 10_000) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers, request_timeout_ms=request_timeout_ms
        )

    async def create_topic(
        self,
        name: str,
        partitions: int | None = None,
        *,
        configs: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> bool:
        """Create a topic with this replication factor and ``min.insync.replicas``; no-op when
        it already exists.

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


class KafkaBroker(Service, KafkaEndpoint):
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
        lines = ["# Written by infra/devstack/kafka.py on every start; edits are overwritten."]
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
        response = await _create_when_a_controller_is_known(admin, topic, timeout)
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


async def _create_when_a_controller_is_known(
    admin: AIOKafkaAdminClient, topic: NewTopic, timeout: float
) -> Any:
    """admin.create_topics, tried again while the metadata names no controller: a broker just
    (re)started answers metadata before it lists itself, and aiokafka then fails on the missing
    controller with an AttributeError rather than a Kafka error (CI, test_faults)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await admin.create_topics([topic], timeout_ms=int(timeout * 1000))
        except AttributeError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.2)


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
