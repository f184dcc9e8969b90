"""Fault tests on a three-node Kafka cluster (replication factor 3, min.insync.replicas 2).

The promise is the one tests/integration/test_faults.py checks against a lone broker: every
prediction answered OK ends up as exactly one row. Replication adds what a lone broker cannot
give: a node may die without the service noticing (the partition's leadership moves to an
in-sync replica, calls wait a moment and are acknowledged by Kafka, nothing is spooled). Two
nodes dead leave fewer in-sync replicas than `min.insync.replicas`: nothing is acknowledged, the
calls spool, and the spool drains once the nodes are back.

Each test runs Predict callers against the real inference service and recorder processes and
prints `sent / acknowledged / spooled / stored / duplicates / lost`, counted as in
tests/integration/test_faults.py (processes.tally): events per prediction id in the topic (a
spool replay of an event whose first send was acknowledged late), rows of the child tables
repeating one of the same student, and rows of predictions no caller was answered for beyond
the calls that failed after publishing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.devstack import PostgresServer
from infra.kafka_cluster import KafkaCluster
from recorder_service.settings import DEAD_LETTER_SUFFIX
from tests.integration.conftest import migrated_database
from tests.integration.processes import Load, Tally, drive_load, tally
from tests.integration.service_stack import ServicePair

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
class Replicated(ServicePair):
    cluster: KafkaCluster
    topic: str
    database_url: str

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
    name = await migrated_database(postgres, "r")
    await cluster.create_topic(name, partitions=3)
    await cluster.create_topic(name + DEAD_LETTER_SUFFIX, partitions=3)
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
    timeout = (
        {}
        if publish_timeout_s is None
        else {"STUDENTPERF_PUBLISH_TIMEOUT_S": str(publish_timeout_s)}
    )
    pair = ServicePair.configure(target, model_path, folder, **timeout)
    stack = Replicated(
        pair.address,
        pair.status,
        pair.inference,
        pair.recorder,
        cluster,
        target["STUDENTPERF_KAFKA_TOPIC"],
        target["STUDENTPERF_DATABASE_URL"],
    )
    try:
        await stack.start()
        yield stack
    finally:
        await stack.stop()


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


async def figures(stack: Replicated, load: Load, spooled: int) -> Tally:
    """Waits (bounded) until every acknowledged prediction is stored, then counts."""
    return await tally(
        stack.database_url, stack.cluster.bootstrap_servers, stack.topic, load, spooled=spooled
    )


def report(stack: Replicated, name: str, load: Load, found: Tally) -> None:
    print(f"\n{found.line(name)}; refused {dict(load.failures) or 0}")
    print(f"  slowest call {load.slowest_s:.2f} s")
    if found.problems():
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
        found = await figures(stack, load, spooled)
        report(stack, "3 nodes, partition leader SIGKILL", load, found)
        print("  " + "".join(failover))
        assert found.problems() == []
        assert not load.failures, "the other replicas answer while a node is down"
        assert spooled == 0, "Kafka acknowledged every event: nothing waited in the spool"
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
        found = await figures(stack, load, spooled)
        report(stack, "3 nodes, 2 SIGKILLed at once, back after the spool filled", load, found)
        print("  " + "".join(outage))
        assert found.problems() == []
        assert not load.failures, "the spool answers while Kafka cannot acknowledge"
        assert spooled > 0, "with one in-sync replica left, Kafka acknowledges nothing"
        assert await stack.metric(SPOOL_DEPTH) == 0
        # A second copy comes only from replaying a spooled event whose first send landed.
        assert found.duplicate_events <= spooled
