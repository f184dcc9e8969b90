"""Publishing a CSV import's events to Kafka and waiting for every acknowledgement.

The producer is idempotent (`enable_idempotence=True`, which implies `acks="all"`): an
acknowledged event is on every in-sync replica, and the producer's own retries never write it
twice. Every wait is bounded by `timeout_s` (aiokafka has no `max.block.ms`, and with
idempotence on its batches never expire, aio-libs/aiokafka#1101): the publish fails when the
broker acknowledges nothing for that long. What was acknowledged before stays in Kafka, and
importing the file again is harmless: the recorder stores each row's event id once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from studentperf.config import SharedSettings
from studentperf.envelope import KafkaRecord

CLIENT_ID = "studentperf-import"


class PublishFailed(Exception):
    """Not every event was acknowledged; the message says how many were, and why not."""


async def publish_all(
    shared: SharedSettings,
    records: Sequence[KafkaRecord],
    *,
    timeout_s: float,
    progress: Callable[[int], None] = lambda acknowledged: None,
) -> int:
    """Sends every record to the shared topic and returns once all are acknowledged (their
    number); raises PublishFailed. `progress` hears the number acknowledged so far."""
    producer = AIOKafkaProducer(
        bootstrap_servers=shared.kafka_bootstrap_servers,
        client_id=CLIENT_ID,
        enable_idempotence=True,
        acks="all",
        linger_ms=20,
        max_batch_size=256 * 1024,
        request_timeout_ms=int(timeout_s * 1000),
        **shared.kafka_security.client_options(),
    )
    acknowledged = 0
    try:
        async with asyncio.timeout(timeout_s):
            await producer.start()
        pending: set[asyncio.Future[object]] = set()
        for record in records:
            # Waits (up to request_timeout_ms) only while the producer's buffer is full.
            pending.add(
                await producer.send(
                    shared.kafka_topic, key=record.key, value=record.value, headers=record.headers
                )
            )
        while pending:
            done, pending = await asyncio.wait(pending, timeout=timeout_s)
            if not done:
                raise TimeoutError(f"no acknowledgement for {timeout_s:g} s")
            for future in done:
                future.result()  # raises the send's error
            acknowledged += len(done)
            progress(acknowledged)
    except (KafkaError, TimeoutError, OSError) as err:
        raise PublishFailed(
            f"Kafka at {shared.kafka_bootstrap_servers} acknowledged {acknowledged} of"
            f" {len(records)} events of topic {shared.kafka_topic}"
            f" ({type(err).__name__}: {err})"
        ) from err
    finally:
        # Flushes nothing new after a failure: what is left cannot be acknowledged in time.
        try:
            async with asyncio.timeout(timeout_s):
                await producer.stop()
        except TimeoutError:
            pass
    return acknowledged
