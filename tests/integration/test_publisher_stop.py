"""KafkaPublisher.stop against a paused real broker: it keeps to its timeout (the open
batches' flush and the producer's own share one bound), and leaves nothing of the producer
running (aiokafka's stop, cut short, left its sender retrying the unsent batches for ever: once
the broker was gone for good, later tests logged its failed connections every few ms)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import pytest

from inference_service.core import PublishUnavailable
from inference_service.publisher import KafkaPublisher
from infra.devstack import KafkaBroker
from studentperf.envelope import KafkaRecord


async def test_stop_with_the_broker_paused_waits_its_timeout_not_twice_it(
    own_kafka: KafkaBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """The README's grace sum (60 s) counts 10 s for "the producer's bounded flush";
    KafkaPublisher.stop(10) now spends 10 s in OpenBatches.close and 10 s more in
    producer.stop, which flushes the very batches close waited for."""
    before = aiokafka_tasks()
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
    pid = own_kafka.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(PublishUnavailable):  # the call would spool it and be answered
            await publisher.publish([KafkaRecord(key=b"s", value=b"held", headers=[])])
        timeout_s = 2.0
        started = time.monotonic()
        await publisher.stop(timeout_s)
        took = time.monotonic() - started
        # Ended in the background once dropped: the requests in flight back off first.
        for _ in range(50):
            left = aiokafka_tasks() - before
            if not left:
                break
            await asyncio.sleep(0.1)
    finally:
        os.kill(pid, signal.SIGCONT)
    await asyncio.sleep(0)
    assert took < timeout_s + 0.5, f"stop({timeout_s}) took {took:.1f} s"
    assert not left, f"still running after stop: {[t.get_coro() for t in left]}"
    # Ending it raised nowhere (a requeued batch's callback did, before its fix).
    broken = [r.getMessage() for r in caplog.records if r.name == "asyncio" and r.exc_info]
    assert not broken, broken


def aiokafka_tasks() -> set[asyncio.Task[object]]:
    """The running tasks of aiokafka's own (a producer's sender, its client's metadata sync)."""
    return {
        task
        for task in asyncio.all_tasks()
        if not task.done()
        and "aiokafka" in getattr(getattr(task.get_coro(), "cr_code", None), "co_filename", "")
    }
