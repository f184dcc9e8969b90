"""The consumer loop: read a batch, write it, then commit its offsets. Nothing else.

Offsets are committed only after the batch's transaction has committed, and writes are
idempotent, so a crash anywhere between the two only means the batch is read and written
again, adding nothing. Auto-commit is off: it would commit on a timer, before the write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from recorder_service.settings import Settings
from recorder_service.store import WriteResult, is_transient, write_events
from studentperf import envelope
from studentperf.retry import with_backoff
from studentperf.v1.prediction_event_pb2 import PredictionEvent

log = logging.getLogger(__name__)

Batch = Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]]


def decode_batch(batch: Batch) -> list[PredictionEvent]:
    """The batch's events; records that are not events are logged with where they sit."""
    events: list[PredictionEvent] = []
    for tp, records in batch.items():
        for record in records:
            try:
                events.append(envelope.decode(record.value))
            except envelope.UndecodableEvent as error:
                log.error(
                    "skipping record %s[%d]@%d: %s", tp.topic, tp.partition, record.offset, error
                )
    return events


class Recorder:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, consumer: AIOKafkaConsumer) -> None:
        self._settings = settings
        self._pool = pool
        self._consumer = consumer
        self.stored = 0
        self.already_stored = 0
        self.rejected = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Records batches until `stop` is set; the batch in hand is finished first."""
        while not stop.is_set():
            batch = await self._consumer.getmany(
                timeout_ms=self._settings.batch_max_wait_ms,
                max_records=self._settings.batch_max_events,
            )
            if not batch:
                continue
            events = decode_batch(batch)
            if events:
                result = await self._write_until_done(events, stop)
                if result is None:
                    return  # stopped while the database was away: nothing committed
                self._account(result)
            await self._commit(batch)

    async def _write_until_done(
        self, events: list[PredictionEvent], stop: asyncio.Event
    ) -> WriteResult | None:
        delay = 0.2
        while True:
            try:
                return await write_events(self._pool, events)
            except Exception as error:
                if not is_transient(error):
                    raise
                log.warning("database unavailable (%s); retrying in %.1f s", error, delay)
            try:
                await asyncio.wait_for(stop.wait(), delay)
                return None
            except TimeoutError:
                delay = min(delay * 2, 5.0)

    def _account(self, result: WriteResult) -> None:
        self.stored += result.stored
        self.already_stored += result.already_stored
        self.rejected += len(result.rejected)
        for event, reason in result.rejected:
            log.error("database refused event %s: %s", event.event_id, reason)
        log.debug("stored %d, already stored %d", result.stored, result.already_stored)

    async def _commit(self, batch: Batch) -> None:
        # Partitions revoked while the batch was written are another member's now: it reads
        # them again from the last commit, and rewriting their events adds nothing.
        assigned = self._consumer.assignment()
        offsets = {
            tp: records[-1].offset + 1
            for tp, records in batch.items()
            if records and tp in assigned
        }
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as error:
            log.warning("offset commit refused during a rebalance (%s)", error)


def make_consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        settings.shared.kafka_topic,
        bootstrap_servers=settings.shared.kafka_bootstrap_servers,
        group_id=settings.consumer_group,
        client_id="studentperf-recorder",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # Raw bytes: a decoding error inside aiokafka would re-read the record forever.
        key_deserializer=None,
        value_deserializer=None,
        **settings.shared.kafka_security.client_options(),
    )


async def start_consumer(settings: Settings, *, give_up_after_s: float = 120.0) -> AIOKafkaConsumer:
    """Joins the group, retrying with backoff while the broker is not reachable."""

    async def attempt() -> AIOKafkaConsumer:
        consumer = make_consumer(settings)
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        return consumer

    return await with_backoff(
        attempt, what="Kafka", retry_on=(KafkaError,), give_up_after_s=give_up_after_s
    )
