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
from tests.integration.helpers import eventually
from tests.integration.processes import Load, ServiceProcess, drive_load

# Longer than a leader's failover (the dead node's session expires after 3 s, then the
# controller moves leadership): a call waits through it instead of spooling.
PUBLISH_TIMEOUT_S = 8.0
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

    async def spool_drained(self, timeout: float) -> bool:
        async def depth() -> int:
            return int(await self.metric(SPOOL_DEPTH))

        return await eventually(depth, 0, timeout=timeout) == 0


@pytest.fixture(scope="module")
async def replicated(
    cluster: KafkaCluster,
    postgres: PostgresServer,
    model_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Replicated]:
    name = f"r{uuid.uuid4().hex[:12]}"
    await cluster.create_topic(name, partitions=3)
    await cluster.create_topic(name + DEAD_LETTER_SUFFIX, partitions=3)
    await postgres.ensure_database(name)
    conn = await asyncpg.connect(postgres.dsn(name))
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    logs = tmp_path_factory.mktemp("replicated-services")
    address, health_port = f"127.0.0.1:{free_port()}", free_port()
    shared = {
        "STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
        "STUDENTPERF_KAFKA_TOPIC": name,
        "STUDENTPERF_DATABASE_URL": postgres.dsn(name),
    }
    inference = ServiceProcess(
        "inference_service",
        {
            **shared,
            "STUDENTPERF_LISTEN_ADDRESS": address,
            "STUDENTPERF_MODEL_PATH": str(model_path),
            "STUDENTPERF_SPOOL_DIR": str(logs / "spool"),
            "STUDENTPERF_PUBLISH_TIMEOUT_S": str(PUBLISH_TIMEOUT_S),
            "STUDENTPERF_INFERENCE_HEALTH_PORT": str(health_port),
        },
        logs / "inference.log",
    )
    recorder = ServiceProcess(
        "recorder_service",
        {**shared, "STUDENTPERF_BATCH_MAX_WAIT_MS": "50"},
        logs / "recorder.log",
    )
    stack = Replicated(
        cluster,
        name,
        postgres.dsn(name),
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
    stack: Replicated, fault: Callable[[], Awaitable[None]], *, before_s: float = 2.0
) -> Load:
    """Predict callers run from `before_s` before the fault until 2 s after it returned."""
    stop = asyncio.Event()
    running = asyncio.create_task(drive_load(stack.address, stop, workers=8, batch=1))
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

        stored = await eventually(stored_now, len(ids), timeout=90)
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


async def test_partition_leader_killed_under_load_nothing_spooled(replicated: Replicated) -> None:
    stack = replicated
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

    load = await under_load(stack, fault)
    spooled = await stack.spooled() - spooled_before
    found = await figures(stack, load, "load", spooled)
    report(stack, "3 nodes, partition leader SIGKILL", load, found)
    print("  " + "".join(failover))
    assert found.acknowledged > 0
    assert not load.failures, "the other replicas answer while a node is down"
    assert spooled == 0, "Kafka acknowledged every event: nothing waited in the spool"
    assert found.lost == 0
    assert found.duplicate_rows == 0
    # An idempotent producer's retries to the new leader are not written twice.
    assert found.duplicate_events == 0


async def test_two_nodes_killed_at_once_calls_spool_then_drain(replicated: Replicated) -> None:
    stack = replicated
    await stack.cluster.wait_in_sync(stack.topic)
    spooled_before = await stack.spooled()
    outage: list[str] = []

    async def fault() -> None:
        leader = (await stack.cluster.partitions(stack.topic))[0][0]
        killed = [leader, next(n for n in (1, 2, 3) if n != leader)]
        for process in [stack.cluster.node(n) for n in killed]:
            os.kill(process.pid or 0, signal.SIGKILL)
        for node_id in killed:
            stack.cluster.node(node_id).kill()  # reaps it

        async def spooling() -> bool:
            return await stack.spooled() > spooled_before

        waited = await wait_for(spooling, PUBLISH_TIMEOUT_S + 30)
        outage.append(f"nodes {killed} killed; calls spooling after {waited:.1f} s; ")
        await asyncio.sleep(3)
        outage.append(f"both back in {await stack.cluster.restart(*killed):.1f} s; ")
        drained = await stack.spool_drained(timeout=120)
        outage.append(f"spool drained: {drained}")

    load = await under_load(stack, fault)
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
