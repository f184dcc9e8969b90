"""Publishing prediction events to Kafka with aiokafka, acknowledged by the broker.

Delivery settings, in one place:
- `enable_idempotence=True` (implies `acks="all"`): a record the broker acknowledged is on every
  in-sync replica, and the producer's own retries never write it twice.
- `linger_ms`: concurrent calls' records share batches, so waiting for the acknowledgement costs
  each call a little latency rather than the service its throughput.
- Every wait is bounded by `publish_timeout_s` (aiokafka has no `max.block.ms`, and with
  idempotence on its batches never expire): a call that cannot be acknowledged in time fails
  with UNAVAILABLE instead of hanging.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from inference_service.core import PublishUnavailable
from studentperf.envelope import KafkaRecord
from studentperf.retry import with_backoff

log = logging.getLogger(__name__)


class KafkaPublisher:
    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        publish_timeout_s: float,
        linger_ms: int = 2,
    ) -> None:
        self._topic = topic
        self._timeout_s = publish_timeout_s
        self._producer_options = {
            "bootstrap_servers": bootstrap_servers,
            "client_id": "studentperf-inference",
            "enable_idempotence": True,
            "acks": "all",
            "linger_ms": linger_ms,
            "max_batch_size": 256 * 1024,
            "request_timeout_ms": int(publish_timeout_s * 1000),
        }
        self._producer: AIOKafkaProducer | None = None

    async def start(self, *, give_up_after_s: float = 120.0) -> None:
        """Connects to the broker, retrying with backoff; raises when it never answers."""

        async def attempt() -> AIOKafkaProducer:
            # A producer whose start() failed is not reused: its later sends can hang
            # (aio-libs/aiokafka#759).
            producer = AIOKafkaProducer(**self._producer_options)
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            return producer

        try:
            self._producer = await with_backoff(
                attempt, what="Kafka", retry_on=(KafkaError,), give_up_after_s=give_up_after_s
            )
        except KafkaError as exc:
            raise PublishUnavailable(f"Kafka broker not reachable: {exc}") from exc

    async def publish(self, records: Sequence[KafkaRecord]) -> None:
        producer = self._producer
        if producer is None:
            raise PublishUnavailable("the Kafka producer is not started")
        try:
            async with asyncio.timeout(self._timeout_s):
                acks = [
                    await producer.send(self._topic, value=r.value, key=r.key, headers=r.headers)
                    for r in records
                ]
                await asyncio.gather(*acks)
        except TimeoutError:
            raise PublishUnavailable(
                f"the Kafka broker did not acknowledge {len(records)} event(s) "
                f"within {self._timeout_s:g} s"
            ) from None
        except KafkaError as exc:
            raise PublishUnavailable(f"Kafka refused the event(s): {exc}") from exc

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Flushes what is pending and disconnects, waiting at most `timeout_s`."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            await asyncio.wait_for(producer.stop(), timeout_s)
        except TimeoutError:
            log.error("Kafka producer did not flush within %.1f s; stopping anyway", timeout_s)
