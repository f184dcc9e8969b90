"""The fetch loop: gather a batch and decode it while the writer finishes the one before.

Two stages: this loop is the only caller of `getmany()`; writer tasks (writer.py) write a
batch each, dead-letter what cannot be written and commit the offsets, strictly in the
batches' order. Two batches are written at once at most, and one decoded batch waits behind
them. Offsets are
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
from recorder_service.triage import triage_in_steps
from recorder_service.writer import BatchWriter, Prepared
from studentperf.retry import with_backoff

log = logging.getLogger(__name__)

# How long an idle poll waits for records (it returns as soon as some come): the stop latency.
IDLE_POLL_S = 0.5
# How often the loop polls while the writer waits out an outage.
OUTAGE_POLL_S = 0.5
# Batches being written at once: the next one starts while the one before ends, so the
# database is not idle between them (one instance: about 17,500 events/s with one, 21,000 with
# two, in make bench; docs/recorder.md).
WRITING_AT_ONCE = 2


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
        """Records batches until `stop` is set; the batches being written are finished first,
        unless the database is away (then they are left uncommitted)."""
        self.health.running()
        poller = Poller(
            consumer,
            lambda: self._guard.epoch,
            self._raw_fetch,
            reassigning=lambda: self._guard.reassigning,
        )
        writing: list[asyncio.Task[bool]] = []  # oldest first
        epochs: dict[asyncio.Task[bool], int] = {}  # when each one's records were fetched
        ready: Prepared | None = None
        try:
            while True:
                for task in [task for task in writing if task.done()]:
                    # No record gets here (triage and the writer turn each one's errors into
                    # its dead letter, and wait out outages): only a bug in the writer, which
                    # must end the recorder, for the next batch would commit past this one.
                    task.result()
                    writing.remove(task)
                    del epochs[task]
                if ready is not None and (stop.is_set() or ready.batch.epoch != self._guard.epoch):
                    # Fetched before a rebalance (or not to be written any more): uncommitted,
                    # so whoever holds the partitions now reads it again.
                    ready = None
                if ready is not None and (
                    not writing
                    # A second batch joins only a writer that is not waiting out an outage.
                    or (len(writing) < WRITING_AT_ONCE and self.health.state is not State.DEGRADED)
                ):
                    # Commits follow the batch before, unless that one was fetched before a
                    # rebalance: it commits nothing any more, and this one was read from the
                    # offsets committed since.
                    last = writing[-1] if writing else None
                    before = last if last and epochs[last] == ready.batch.epoch else None
                    task = self._writer.start(consumer, ready, stop, before)
                    writing.append(task)
                    epochs[task] = ready.batch.epoch
                    ready = None
                elif not writing:
                    if stop.is_set():
                        return
                    if consumer.paused():
                        # Left paused by a batch given up during an outage: only a writer
                        # waiting out an outage keeps partitions paused.
                        consumer.resume(*consumer.paused())
                    ready = await self._prepare(poller, stop, writing)
                elif stop.is_set():
                    await asyncio.wait(writing)
                elif self.health.state is State.DEGRADED:
                    await self._keep_membership(consumer, poller)
                elif ready is not None:
                    # Woken regularly: the writer may fall into an outage meanwhile.
                    await asyncio.wait(
                        writing, timeout=OUTAGE_POLL_S, return_when=asyncio.FIRST_COMPLETED
                    )
                else:
                    ready = await self._prepare(poller, stop, writing)
        finally:
            try:
                for task in writing:
                    # An error here: the transaction rolls back, nothing commits.
                    task.cancel()
                await asyncio.gather(*writing, return_exceptions=True)
            finally:
                await self._raw_fetch.close()

    async def _prepare(
        self, poller: Poller, stop: asyncio.Event, writing: list[asyncio.Task[bool]]
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
                bool(writing)
                and (any(task.done() for task in writing) or self.health.state is State.DEGRADED)
            ),
        )
        if batch is None:
            return None
        for tp, records in batch.parts.items():
            if records:
                self.health.read_from(tp, records[0].offset)
        skew = timedelta(seconds=self._settings.max_future_skew_s)
        return Prepared(batch, await triage_in_steps(list(batch.records()), max_future_skew=skew))

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
