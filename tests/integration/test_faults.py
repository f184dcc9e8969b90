"""Fault tests: real broker, real database, real service processes, real signals.

The promise under test: every prediction answered OK ends up as exactly one row. Each test
runs load through the inference service while something fails, lets the system recover, and
prints `sent / acknowledged / stored / duplicates / lost`; lost and duplicates must be 0.
This module has a broker and a database server of its own, so killing them disturbs no other
test.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from infra.devstack import KafkaBroker, PostgresServer, free_port
from infra.up import wait_serving
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from tests.integration.conftest import (
    fresh_topic_and_database,
    running_kafka,
    running_postgres,
)
from tests.integration.helpers import eventually, topic_size
from tests.integration.processes import (
    Load,
    ServiceProcess,
    Tally,
    drive_load,
    tally,
)


@pytest.fixture(scope="module")
async def fault_kafka(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[KafkaBroker]:
    async for broker in running_kafka(tmp_path_factory.mktemp("fault-kafka")):
        yield broker


@pytest.fixture(scope="module")
async def fault_postgres(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[PostgresServer]:
    async for server in running_postgres(tmp_path_factory.mktemp("fault-pg")):
        yield server


@dataclass
class Faults:
    kafka: KafkaBroker
    postgres: PostgresServer
    topic: str
    database_url: str
    address: str
    inference: ServiceProcess
    recorder: ServiceProcess

    async def start_services(self) -> None:
        self.recorder.start()
        self.inference.start()
        await wait_serving(self.address)

    async def stop_services(self) -> None:
        await self.inference.stop()
        await self.recorder.stop()

    async def kafka_back(self) -> None:
        self.kafka.start()
        await self.kafka.wait_ready(120)

    async def postgres_back(self) -> None:
        self.postgres.start()
        await self.postgres.wait_ready(60)

    def report(self, name: str, load: Load, counts: Tally) -> None:
        print(f"\n{counts.line(name)}; refused {dict(load.failures) or 0}")
        print(f"  slowest call {load.slowest_s:.2f} s; refusals: {sorted(load.failure_details)}")
        if counts.lost or counts.duplicates:
            print("--- inference log\n" + self.inference.log_tail())
            print("--- recorder log\n" + self.recorder.log_tail())


@pytest.fixture
async def faults(
    fault_kafka: KafkaBroker,
    fault_postgres: PostgresServer,
    model_path: Path,
    tmp_path: Path,
) -> AsyncIterator[Faults]:
    name = await fresh_topic_and_database(fault_kafka, fault_postgres, "f")
    address = f"127.0.0.1:{free_port()}"
    shared = {
        "STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS": fault_kafka.bootstrap_servers,
        "STUDENTPERF_KAFKA_TOPIC": name,
        "STUDENTPERF_DATABASE_URL": fault_postgres.dsn(name),
    }
    inference = ServiceProcess(
        "inference_service",
        {
            **shared,
            "STUDENTPERF_LISTEN_ADDRESS": address,
            "STUDENTPERF_MODEL_PATH": str(model_path),
            "STUDENTPERF_SPOOL_DIR": str(tmp_path / "spool"),
            "STUDENTPERF_PUBLISH_TIMEOUT_S": "1",
        },
        tmp_path / "inference.log",
    )
    recorder = ServiceProcess(
        "recorder_service",
        {**shared, "STUDENTPERF_BATCH_MAX_WAIT_MS": "50"},
        tmp_path / "recorder.log",
    )
    stack = Faults(
        fault_kafka, fault_postgres, name, fault_postgres.dsn(name), address, inference, recorder
    )
    yield stack
    await stack.stop_services()
    if not fault_kafka.running:
        await stack.kafka_back()
    if not fault_postgres.running:
        await stack.postgres_back()


async def under_load(
    faults: Faults, fault: Callable[[], object], *, before_s: float = 2.0, after_s: float = 3.0
) -> Load:
    """Runs load, applies `fault` (awaited if it is a coroutine) midway, returns the load."""
    stop = asyncio.Event()
    load_task = asyncio.create_task(drive_load(faults.address, stop))
    await asyncio.sleep(before_s)
    outcome = fault()
    if asyncio.iscoroutine(outcome):
        await outcome
    await asyncio.sleep(after_s)
    stop.set()
    return await load_task


def assert_promise_kept(counts: Tally, load: Load) -> None:
    assert counts.acknowledged > 0
    assert counts.lost == 0
    assert counts.duplicates == 0


async def test_kafka_killed_under_load_and_back_10_s_later(faults: Faults) -> None:
    await faults.start_services()

    async def fault() -> None:
        faults.kafka.kill()
        await asyncio.sleep(10)
        await faults.kafka_back()

    load = await under_load(faults, fault)
    counts = await tally(faults.database_url, load)
    faults.report("kafka SIGKILL, 10 s down", load, counts)
    assert_promise_kept(counts, load)
    assert not load.failures, "the spool answers while Kafka is away"


async def test_kafka_down_when_the_service_starts(faults: Faults) -> None:
    faults.kafka.stop()
    await faults.start_services()  # serves without Kafka: the spool takes the events

    async def fault() -> None:
        await faults.kafka_back()

    load = await under_load(faults, fault, before_s=5)
    counts = await tally(faults.database_url, load)
    faults.report("kafka down at start, up after 5 s", load, counts)
    assert_promise_kept(counts, load)
    assert not load.failures


async def test_postgres_stopped_10_s_under_load(faults: Faults) -> None:
    await faults.start_services()

    async def fault() -> None:
        faults.postgres.stop()
        await asyncio.sleep(10)
        await faults.postgres_back()

    load = await under_load(faults, fault)
    counts = await tally(faults.database_url, load)
    faults.report("postgres stopped 10 s", load, counts)
    assert_promise_kept(counts, load)
    assert not load.failures, "predictions do not depend on the database"


async def test_recorder_killed_mid_batch_and_restarted(faults: Faults) -> None:
    await faults.start_services()

    async def fault() -> None:
        await faults.recorder.kill()
        await asyncio.sleep(2)
        faults.recorder.start()

    load = await under_load(faults, fault)
    counts = await tally(faults.database_url, load)
    faults.report("recorder SIGKILL", load, counts)
    assert_promise_kept(counts, load)


async def test_inference_killed_with_events_in_its_spool(faults: Faults) -> None:
    await faults.start_services()
    faults.kafka.stop()  # from here on, events wait in the spool

    async def fault() -> None:
        await faults.inference.kill()

    load = await under_load(faults, fault, before_s=3, after_s=0.5)
    spooled = sorted((faults.inference.log_path.parent / "spool").glob("*.spool"))
    assert spooled, "the killed process left its spool behind"
    await faults.kafka_back()
    faults.inference.start()  # replays what the killed process had spooled
    await wait_serving(faults.address)
    counts = await tally(faults.database_url, load)
    faults.report("inference SIGKILL with a spool", load, counts)
    assert_promise_kept(counts, load)


async def test_inference_sigterm_under_load_fails_no_call_in_flight(faults: Faults) -> None:
    await faults.start_services()

    async def fault() -> None:
        faults.inference.signal(signal.SIGTERM)
        assert await faults.inference.wait(30) == 0

    load = await under_load(faults, fault, after_s=1)
    counts = await tally(faults.database_url, load)
    faults.report("inference SIGTERM", load, counts)
    assert_promise_kept(counts, load)
    # Calls that arrive once shutdown began are refused: UNAVAILABLE, or CANCELLED for those
    # the transport had taken but no handler had started yet (grpc/grpc#41785). The server
    # says whether any call it had started was cut off.
    assert set(load.failures) <= {"UNAVAILABLE", "CANCELLED"}
    assert "stopped: 0 call(s) cut off in flight" in faults.inference.log_tail()


async def copy_topic_records(bootstrap: str, topic: str, limit: int) -> list[tuple[bytes, bytes]]:
    """Up to `limit` (key, value) pairs already in `topic`, read from its beginning."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        found: list[tuple[bytes, bytes]] = []
        async with asyncio.timeout(30):
            while len(found) < limit:
                batch = await consumer.getmany(timeout_ms=500, max_records=limit)
                found += [(r.key, r.value) for records in batch.values() for r in records]
        return found[:limit]
    finally:
        await consumer.stop()


async def test_poison_and_duplicate_records_injected_under_load(faults: Faults) -> None:
    await faults.start_services()
    bootstrap = faults.kafka.bootstrap_servers
    poison = [b"\x00not protobuf", b"", PredictionEvent(schema_version=99).SerializeToString()]

    async def fault() -> None:
        # Events the service already published, produced again (a producer retry after a lost
        # acknowledgement looks just like this), with poison in between.
        again = await copy_topic_records(bootstrap, faults.topic, 500)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for index, (key, value) in enumerate(again):
                await producer.send(faults.topic, key=key, value=value)
                if index % 200 == 0:
                    await producer.send(faults.topic, key=key, value=poison[index // 200])
            await producer.flush()
        finally:
            await producer.stop()

    load = await under_load(faults, fault)
    counts = await tally(faults.database_url, load)
    dead_letters = f"{faults.topic}.dead-letter"
    dead = await eventually(lambda: topic_size(bootstrap, dead_letters), 3, timeout=30)
    faults.report(
        f"500 duplicates and 3 poison records injected; {dead} dead-lettered", load, counts
    )
    assert_promise_kept(counts, load)
    assert dead == 3
    async with asyncpg.create_pool(faults.database_url, min_size=1, max_size=1) as db:
        rows = await db.fetchval("SELECT count(*) FROM predictions")
    assert rows == counts.acknowledged, "no row but the acknowledged predictions' own"
