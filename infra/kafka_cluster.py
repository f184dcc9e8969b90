"""Three KRaft Kafka nodes on loopback: a replicated cluster for the dev stack and fault tests.

Each node is an ``infra.devstack.KafkaBroker`` (broker and controller in one JVM) with its own
folder and ports; all three are voters of one controller quorum and are formatted with the same
cluster id, kept in ``cluster.id`` beside their folders so a restart reuses their data. Topics,
the consumer offsets and the other internal topics get replication factor 3 and
``min.insync.replicas`` 2: an acknowledged record is on at least two nodes, one node may die
without stopping writes, two stop them (the producer gets no acknowledgement).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from aiokafka.errors import KafkaError

from infra.devstack import (
    DEFAULT_KAFKA_CONTROLLER_PORT,
    DEFAULT_KAFKA_PORT,
    LOCALHOST,
    KafkaBroker,
    KafkaEndpoint,
    ServiceError,
    free_port,
    local_dir,
    new_cluster_id,
)

NODES = 3
REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2
# Three JVMs share the machine's cores and memory: each gets less heap than a lone broker.
NODE_HEAP = "384m"


class KafkaCluster(KafkaEndpoint):
    """Three KRaft nodes, started and stopped together; each can be killed on its own."""

    name = "kafka cluster"

    def __init__(
        self,
        state_dir: Path | str,
        ports: Sequence[tuple[int, int]],
        *,
        host: str = LOCALHOST,
        num_partitions: int = 3,
        heap: str = NODE_HEAP,
        extra_properties: Mapping[str, str] | None = None,
    ) -> None:
        """``ports``: (client port, controller port) of each node, node ids counting from 1."""
        if len(ports) < REPLICATION_FACTOR:
            raise ValueError(f"a replicated cluster needs {REPLICATION_FACTOR} nodes")
        self.state_dir = Path(state_dir).resolve()
        self.host = host
        self.num_partitions = num_partitions
        self.replication_factor = REPLICATION_FACTOR
        self.min_insync_replicas = MIN_INSYNC_REPLICAS
        voters = ",".join(
            f"{node_id}@{host}:{controller}" for node_id, (_, controller) in enumerate(ports, 1)
        )
        self.nodes = [
            KafkaBroker(
                self.state_dir / f"node-{node_id}",
                host=host,
                port=port,
                controller_port=controller,
                num_partitions=num_partitions,
                heap=heap,
                extra_properties=extra_properties,
                node_id=node_id,
                quorum_voters=voters,
                replication_factor=REPLICATION_FACTOR,
                min_insync_replicas=MIN_INSYNC_REPLICAS,
            )
            for node_id, (port, controller) in enumerate(ports, 1)
        ]

    @classmethod
    def on_free_ports(cls, state_dir: Path | str, nodes: int = NODES) -> KafkaCluster:
        """A cluster on ports free right now (for tests)."""
        return cls(state_dir, [(free_port(), free_port()) for _ in range(nodes)])

    @property
    def bootstrap_servers(self) -> str:
        """Every node, so a client can start while any one of them is down."""
        return ",".join(node.bootstrap_servers for node in self.nodes)

    @property
    def running(self) -> bool:
        return all(node.running for node in self.nodes)

    def node(self, node_id: int) -> KafkaBroker:
        return self.nodes[node_id - 1]

    def describe(self) -> str:
        return f"kafka cluster of {len(self.nodes)} nodes on {self.bootstrap_servers}"

    def _cluster_id(self) -> str:
        """The id every node is formatted with, made once and kept with the nodes' data."""
        path = self.state_dir / "cluster.id"
        if not path.exists():
            self.state_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(new_cluster_id() + "\n")
        return path.read_text().strip()

    def start(self) -> None:
        """Launches every node; they elect a controller once a majority runs."""
        cluster_id = self._cluster_id()
        for node in self.nodes:
            node.cluster_id = cluster_id
            if not node.running:
                node.start()

    async def wait_ready(self, timeout: float = 120.0) -> float:
        """Waits until every node is registered with the controller; returns the seconds."""
        started = time.monotonic()
        await asyncio.gather(*(node.wait_ready(timeout) for node in self.nodes))
        await self.wait_brokers(len(self.nodes), timeout - (time.monotonic() - started))
        return time.monotonic() - started

    async def start_and_wait(self, timeout: float = 120.0) -> float:
        self.start()
        try:
            return await self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise

    async def restart(self, *node_ids: int, timeout: float = 120.0) -> float:
        """Starts the given (stopped or killed) nodes again and waits until all are back."""
        started = time.monotonic()
        for node_id in node_ids:
            self.node(node_id).start()
        await asyncio.gather(*(self.node(n).wait_ready(timeout) for n in node_ids))
        await self.wait_brokers(len(self.nodes), timeout - (time.monotonic() - started))
        return time.monotonic() - started

    def stop(self, timeout: float = 30.0) -> None:
        """Stops every node at once: one by one, the last ones would wait for a quorum that
        has already gone."""
        threads = [threading.Thread(target=node.stop, args=(timeout,)) for node in self.nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    async def wait_brokers(self, count: int, timeout: float) -> None:
        """Waits until the controller lists ``count`` registered brokers."""
        deadline = time.monotonic() + max(timeout, 1.0)
        last = "no answer"
        while True:
            admin = self.admin_client(request_timeout_ms=3_000)
            try:
                await admin.start()
                brokers = (await admin.describe_cluster()).get("brokers") or []
                if len(brokers) >= count:
                    return
                last = f"{len(brokers)} broker(s) registered"
            except Exception as exc:  # a node still starting or just killed
                last = f"{type(exc).__name__}: {exc}"
            finally:
                await admin.close()
            if time.monotonic() > deadline:
                raise ServiceError(f"{self.describe()}: not {count} brokers ({last})")
            await asyncio.sleep(0.3)

    async def partitions(
        self, topic: str, timeout: float = 30.0
    ) -> dict[int, tuple[int, list[int]]]:
        """partition -> (leader node id, in-sync replicas), as the metadata says now."""
        deadline = time.monotonic() + timeout
        while True:
            admin = self.admin_client(request_timeout_ms=3_000)
            try:
                await admin.start()
                described = await admin.describe_topics([topic])
                break
            except KafkaError:
                # The admin client asks a node at random, which may be one just killed.
                if time.monotonic() > deadline:
                    raise
            finally:
                await admin.close()
            await asyncio.sleep(0.1)
        return {
            p["partition"]: (p["leader"], sorted(p["isr"]))
            for t in described
            if t["topic"] == topic
            for p in t["partitions"]
        }

    async def wait_in_sync(self, topic: str, timeout: float = 60.0) -> None:
        """Waits until every partition of ``topic`` has all nodes in its in-sync replicas."""
        deadline = time.monotonic() + timeout
        while True:
            found = await self.partitions(topic)
            if found and all(len(isr) == len(self.nodes) for _, isr in found.values()):
                return
            if time.monotonic() > deadline:
                raise ServiceError(f"topic {topic!r} not fully in sync: {found}")
            await asyncio.sleep(0.3)


def default_kafka_cluster(state_dir: Path | None = None) -> KafkaCluster:
    """The development cluster: ``.local/kafka/cluster``; node 1 on the lone broker's ports
    (9092, 9093), nodes 2 and 3 on the next ones (9094-9097)."""
    base, controller = DEFAULT_KAFKA_PORT, DEFAULT_KAFKA_CONTROLLER_PORT
    return KafkaCluster(
        state_dir or local_dir() / "kafka" / "cluster",
        [(base, controller), (base + 2, controller + 2), (base + 4, controller + 4)],
    )
