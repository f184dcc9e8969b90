"""Fault tests on a three-node Kafka cluster (replication factor 3, min.insync.replicas 2).

The promise is the one tests/integration/test_faults.py checks against a lone broker: every
prediction answered OK ends up as exactly one row. Replication adds what a lone broker cannot
give: a node may die without the service noticing (the partition's leadership moves to an
in-sync replica, calls wait a moment and are acknowledged by Kafka, nothing is spooled). Two
nodes dead leave fewer in-sync replicas than `min.insync.replicas`: nothing is acknowledged, the
calls spool, and the spool drains once the nodes are back.

Each test runs Predict callers against the real inference service and recorder processes and
prints `sent / acknowledged / spooled / stored / duplicates / lost`. Duplicates are counted
where they can appear: events per prediction id in the topic (a spool replay of an event whose
first send was acknowledged late), rows of the child tables per student, and rows whose
prediction was never acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.bench.process import HealthClient
from infra.devstack import PostgresServer, free_port
from infra.kafka_cluster import KafkaCluster
from infra.up import wait_serving
from recorder_service.settings import DEAD_LETTER_SUFFIX
from studentperf.migrate import apply_migrations
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from tests.integration.processes import Load, ServiceProcess, drive_load

# Far longer than a leader's failover (the dead node's session expires after 3 s, then the
# controller moves leadership; 3 to 5 s seen here): a call waits through it instead of spooling.
FAILOVER_PUBLISH_TIMEOUT_S = 30.0
SPOOLED = "studentperf_inference_spooled_events_total"
SPOOL_DEPTH = "studentperf_inference_spool_events"


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[KafkaCluster]:
    folder = tmp_path_factory.mktemp("replicated-kafka")
    nodes = KafkaCluster.on_free_ports(folder)
    try:
        await nodes.start_and_wait(timeout=180)
        yield nodes
    finally:
        nodes.kill()  # its data goes next: no point in a graceful stop
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Replicated:
    cluster: KafkaCluster
    topic: str
    database_url: str
    address: str
    status: HealthClient
    inference: ServiceProcess
    recorder: ServiceProcess

    async def metric(self, name: str) -> float:
        return (await asyncio.to_thread(self.status.metrics)).get(name, 0.0)

    async def spooled(self) -> int:
        return int(await self.metric(SPOOLED))

    async def spool_drained(self) -> bool:
        async def depth() -> int:
            return int(await self.metric(SPOOL_DEPTH))

        return await until_stalled(depth, 0) == 0


@pytest.fixture(scope="module")
async def target(cluster: KafkaCluster, postgres: PostgresServer) -> dict[str, str]:
    """The module's topic (and its dead-letter topic) on the cluster, and its database."""
    name = f"r{uuid.uuid4().hex[:12]}"
    await cluster.create_topic(name, partitions=3)
    await cluster.create_topic(name + DEAD_LETTER_SUFFIX, partitions=3)
    await postgres.ensure_database(name)
    conn = await asyncpg.connect(postgres.dsn(name))
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    return {
        "STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
        "STUDENTPERF_KAFKA_TOPIC": name,
        "STUDENTPERF_DATABASE_URL": postgres.dsn(name),
    }


@contextlib.asynccontextmanager
async def services(
    cluster: KafkaCluster,
    target: dict[str, str],
    model_path: Path,
    folder: Path,
    publish_timeout_s: float | None = None,
) -> AsyncIterator[Replicated]:
    """The inference service and the recorder as processes, for one test."""
    address, health_port = f"127.0.0.1:{free_port()}", free_port()
    timeout = (
        {}
        if publish_timeout_s is None
        else {"STUDENTPERF_PUBLISH_TIMEOUT_S": str(publish_timeout_s)}
    )
    inference = ServiceProcess(
        "inference_service",
        {
            **target,
            **timeout,
            "STUDENTPERF_LISTEN_ADDRESS": address,
            "STUDENTPERF_MODEL_PATH": str(model_path),
            "STUDENTPERF_SPOOL_DIR": str(folder / "spool"),
            "STUDENTPERF_INFERENCE_HEALTH_PORT": str(health_port),
        },
        folder / "inference.log",
    )
    recorder = ServiceProcess(
        "recorder_service",
        {**target, "STUDENTPERF_BATCH_MAX_WAIT_MS": "50"},
        folder / "recorder.log",
    )
    stack = Replicated(
        cluster,
        target["STUDENTPERF_KAFKA_TOPIC"],
        target["STUDENTPERF_DATABASE_URL"],
        address,
        HealthClient(health_port),
        inference,
        recorder,
    )
    recorder.start()
    inference.start()
    try:
        await wait_serving(address)
        yield stack
    finally:
        await inference.stop()
        await recorder.stop()


async def under_load(
    stack: Replicated, fault: Callable[[], Awaitable[None]], prefix: str, before_s: float = 2.0
) -> Load:
    """8 Predict callers (students `<prefix>-...`) run from `before_s` before the fault until
    2 s after it returned."""
    stop = asyncio.Event()
    running = asyncio.create_task(
        drive_load(stack.address, stop, workers=8, batch=1, prefix=prefix, call_timeout_s=60)
    )
    try:
        await asyncio.sleep(before_s)
        await fault()
        await asyncio.sleep(2)
    finally:
        stop.set()
    return await running


@dataclass
class Figures:
    sent: int
    acknowledged: int
    spooled: int
    stored: int
    lost: int
    topic_events: int
    duplicate_events: int  # events beyond the first per acknowledged id, in the topic
    duplicate_rows: int  # child rows beyond one per student, plus rows never acknowledged
    unacknowledged_rows: list[str]

    def line(self, name: str) -> str:
        return (
            f"{name}: sent {self.sent} / acknowledged {self.acknowledged} / spooled "
            f"{self.spooled} / stored {self.stored} / duplicates {self.duplicate_rows} rows, "
            f"{self.duplicate_events} events in the topic ({self.topic_events} events) / "
            f"lost {self.lost}"
        )


async def events_per_id(bootstrap_servers: str, topic: str) -> Counter[uuid.UUID]:
    """Every event in the topic, counted by prediction id."""
    # Subscribed without a group, the consumer gets every partition and reads from the start.
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        assert partitions, f"no metadata for topic {topic}"
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        total, read = sum(ends.values()), 0
        counts: Counter[uuid.UUID] = Counter()
        async with asyncio.timeout(60):
            while read < total:
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                for records in batch.values():
                    read += len(records)
                    for record in records:
                        event = PredictionEvent.FromString(record.value)
                        counts[uuid.UUID(event.prediction.prediction_id)] += 1
        return counts
    finally:
        await consumer.stop()


async def until_stalled(
    probe: Callable[[], Awaitable[int]], expected: int, stall_s: float = 30.0
) -> int:
    """Polls `probe` until it returns `expected`, or until its value has not changed for
    `stall_s` seconds: how fast rows land or the spool drains depends on the machine; progress
    stopping does not."""
    last, progressed = -1, time.monotonic()
    while True:
        value = await probe()
        if value == expected:
            return value
        if value != last:
            last, progressed = value, time.monotonic()
        elif time.monotonic() - progressed > stall_s:
            return value
        await asyncio.sleep(0.25)


async def figures(stack: Replicated, load: Load, prefix: str, spooled: int) -> Figures:
    """Waits (bounded) until every acknowledged prediction is stored, then counts."""
    ids = list(load.acknowledged)
    conn = await asyncpg.connect(stack.database_url)
    try:

        async def stored_now() -> int:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM predictions WHERE prediction_id = ANY($1)", ids
                )
            )

        stored = await until_stalled(stored_now, len(ids))
        # Every caller's student is new, so each has exactly one profile and one academic
        # record; a redelivered event must not add a second of either.
        extra_children = await conn.fetchval(
            """
            SELECT coalesce(sum(n - 1), 0) FROM (
                SELECT count(*) AS n FROM academic_records a
                JOIN predictions p USING (student_id)
                WHERE p.prediction_id = ANY($1) GROUP BY a.student_id
                UNION ALL
                SELECT count(*) FROM student_profiles s
                JOIN predictions p USING (student_id)
                WHERE p.prediction_id = ANY($1) GROUP BY s.student_id
            ) per_student
            """,
            ids,
        )
        strays = await conn.fetch(
            "SELECT prediction_id::text FROM predictions WHERE NOT prediction_id = ANY($1)"
            " AND student_id LIKE $2",
            ids,
            f"{prefix}-%",
        )
    finally:
        await conn.close()
    events = await events_per_id(stack.cluster.bootstrap_servers, stack.topic)
    mine = {i: events[i] for i in ids}
    return Figures(
        sent=load.sent,
        acknowledged=len(ids),
        spooled=spooled,
        stored=stored,
        lost=len(ids) - stored,
        topic_events=sum(mine.values()),
        duplicate_events=sum(n - 1 for n in mine.values() if n > 1),
        duplicate_rows=int(extra_children) + len(strays),
        unacknowledged_rows=[r[0] for r in strays],
    )


def report(stack: Replicated, name: str, load: Load, found: Figures) -> None:
    print(f"\n{found.line(name)}; refused {dict(load.failures) or 0}")
    print(
        f"  slowest call {load.slowest_s:.2f} s; rows never acknowledged: "
        f"{len(found.unacknowledged_rows)} {found.unacknowledged_rows[:5]}"
    )
    if found.lost or found.duplicate_rows:
        print("--- inference log\n" + stack.inference.log_tail())
        print("--- recorder log\n" + stack.recorder.log_tail())


async def wait_for(probe: Callable[[], Awaitable[bool]], timeout: float) -> float:
    """Seconds until `probe` is true; fails the test after `timeout` seconds."""
    started = time.monotonic()
    while not await probe():
        assert time.monotonic() - started < timeout, f"not so after {timeout} s"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def test_partition_leader_killed_under_load_nothing_spooled(
    cluster: KafkaCluster, target: dict[str, str], model_path: Path, tmp_path: Path
) -> None:
    async with services(cluster, target, model_path, tmp_path, FAILOVER_PUBLISH_TIMEOUT_S) as stack:
        spooled_before = await stack.spooled()
        failover: list[str] = []

        async def fault() -> None:
            leader, in_sync = (await stack.cluster.partitions(stack.topic))[0]
            assert len(in_sync) == 3
            stack.cluster.node(leader).kill()

            async def moved() -> bool:
                return (await stack.cluster.partitions(stack.topic))[0][0] not in (leader, -1)

            failover.append(f"node {leader} (leader of partition 0) killed; ")
            failover.append(f"a new leader after {await wait_for(moved, 60):.1f} s; ")
            await asyncio.sleep(5)  # calls go on through the other two replicas
            failover.append(f"back and registered in {await stack.cluster.restart(leader):.1f} s")

        load = await under_load(stack, fault, "leader")
        spooled = await stack.spooled() - spooled_before
        found = await figures(stack, load, "leader", spooled)
        report(stack, "3 nodes, partition leader SIGKILL", load, found)
        print("  " + "".join(failover))
        assert found.acknowledged > 0
        assert not load.failures, "the other replicas answer while a node is down"
        assert spooled == 0, "Kafka acknowledged every event: nothing waited in the spool"
        assert found.lost == 0
        assert found.duplicate_rows == 0
        # An idempotent producer's retries to the new leader are not written twice.
        assert found.duplicate_events == 0


async def test_two_nodes_killed_at_once_calls_spool_then_drain(
    cluster: KafkaCluster, target: dict[str, str], model_path: Path, tmp_path: Path
) -> None:
    down = [node.node_id for node in cluster.nodes if not node.running]
    if down:  # the previous test failed before it brought its node back
        await cluster.restart(*down)
    await cluster.wait_in_sync(target["STUDENTPERF_KAFKA_TOPIC"])
    # The service's default publish timeout: how soon calls spool is what it says.
    async with services(cluster, target, model_path, tmp_path) as stack:
        spooled_before = await stack.spooled()
        outage: list[str] = []

        async def fault() -> None:
            leader = (await stack.cluster.partitions(stack.topic))[0][0]
            killed = [leader, next(n for n in (1, 2, 3) if n != leader)]
            pids = [stack.cluster.node(n).pid for n in killed]
            for pid in pids:  # both signals first, so neither node outlives the other
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
            for node_id in killed:
                stack.cluster.node(node_id).kill()  # reaps it

            async def spooling() -> bool:
                return await stack.spooled() > spooled_before

            waited = await wait_for(spooling, 60)
            outage.append(f"nodes {killed} killed; calls spooling after {waited:.1f} s; ")
            await asyncio.sleep(3)
            outage.append(f"both back in {await stack.cluster.restart(*killed):.1f} s; ")
            drained = await stack.spool_drained()
            outage.append(f"spool drained: {drained}")

        load = await under_load(stack, fault, "outage")
        spooled = await stack.spooled() - spooled_before
        found = await figures(stack, load, "outage", spooled)
        report(stack, "3 nodes, 2 SIGKILLed at once, back after the spool filled", load, found)
        print("  " + "".join(outage))
        assert found.acknowledged > 0
        assert not load.failures, "the spool answers while Kafka cannot acknowledge"
        assert spooled > 0, "with one in-sync replica left, Kafka acknowledges nothing"
        assert await stack.metric(SPOOL_DEPTH) == 0
        assert found.lost == 0
        assert found.duplicate_rows == 0
