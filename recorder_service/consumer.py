"""The consumer loop: gather a batch, write it, dead-letter what cannot be written, commit.

Offsets are committed only after the batch's transaction has committed and its dead letters
are acknowledged, and writes are idempotent, so a crash anywhere in between only means the
batch is read and written again, adding nothing. Auto-commit is off: it would commit on a
timer, before the write.

While the database (or the dead-letter topic) is away the loop keeps the batch, pauses its
partitions and keeps polling, so the group keeps this member, and retries with backoff;
nothing is committed meanwhile, and it resumes by itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from recorder_service.batching import Batch, Chunk, collect
from recorder_service.dead_letters import DeadLetter, DeadLetterUnavailable, dead_letter
from recorder_service.health import Status
from recorder_service.rebalance import BatchGuard, InFlight, RebalanceListener
from recorder_service.rows import StagingRow
from recorder_service.settings import Settings
from recorder_service.store import WriteResult, is_transient
from recorder_service.triage import Reason, Rejected, triage
from studentperf.retry import with_backoff

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_RETRY_S = 0.2
MAX_RETRY_S = 5.0
# While waiting out an outage, the consumer is polled at least this often.
OUTAGE_POLL_S = 0.5
# How long an idle poll waits for records (it returns as soon as some come): the stop latency.
IDLE_POLL_S = 0.5


class Consumer(Protocol):
    """The part of AIOKafkaConsumer the loop uses."""

    async def getmany(self, *, timeout_ms: int = 0, max_records: int | None = None) -> Chunk: ...
    def assignment(self) -> set[TopicPartition]: ...
    def pause(self, *partitions: TopicPartition) -> None: ...
    def paused(self) -> set[TopicPartition]: ...
    def resume(self, *partitions: TopicPartition) -> None: ...
    def seek(self, partition: TopicPartition, offset: int) -> None: ...
    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...


class Store(Protocol):
    async def write(self, rows: Sequence[StagingRow]) -> WriteResult: ...


class DeadLetterSink(Protocol):
    async def send(self, letters: Sequence[DeadLetter]) -> None: ...


class GivenUp(Exception):
    """The batch in hand is dropped uncommitted; its records will be read again."""


def _is_outage(error: BaseException) -> bool:
    return isinstance(error, DeadLetterUnavailable) or is_transient(error)


class Recorder:
    def __init__(
        self, settings: Settings, store: Store, dead_letters: DeadLetterSink, status: Status
    ) -> None:
        self._settings = settings
        self._store = store
        self._dead_letters = dead_letters
        self.status = status
        self._guard = BatchGuard()
        self.listener = RebalanceListener(self._guard, status, settings.revoke_wait_ms / 1000)
        self._consumer: Consumer | None = None

    @property
    def stored(self) -> int:
        return self.status.events_stored

    @property
    def already_stored(self) -> int:
        return self.status.events_already_stored

    @property
    def dead_lettered(self) -> int:
        return sum(self.status.dead_lettered.values())

    async def run(self, consumer: Consumer, stop: asyncio.Event) -> None:
        """Records batches until `stop` is set; the batch in hand is finished first, unless
        the database is away (then it is left uncommitted)."""
        self._consumer = consumer
        self.status.running()
        while not stop.is_set():
            batch = await collect(
                self._poll,
                lambda: self._guard.epoch,
                stop,
                max_events=self._settings.batch_max_events,
                max_wait_s=self._settings.batch_max_wait_ms / 1000,
                idle_poll_s=IDLE_POLL_S,
            )
            if batch is not None:
                await self._record(consumer, batch, stop)

    async def _poll(self, *, timeout_ms: int, max_records: int) -> Chunk:
        assert self._consumer is not None
        chunk: Chunk = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        if chunk and not self.status.first_fetch_at:
            self.status.first_fetch_at = time.time()
        return chunk

    async def _record(self, consumer: Consumer, batch: Batch, stop: asyncio.Event) -> None:
        flight = self._guard.begin(batch)
        try:
            triaged = triage(batch.records())
            written = await self._until_done(
                lambda: self._store.write(triaged.rows), consumer, flight, stop, "database"
            )
            rejected = triaged.rejected + [
                Rejected(triaged.sources[r.index], Reason.CONSTRAINT_VIOLATION, r.error, r.attempts)
                for r in written.refused
            ]
            letters = [dead_letter(r, batch.first_seen_at) for r in rejected]
            await self._until_done(
                lambda: self._dead_letters.send(letters),
                consumer,
                flight,
                stop,
                "dead-letter topic",
            )
            if flight.abandoned:
                raise GivenUp
            self._account(written, rejected)
            await self._commit(consumer, batch)
        except GivenUp:
            if not stop.is_set():
                self.status.batches_abandoned += 1
                log.warning(
                    "batch of %d abandoned uncommitted: its partitions were revoked", batch.size
                )
        finally:
            self._guard.end(flight)

    async def _until_done(
        self,
        action: Callable[[], Awaitable[T]],
        consumer: Consumer,
        flight: InFlight,
        stop: asyncio.Event,
        what: str,
    ) -> T:
        """`action`'s result, retried with backoff through outages; raises GivenUp when the
        batch is given up instead (stopping, or its partitions revoked), nothing committed."""
        delay = FIRST_RETRY_S
        while True:
            if flight.abandoned:
                raise GivenUp
            try:
                result = await action()
            except Exception as error:
                if not _is_outage(error):
                    raise
                self.status.degraded(f"{what} unavailable: {type(error).__name__}: {error}")
                self.status.retries += 1
            else:
                if consumer.paused():
                    consumer.resume(*consumer.paused())
                self.status.running()
                return result
            if not await self._wait_out(delay, consumer, flight, stop):
                raise GivenUp
            delay = min(delay * 2, MAX_RETRY_S)

    async def _wait_out(
        self, delay: float, consumer: Consumer, flight: InFlight, stop: asyncio.Event
    ) -> bool:
        """Waits `delay` with every partition paused, still polling so the group keeps this
        member; False when the batch must be given up instead."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        flight.polling = True
        try:
            while True:
                if stop.is_set() or flight.abandoned or self._guard.revoking:
                    flight.abandoned = True
                    return False
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return True
                consumer.pause(*consumer.assignment())
                chunk: Chunk = await consumer.getmany(
                    timeout_ms=int(min(remaining, OUTAGE_POLL_S) * 1000)
                )
                # Only partitions assigned during this poll can return records: put them back,
                # the next batch reads them again.
                for tp, records in chunk.items():
                    if records:
                        consumer.seek(tp, records[0].offset)
        finally:
            flight.polling = False

    def _account(self, written: WriteResult, rejected: list[Rejected]) -> None:
        self.status.batches += 1
        self.status.transactions += written.transactions
        self.status.events_stored += written.stored
        self.status.events_already_stored += written.already_stored
        for r in rejected:
            self.status.dead_lettered[r.reason.value] += 1
            log.error(
                "dead-lettered %s[%d]@%d (%s): %s",
                r.record.topic,
                r.record.partition,
                r.record.offset,
                r.reason.value,
                r.error,
            )

    async def _commit(self, consumer: Consumer, batch: Batch) -> None:
        # Partitions revoked while the batch was written are another member's now: it reads
        # them again from the last commit, and rewriting their events adds nothing.
        assigned: set[TopicPartition] = consumer.assignment()
        offsets = {tp: o for tp, o in batch.next_offsets().items() if tp in assigned}
        if not offsets:
            return
        try:
            await asyncio.wait_for(consumer.commit(offsets), self._settings.revoke_wait_ms / 1000)
        except (KafkaError, TimeoutError) as error:
            # Not committing is always safe: the records come again and add nothing.
            self.status.commits_refused += 1
            log.warning("offset commit refused (%s: %s)", type(error).__name__, error)
        else:
            self.status.commits += 1
            self.status.last_commit_at = time.time()


def make_consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.shared.kafka_bootstrap_servers,
        group_id=settings.consumer_group,
        client_id="studentperf-recorder",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # Raw bytes: a decoding error inside aiokafka would re-read the record forever.
        key_deserializer=None,
        value_deserializer=None,
    )


async def start_consumer(
    settings: Settings, listener: RebalanceListener, *, give_up_after_s: float = 120.0
) -> AIOKafkaConsumer:
    """Joins the group, retrying with backoff while the broker is not reachable."""

    async def attempt() -> AIOKafkaConsumer:
        consumer = make_consumer(settings)
        try:
            consumer.subscribe([settings.shared.kafka_topic], listener=listener)
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        return consumer

    return await with_backoff(
        attempt, what="Kafka", retry_on=(KafkaError,), give_up_after_s=give_up_after_s
    )
