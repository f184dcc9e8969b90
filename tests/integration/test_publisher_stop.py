"""KafkaPublisher.stop against a paused real broker: it keeps to its timeout (the open
batches' flush and the producer's own share one bound), and leaves nothing of a producer
running, its own or one it replaced: aiokafka's stop, cut short, left the sender retrying the
unsent batches for ever (once the broker was gone for good, later tests logged its failed
connections every few ms), and ending it must itself log no error."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiokafka.errors import KafkaError

from inference_service.core import PublishUnavailable
from inference_service.publisher import KafkaPublisher
from infra.devstack import KafkaBroker
from studentperf.envelope import KafkaRecord

# Long enough for the producers dropped in the background to end (their requests in flight
# back off about a second first).
ENDED_WITHIN_S = 6.0


@dataclass
class Started:
    publisher: KafkaPublisher
    others: set[asyncio.Task[object]]  # aiokafka's tasks of other tests' clients, if any


@pytest.fixture
async def started(own_kafka: KafkaBroker) -> AsyncIterator[Started]:
    """A connected publisher whose broker has acknowledged once."""
    others = aiokafka_tasks()
    topic = f"stop-{uuid.uuid4().hex[:8]}"
    await own_kafka.create_topic(topic, partitions=3)
    publisher = KafkaPublisher(own_kafka.bootstrap_servers, topic, publish_timeout_s=1.0)
    await publisher.connect(give_up_after_s=30)
    for _ in range(20):  # a new topic's leader may take a moment
        try:
            await publisher.publish([KafkaRecord(key=b"s", value=b"warm", headers=[])])
            break
        except PublishUnavailable:
            await asyncio.sleep(0.5)
    else:
        pytest.fail("the broker never acknowledged")
    yield Started(publisher, others)


def aiokafka_tasks() -> set[asyncio.Task[object]]:
    """The running tasks of aiokafka's own (a producer's sender, its client's metadata sync)."""
    return {
        task
        for task in asyncio.all_tasks()
        if not task.done()
        and "aiokafka" in getattr(getattr(task.get_coro(), "cr_code", None), "co_filename", "")
    }


async def still_running(others: set[asyncio.Task[object]]) -> set[asyncio.Task[object]]:
    """aiokafka's tasks but `others` still running after ENDED_WITHIN_S."""
    for _ in range(int(ENDED_WITHIN_S / 0.1)):
        left = aiokafka_tasks() - others
        if not left:
            break
        await asyncio.sleep(0.1)
    return left


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What asyncio and aiokafka logged at ERROR with a traceback, or as an unclosed producer."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR
        and (r.exc_info or "Unclosed" in r.getMessage())
        and r.name.split(".")[0] in {"asyncio", "aiokafka"}
    ]


async def test_stop_with_the_broker_paused_waits_its_timeout_not_twice_it(
    own_kafka: KafkaBroker, started: Started, caplog: pytest.LogCaptureFixture
) -> None:
    """The README's grace sum (62 s) counts 10 s for "the producer's bounded flush";
    KafkaPublisher.stop(10) spent 10 s in OpenBatches.close and 10 s more in producer.stop,
    which flushes the very batches close waited for."""
    publisher = started.publisher
    pid = own_kafka.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(PublishUnavailable):  # the call would spool it and be answered
            await publisher.publish([KafkaRecord(key=b"s", value=b"held", headers=[])])
        timeout_s = 2.0
        asked_at = time.monotonic()
        await publisher.stop(timeout_s)
        took = time.monotonic() - asked_at
        left = await still_running(started.others)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert took < timeout_s + 0.5, f"stop({timeout_s}) took {took:.1f} s"
    assert not left, f"still running after stop: {[t.get_coro() for t in left]}"
    del publisher, started
    gc.collect()  # an unclosed producer is reported when it is collected
    await asyncio.sleep(0.1)
    assert not errors_logged(caplog)


async def test_a_replaced_producer_is_ended_when_the_stop_cuts_its_own_stop_short(
    own_kafka: KafkaBroker, started: Started
) -> None:
    """A producer replaced after a KafkaError is stopped in a background task, which
    KafkaPublisher.stop cancels: the CancelledError is not the timeout that drops it (review)."""
    publisher = started.publisher
    broken = publisher._producer
    assert broken is not None
    pid = own_kafka.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(PublishUnavailable):  # its batch stays in the producer, unsent
            await publisher.publish([KafkaRecord(key=b"s", value=b"held", headers=[])])
        # What publish does when the broker answers with an error: replace the producer.
        await publisher._replace(broken, KafkaError("answered with an error"))
        await asyncio.sleep(0.5)  # the old producer's stop is under way (bound: 5 s)
        await publisher.stop(2.0)  # the service stops meanwhile
        left = await still_running(started.others)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert not left, f"still running after stop: {[t.get_coro() for t in left]}"
