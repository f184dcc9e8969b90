"""A broker that stops answering (SIGSTOP) for longer than the publish timeout, again and again.

Calls the broker does not acknowledge in time are spooled and answered; their sends are not
cancelled (aiokafka cannot take a record back), so once the broker wakes up it stores them, and
the replay sends them again: the topic holds extra copies, the recorder writes each prediction
once. This module checks that this stays so under repeated and longer stalls with concurrent
callers: every acknowledged prediction stored, the spool drained, the extra copies bounded.
It has a broker of its own: pausing the session's one would stall every other module.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from infra.devstack import KafkaBroker, PostgresServer
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from tests.integration.conftest import running_kafka
from tests.integration.helpers import topic_size
from tests.integration.processes import Load, drive_load
from tests.integration.service_stack import ServiceStack

PUBLISH_TIMEOUT_S = 1.0
# Pauses of the broker, each longer than the publish timeout, the last one many times over,
# with the gap between them too short for the spool to have drained.
STALLS_S = (3.0, 6.0, 12.0)
GAP_S = 2.0
CALLERS = 16


@pytest.fixture(scope="module")
async def stall_kafka(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[KafkaBroker]:
    async for broker in running_kafka(tmp_path_factory.mktemp("stall-kafka")):
        yield broker


async def copies_per_prediction(bootstrap: str, topic: str) -> Counter[uuid.UUID]:
    """How many times each prediction's event is in the topic, reading all of it."""
    total = await topic_size(bootstrap, topic)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    copies: Counter[uuid.UUID] = Counter()
    try:
        async with asyncio.timeout(60):
            while sum(copies.values()) < total:
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                for records in batch.values():
                    for record in records:
                        event = PredictionEvent.FromString(record.value)
                        copies[uuid.UUID(event.event_id)] += 1
    finally:
        await consumer.stop()
    return copies


async def stall(broker: KafkaBroker, seconds: float) -> None:
    pid = broker.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


async def test_repeated_broker_stalls_lose_nothing_and_keep_copies_bounded(
    stall_kafka: KafkaBroker, postgres: PostgresServer, model_path: Path, tmp_path: Path
) -> None:
    stack = await ServiceStack.create(
        stall_kafka,
        postgres,
        model_path,
        tmp_path,
        "stall",
        STUDENTPERF_PUBLISH_TIMEOUT_S=str(PUBLISH_TIMEOUT_S),
    )
    try:
        await stack.start()
        stop = asyncio.Event()
        load_task = asyncio.create_task(
            drive_load(stack.address, stop, workers=CALLERS, batch=1, prefix="stall")
        )
        try:
            await asyncio.sleep(GAP_S)
            for seconds in STALLS_S:
                await stall(stall_kafka, seconds)
                await asyncio.sleep(GAP_S)
        finally:
            stop.set()
            load: Load = await load_task

        async with asyncio.timeout(120):
            while await stack.spool_events():  # noqa: ASYNC110 (the service announces nothing)
                await asyncio.sleep(0.25)
        spooled = await stack.spooled()
        acknowledged = load.acknowledged
        conn = await asyncpg.connect(stack.database_url)
        try:
            async with asyncio.timeout(120):
                while True:
                    stored = int(
                        await conn.fetchval(
                            "SELECT count(*) FROM predictions WHERE prediction_id = ANY($1)",
                            list(acknowledged),
                        )
                    )
                    if stored == len(acknowledged):
                        break
                    await asyncio.sleep(0.25)
        finally:
            await conn.close()
        copies = await copies_per_prediction(stall_kafka.bootstrap_servers, stack.topic)
    finally:
        await stack.close()

    in_topic = sum(copies[i] for i in acknowledged)
    extra = in_topic - len(acknowledged)
    most = max((copies[i] for i in acknowledged), default=0)
    lost = len(acknowledged) - stored
    print(
        f"\nbroker stalls {STALLS_S} s (publish timeout {PUBLISH_TIMEOUT_S:g} s, "
        f"{CALLERS} callers): sent {load.sent} / acknowledged {len(acknowledged)} / "
        f"spooled {spooled} / topic copies {in_topic} (extra {extra}, most of one "
        f"prediction {most}) / stored {stored} / lost {lost}; refused {dict(load.failures)}"
    )
    assert spooled > 0, "no stall outlasted the publish timeout: nothing was tested"
    assert lost == 0
    assert all(copies[i] >= 1 for i in acknowledged)
    # A spooled event is in the topic at most twice: the send that timed out, which the broker
    # stores when it wakes, and the replay's.
    assert most <= 2
    assert extra <= spooled
