"""A stand-in for the Kafka publisher under a stall, for the durable publisher's tests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from inference_service.core import PublishUnavailable
from inference_service.delivery import Handed, PendingSends
from inference_service.spool import Destination
from studentperf.envelope import KafkaRecord


class HandingBroker:
    """As aiokafka is under a stall: what a publish hands over stays handed over, and is stored
    once the broker answers again, even after the publish timed out; a retry with the same
    PendingSends waits for those sends rather than handing the records over again. The broker
    acknowledges `acks_left` records, then nothing until `recover`."""

    def __init__(self, acks_left: int = 0, destination: Destination | None = None) -> None:
        self.connected = asyncio.Event()
        self.answering = True
        self.acks_left = acks_left
        self.handed: list[tuple[KafkaRecord, asyncio.Future[None]]] = []
        self.log: list[bytes] = []  # what was acknowledged, in order
        self.tries = 0
        self._destination = destination or Destination("predictions", "127.0.0.1:9092", "c-1")

    @property
    def destination(self) -> Destination:
        return self._destination

    async def connect(self) -> None:
        self.connected.set()

    async def stop(self, timeout_s: float = 10.0) -> None:
        self.connected.clear()

    def recover(self) -> None:
        self.acks_left = 1 << 30
        self._deliver()

    def _deliver(self) -> None:
        for record, ack in self.handed:
            if not ack.done() and self.acks_left > 0:
                self.acks_left -= 1
                self.log.append(record.value)
                ack.set_result(None)

    async def publish(
        self, records: Sequence[KafkaRecord], pending: PendingSends | None = None
    ) -> None:
        self.tries += 1
        waiting, again = ([], list(records)) if pending is None else pending.left(self, records)
        sends = list(waiting)
        for record in again:
            ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.handed.append((record, ack))
            sends.append(Handed(0, [record], ack))
        if pending is not None:
            pending.keep(self, sends)
        self._deliver()
        if not all(send.ack.done() for send in sends):
            await asyncio.sleep(0.01)
            raise PublishUnavailable("not acknowledged in time")
