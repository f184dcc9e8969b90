"""KafkaPublisher around its open batches, with a fake producer: a replacement of the producer
that a cancelled call started still happens, and a stop keeps to its timeout."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka.errors import KafkaError

from inference_service.core import PublishUnavailable
from inference_service.partitioning import partition_of
from inference_service.producer_batches import Load, OpenBatches
from inference_service.publisher import KafkaPublisher
from studentperf.envelope import KafkaRecord


class Builder:
    def __init__(self) -> None:
        self.values: list[bytes] = []
        self.closed = False

    def append(self, *, key: bytes, value: bytes, timestamp: Any, headers: Any) -> object | None:
        if self.closed:
            return None
        self.values.append(value)
        return object()

    def close(self) -> None:
        self.closed = True


class Producer:
    """Two partitions; takes every batch, settles none until told; `stop` waits like aiokafka's
    (for the batches it took) when `hang_on_stop`."""

    def __init__(self, *, hang_on_stop: bool = False) -> None:
        self.taken: list[tuple[int, list[bytes], asyncio.Future[None]]] = []
        self.hang_on_stop = hang_on_stop
        self.stop_started: float | None = None

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    def create_batch(self) -> Builder:
        return Builder()

    async def send_batch(self, builder: Builder, topic: str, *, partition: int) -> Any:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.taken.append((partition, builder.values, future))
        return future

    async def stop(self) -> None:
        self.stop_started = time.monotonic()
        if self.hang_on_stop:  # the broker does not answer: the flush never ends
            await asyncio.Event().wait()


def key_for(partition: int) -> bytes:
    return next(key for n in range(100) if partition_of(key := f"s{n}".encode(), 2) == partition)


def publisher_on(producer: Producer, timeout_s: float) -> KafkaPublisher:
    publisher = KafkaPublisher("unused:9092", "t", publish_timeout_s=timeout_s)
    publisher._producer = producer
    publisher._batches = OpenBatches(producer, "t", load=Load())
    publisher.connected.set()
    return publisher


async def test_a_call_cancelled_while_it_replaces_the_producer_leaves_a_producer_behind() -> None:
    """A publish that sees Kafka refuse a batch replaces the producer (`_replace`): it now awaits
    `OpenBatches.close()` before it starts the replacement. A call cancelled there (a gRPC
    deadline or client cancel for BatchPredict, DurablePublisher.stop for the replayer) never
    starts it: the publisher stays without a producer, `connected` cleared, for good."""
    producer = Producer()
    publisher = publisher_on(producer, timeout_s=5)
    connects: list[None] = []

    async def connect(**_: Any) -> None:
        connects.append(None)

    async def stop_producer(*_: Any, **__: Any) -> None:
        pass

    publisher.connect = connect  # type: ignore[method-assign]
    publisher._stop_producer = stop_producer  # type: ignore[method-assign]

    refused = asyncio.create_task(
        publisher.publish([KafkaRecord(key=key_for(0), value=b"a", headers=[])])
    )
    other = asyncio.create_task(
        publisher.publish([KafkaRecord(key=key_for(1), value=b"b", headers=[])])
    )
    while len(producer.taken) < 2:  # noqa: ASYNC110 (the fake sets no event)
        await asyncio.sleep(0)
    # The broker refuses partition 0's batch; partition 1's is still out.
    [future0] = [future for partition, _, future in producer.taken if partition == 0]
    future0.set_exception(KafkaError("refused"))
    for _ in range(50):
        if publisher._producer is None:
            break
        await asyncio.sleep(0)
    assert publisher._producer is None, "the refusal did not start a replacement"
    refused.cancel()  # the call's deadline strikes while it replaces the producer
    with pytest.raises(asyncio.CancelledError):
        await refused
    await asyncio.sleep(0.1)
    assert connects, "no new producer is ever connected: every later publish is refused"
    other.cancel()
    await asyncio.gather(other, return_exceptions=True)
    for task in publisher._background:
        task.cancel()


async def test_stop_waits_at_most_its_timeout_while_the_broker_does_not_answer() -> None:
    """KafkaPublisher.stop(timeout_s) "waits at most timeout_s" (the README's grace sum counts
    10 s for it): it now waits timeout_s for the open batches to settle, then timeout_s more for
    the producer's own flush of the very same batches."""
    producer = Producer(hang_on_stop=True)
    timeout_s = 0.3
    publisher = publisher_on(producer, timeout_s=timeout_s)
    publish = asyncio.create_task(
        publisher.publish([KafkaRecord(key=key_for(0), value=b"a", headers=[])])
    )
    while not producer.taken:  # noqa: ASYNC110 (the fake sets no event)
        await asyncio.sleep(0)
    with pytest.raises(PublishUnavailable):
        await publish  # a publish timeout: the call spools its event and is answered
    started = time.monotonic()
    await publisher.stop(timeout_s)
    took = time.monotonic() - started
    assert took < timeout_s * 1.5, f"stop({timeout_s}) took {took:.2f} s"
