"""A replay chunk whose hand-over to the producer is cut short by the publish timeout.

aiokafka's `send_batch` waits while the partition already has a batch queued, and its sender
takes a partition's next batch only once the request in flight is answered: a chunk of more
batches than the broker answers within the timeout is still being handed over when the timeout
strikes. The batches handed over so far are in the producer and will be stored; the retry must
not hand them over again, or each retry adds a copy and the chunk never gets through.
(Found by review, helper-51.)
"""

from __future__ import annotations

import asyncio
from typing import Any

from inference_service.core import PublishUnavailable
from inference_service.delivery import PendingSends
from inference_service.producer_batches import Load, OpenBatches
from inference_service.publisher import KafkaPublisher
from studentperf.envelope import KafkaRecord

PER_BATCH = 20  # records per producer batch
BATCHES = 6  # a chunk of 120 records: batches of its own
TIMEOUT_S = 0.05
ACK_DELAY_S = 0.035  # each produce request is answered within the timeout
TRIES = 12


class FakeBatch:
    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.closed = False

    def append(self, *, key: bytes, value: bytes, timestamp: Any, headers: Any) -> object | None:
        if self.closed or len(self.records) >= PER_BATCH:
            return None
        self.records.append(value)
        return object()

    def close(self) -> None:
        self.closed = True


class SlowBrokerProducer:
    """One partition, as aiokafka's accumulator and sender are: at most one batch queued
    (send_batch waits for it to drain), one in flight, each answered after ACK_DELAY_S."""

    def __init__(self) -> None:
        self.queue: list[tuple[FakeBatch, asyncio.Future[None], asyncio.Event]] = []
        self.handed: list[list[bytes]] = []
        self.stored: list[bytes] = []
        self.wake = asyncio.Event()
        self.sender = asyncio.create_task(self._send_forever())

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        while self.queue:
            await self.queue[-1][2].wait()
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue.append((batch, ack, asyncio.Event()))
        self.handed.append(list(batch.records))
        self.wake.set()
        return asyncio.shield(ack)

    async def _send_forever(self) -> None:
        while True:
            while not self.queue:
                self.wake.clear()
                await self.wake.wait()
            batch, ack, drained = self.queue.pop(0)
            drained.set()
            await asyncio.sleep(ACK_DELAY_S)  # in flight
            self.stored.extend(batch.records)
            ack.set_result(None)


async def test_a_retried_chunk_cut_in_its_hand_over_gets_through_without_a_copy_per_retry() -> None:
    publisher = KafkaPublisher("fake:9092", "events", publish_timeout_s=TIMEOUT_S)
    producer = SlowBrokerProducer()
    publisher._producer = producer
    publisher._batches = OpenBatches(producer, "events", load=Load())  # as connect() sets it
    chunk = [KafkaRecord(key=b"S", value=f"S-{i}".encode(), headers=[]) for i in range(120)]
    pending = PendingSends()  # as the replay keeps it across the chunk's retries
    got_through = False
    try:
        for _ in range(TRIES):
            try:
                await publisher.publish(chunk, pending)
            except PublishUnavailable:
                continue
            got_through = True
            break
    finally:
        producer.sender.cancel()
        await asyncio.gather(producer.sender, return_exceptions=True)
    assert got_through, f"not through after {TRIES} tries"
    assert all(producer.stored.count(r.value) == 1 for r in chunk)
    assert producer.stored == [r.value for r in chunk]  # once each, in order
