"""The fetch loop: gather a batch and decode it while the writer finishes the one before.

Two stages: this loop is the only caller of `getmany()`; a writer task (writer.py) writes a
batch, dead-letters what cannot be written and commits the offsets, strictly one batch after
the other. At most one decoded batch waits behind the one being written. Offsets are
committed only after the batch's transaction has committed and its dead letters are
acknowledged, and writes are idempotent, so a crash anywhere in between only means the batch
is read and written again, adding nothing. Auto-commit is off: it would commit on a timer.

While the writer waits out an outage, this loop takes no new records but keeps polling with
every partition paused, so the group does not drop the member (max_poll_interval_ms).

It polls through polling.Poller: a record aiokafka cannot read (a header name that is not
UTF-8) makes getmany() raise; the poller reads its batch raw instead and hands it on as
unreadable, to be dead-lettered, with the good records around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from recorder_service.batching import collect
from recorder_service.health import RecorderHealth, State
from recorder_service.polling import Poller
from recorder_service.ports import Consumer, DeadLetterSink, Store
from recorder_service.raw_records import RawFetcher
from recorder_service.rebalance import BatchGuard, RebalanceListener
from recorder_service.settings import Settings
from recorder_service.triage import triage
from recorder_service.writer import BatchWriter, Prepared
from studentperf.retry import with_backoff

log = logging.getLogger(__name__)

# How long an idle poll waits for records (it returns as soon as some come): the stop latency.
IDLE_POLL_S = 0.5
# How often the loop polls while the writer waits out an outage.
OUTAGE_POLL_S = 0.5


class Recorder:
    """Reads the topic in batches and hands them to the writer; `listener` must be passed to
    the consumer's subscribe(), `health` says what it is doing."""

    def __init__(
        self, settings: Settings, store: Store, dead_letters: DeadLetterSink, health: RecorderHealth
    ) -> None:
        self._settings = settings
        self.health = health
        self._guard = BatchGuard()
        self.listener = RebalanceListener(self._guard, health, settings.revoke_wait_ms / 1000)
        self._writer = BatchWriter(
            store,
            dead_letters,
            health,
            self._guard,
            commit_timeout_s=max(settings.revoke_wait_ms / 1000, 1.0),
        )
        self._raw_fetch = RawFetcher(
            settings.shared.kafka_bootstrap_servers,
            settings.shared.kafka_security.client_options(),
        )

    @property
    def stored(self) -> int:
        return self.health.events_stored

    @property
    def already_stored(self) -> int:
        return self.health.events_already_stored

    @property
    def dead_lettered(self) -> int:
        return sum(self.health.dead_lettered.values())

    async def run(self, consumer: Consumer, stop: asyncio.Event) -> None:
        """Records batches until `stop` is set; the batch being written is finished first,
        unless the database is away (then it is left uncommitted)."""
        self.health.running()
        poller = Poller(consumer, lambda: self._guard.epoch, self._raw_fetch)
        writing: asyncio.Task[None] | None = None
        ready: Prepared | None = None
        try:
            while True:
                if writing is not None and writing.done():
                    # No record gets here (triage and the writer turn each one's errors into
                    # its dead letter, and wait out outages): only a bug in the writer, which
                    # must end the recorder, for the next batch would commit past this one.
                    writing.result()
                    writing = None
                if ready is not None and (stop.is_set() or ready.batch.epoch != self._guard.epoch):
                    # Fetched before a rebalance (or not to be written any more): uncommitted,
                    # so whoever holds the partitions now reads it again.
                    ready = None
                if writing is None:
                    if ready is not None:
                        writing = asyncio.create_task(self._writer.finish(consumer, ready, stop))
                        ready = None
                    elif stop.is_set():
                        return
                    else:
                        if consumer.paused():
                            # Left paused by a batch given up during an outage: only a writer
                            # waiting out an outage keeps partitions paused.
                            consumer.resume(*consumer.paused())
                        ready = await self._prepare(poller, stop, None)
                elif stop.is_set():
                    await asyncio.wait({writing})
                elif self.health.state is State.DEGRADED:
                    await self._keep_membership(consumer, poller)
                elif ready is not None:
                    # Woken regularly: the writer may fall into an outage meanwhile.
                    await asyncio.wait({writing}, timeout=OUTAGE_POLL_S)
                else:
                    ready = await self._prepare(poller, stop, writing)
        finally:
            if writing is not None and not writing.done():
                writing.cancel()  # an error here: the transaction rolls back, nothing commits
                with contextlib.suppress(asyncio.CancelledError):
                    await writing
            await self._raw_fetch.close()

    async def _prepare(
        self, poller: Poller, stop: asyncio.Event, writing: asyncio.Task[None] | None
    ) -> Prepared | None:
        batch = await collect(
            poller,
            lambda: self._guard.epoch,
            stop,
            max_events=self._settings.batch_max_events,
            max_wait_s=self._settings.batch_max_wait_ms / 1000,
            idle_poll_s=IDLE_POLL_S,
            # A writer that failed or fell into an outage needs the loop's attention.
            interrupted=lambda: (
                writing is not None and (writing.done() or self.health.state is State.DEGRADED)
            ),
        )
        if batch is None:
            return None
        for tp, records in batch.parts.items():
            if records:
                self.health.read_from(tp, records[0].offset)
        skew = timedelta(seconds=self._settings.max_future_skew_s)
        return Prepared(batch, triage(batch.records(), max_future_skew=skew))

    async def _keep_membership(self, consumer: Consumer, poller: Poller) -> None:
        consumer.pause(*consumer.assignment())
        chunk = await poller.poll(timeout_ms=int(OUTAGE_POLL_S * 1000))
        # Only partitions assigned during the poll can return records: put them back, the
        # next batch reads them again.
        for tp, records in chunk.items():
            if records:
                poller.seek(tp, records[0].offset)


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
        **settings.shared.kafka_security.client_options(),
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
