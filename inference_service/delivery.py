"""The durability promise: a prediction is answered only once its event is safe.

Safe means acknowledged by Kafka or, when Kafka does not acknowledge it in time (down,
unreachable, slow), fsync'd to the local spool, from which a replayer sends it on once Kafka
answers again. While anything is in the spool, new events go to the spool too, behind it, so
one student's events reach Kafka in the order they were made. Only a full spool refuses a
prediction (UNAVAILABLE).

A spooled segment goes only to the cluster and topic it was written for (spool.refusal): one
written for another destination is set aside, its file kept and the reason logged, and the
segments after it drain as usual, so the service keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from inference_service.core import PublishUnavailable
from inference_service.metrics import InferenceMetrics
from inference_service.spool import Destination, Spool, SpoolFull, refusal
from studentperf.envelope import KafkaRecord
from studentperf.retry import Backoff

log = logging.getLogger(__name__)

_REPLAY_CHUNK = 1000
# How long a stop waits for Kafka to take the events still pending.
FLUSH_BOUND_S = 10.0
# Pauses of the spool's replay while Kafka refuses it, from the first failure after a success.
REPLAY_BACKOFF = Backoff(first_s=0.2, max_s=5.0)


@dataclass(frozen=True)
class Handed:
    """Records handed to a producer as one batch, and the future of the broker's answer."""

    partition: int
    records: Sequence[KafkaRecord]
    ack: asyncio.Future[Any]


class PendingSends:
    """A replay chunk's sends, kept across a failed try so that the retry hands over again only
    what may not be stored.

    A send the broker has not acknowledged in time is still in the producer and will be stored
    when the broker answers: sending the chunk again on every retry would put one more copy in
    the topic per retry for as long as a stall lasts. And a chunk goes out as several batches
    (one or more per partition) that fail or succeed apart: one batch refused must not send
    again the batches the broker stored.
    """

    def __init__(self) -> None:
        self._producer: object = None
        self._sends: list[Handed] | None = None  # None: nothing handed over yet
        self._unsent: list[KafkaRecord] = []

    def keep(
        self, producer: object, sends: list[Handed], unsent: Sequence[KafkaRecord] = ()
    ) -> None:
        """What a try handed over to `producer`, and what it did not get to (a timeout cut it
        short), in the chunk's order."""
        self._producer, self._sends, self._unsent = producer, sends, list(unsent)

    def left(
        self, producer: object, records: Sequence[KafkaRecord]
    ) -> tuple[list[Handed], list[KafkaRecord]]:
        """What a try on `producer` waits for, and what it hands over (again).

        Per partition, from its first send not acknowledged on: wait for those sends while they
        are all still pending on this producer, else hand their records over again, all of
        them, so that one student's events keep their order. Acknowledged sends before it are
        done with. Then the records the last try never handed over.
        """
        if self._sends is None:
            return [], list(records)
        by_partition: dict[int, list[Handed]] = {}
        for send in self._sends:
            by_partition.setdefault(send.partition, []).append(send)
        waiting: list[Handed] = []
        again: list[KafkaRecord] = []
        for sends in by_partition.values():
            first = next((i for i, s in enumerate(sends) if not _acknowledged(s.ack)), None)
            if first is None:
                continue
            rest = sends[first:]
            if producer is self._producer and not any(s.ack.done() for s in rest):
                waiting.extend(rest)
            else:
                again.extend(record for send in rest for record in send.records)
        # Records never handed over come after every handed one of their partition.
        return waiting, again + self._unsent


def _acknowledged(ack: asyncio.Future[Any]) -> bool:
    return ack.done() and not ack.cancelled() and ack.exception() is None


class Broker(Protocol):
    """What the durable publisher needs of Kafka (publisher.KafkaPublisher in production)."""

    connected: asyncio.Event
    answering: bool  # whether the last publish that ended was acknowledged in time

    @property
    def destination(self) -> Destination:
        """The topic, and the cluster's id once connected (kept after a disconnect)."""
        ...

    async def connect(self) -> None: ...

    async def publish(
        self, records: Sequence[KafkaRecord], pending: PendingSends | None = None
    ) -> None: ...

    async def stop(self, timeout_s: float = FLUSH_BOUND_S) -> None: ...


class DurablePublisher:
    def __init__(
        self, kafka: Broker, spool: Spool, metrics: InferenceMetrics | None = None
    ) -> None:
        self._kafka = kafka
        self._spool = spool
        self._metrics = metrics
        self._tasks: list[asyncio.Task[None]] = []
        # How many records of a segment Kafka already acknowledged, so a retry after a pause
        # does not send them again; and the sends of the chunk being replayed.
        self._progress: dict[Path, int] = {}
        self._chunk: tuple[Path, int, PendingSends] | None = None
        # Held while a segment is replayed, and while a student's events are dropped from the
        # spool (forget): the two never touch a segment at once.
        self._replaying = asyncio.Lock()
        self._forgetting: set[asyncio.Task[int]] = set()  # erasures running to their end
        # Two chains (`_spool_after`), each link done once its publish and every one before it
        # are: the last publish sent straight to Kafka (over once acknowledged, or spooled after
        # a timeout), and the last one that came to the spool (its turn, done once queued).
        self._last_straight: asyncio.Future[None] | None = None
        self._last_turn: asyncio.Future[None] | None = None
        self._queueing = 0  # publishes on their way to the spool, not queued in it yet

    @property
    def spool(self) -> Spool:
        return self._spool

    @property
    def kafka_connected(self) -> bool:
        return self._kafka.connected.is_set() and self._kafka.answering

    def start(self) -> None:
        """Connects to Kafka and drains the spool in the background; serving need not wait."""
        self._tasks = [
            asyncio.create_task(self._connect(), name="kafka-connect"),
            asyncio.create_task(self._replay_forever(), name="spool-replay"),
        ]

    async def _connect(self) -> None:
        await self._kafka.connect()
        # New segments name the cluster from now on.
        self._spool.destination = self._kafka.destination

    async def publish(self, records: Sequence[KafkaRecord]) -> None:
        if not (self._spool.empty and not self._queueing and self._kafka.connected.is_set()):
            await self._spool_after(records, self._last_straight, in_turn=True)
            return
        before, over = self._last_straight, asyncio.get_running_loop().create_future()
        self._last_straight = over
        try:
            try:
                await self._kafka.publish(records)
                return
            except PublishUnavailable as error:
                log.warning("%s; spooling them", error)
            await self._spool_after(records, before, in_turn=False)
        finally:
            _done_after(over, before)

    async def _spool_after(
        self,
        records: Sequence[KafkaRecord],
        straight_before: asyncio.Future[None] | None,
        *,
        in_turn: bool,
    ) -> None:
        """Spools `records` once every publish sent straight to Kafka before them is over
        (`straight_before`, the chain's link then: one that times out is spooled then, ahead
        of these) and, `in_turn`, once those that came to the spool before them are queued in
        it. Else a student's older event could be spooled, and replayed, behind a newer one: a
        timeout comes a publish timeout after its send, and a publish that waited resumes a few
        loop turns after what it waited for. A straight publish that timed out is not `in_turn`:
        those that came to the spool after it started wait for it, not it for them."""
        earlier = [straight_before] if straight_before is not None else []
        previous = turn = None
        if in_turn:
            previous = self._last_turn
            if previous is not None:
                earlier.append(previous)
            turn = self._last_turn = asyncio.get_running_loop().create_future()
        # Meanwhile nothing goes straight: it would overtake these to Kafka.
        self._queueing += 1
        try:
            if not all(link.done() for link in earlier):
                await asyncio.wait(earlier)
        finally:
            self._queueing -= 1
            if turn is not None:
                # Who waits for this turn runs after the append below has queued the records
                # (Spool.append queues them before its first await); cancelled, this one
                # queues nothing, and the turn passes once the one before it has.
                _done_after(turn, previous)
        try:
            await self._spool.append(records)
        except SpoolFull as error:
            raise PublishUnavailable(str(error)) from None
        if self._metrics is not None:
            self._metrics.spooled(len(records))

    async def _replay_forever(self) -> None:
        pauses = REPLAY_BACKOFF.pauses()
        while True:
            if self._spool.empty:
                self._spool.changed.clear()
                await self._spool.changed.wait()
                continue
            await self._kafka.connected.wait()
            try:
                if await self._replay_oldest():
                    pauses = REPLAY_BACKOFF.pauses()
                    continue
                # Nothing readable yet (a write still in progress): let it finish.
                await asyncio.sleep(0.05)
                continue
            except PublishUnavailable as error:
                delay = next(pauses)
                log.warning(
                    "spool replay paused (%s); %d event(s) waiting, retrying in %.1f s",
                    error,
                    self._spool.records,
                    delay,
                )
            except Exception:
                # Delivery must outlive any one failure, or the spool would only ever fill.
                delay = next(pauses)
                log.exception("spool replay failed; retrying in %.1f s", delay)
            await asyncio.sleep(delay)

    async def forget(self, key: bytes) -> int:
        """Drops every spooled event keyed `key` (a student's, for EraseStudent) from disk, so
        it is never replayed; returns how many. Waits for a segment being replayed to be done
        with (a chunk is at most the publish timeout away).

        The work runs to its end even when the call is cancelled (a deadline): a segment
        rewritten on disk while the replay's place in it was not corrected would make the
        replay skip records it never sent."""
        work = asyncio.create_task(self._forget(key))
        self._forgetting.add(work)
        work.add_done_callback(self._forgetting.discard)
        return await asyncio.shield(work)

    async def _forget(self, key: bytes) -> int:
        # A publish of the student sent straight to Kafka before may yet time out and be
        # spooled, and one on its way to the spool may not be queued in it yet: both first,
        # so that nothing of the student stays in the spool.
        earlier = [link for link in (self._last_straight, self._last_turn) if link is not None]
        if not all(link.done() for link in earlier):
            await asyncio.wait(earlier)
        async with self._replaying:
            changed: set[Path] = set()
            try:
                dropped = await self._spool.drop_key(key, self._progress, changed)
            finally:
                if self._chunk is not None and self._chunk[0] in changed:
                    # A retry of the chunk would wait for sends of records that moved: sent
                    # again instead (the recorder stores each event once).
                    self._chunk = None
        if dropped:
            log.info("spool: dropped %d event(s) of an erased student", dropped)
        return dropped

    async def _replay_oldest(self) -> bool:
        """Sends the oldest segment and forgets it; False when there was none to read."""
        async with self._replaying:
            return await self._replay_oldest_held()

    async def _replay_oldest_held(self) -> bool:
        oldest = await self._spool.oldest()
        if oldest is None:
            return False
        path, written_for, records = oldest
        sending_to = self._kafka.destination
        if not sending_to.cluster_id:
            raise PublishUnavailable("the Kafka cluster's id is not known yet")
        self._spool.destination = sending_to  # a reconnect may have reached another cluster
        why = refusal(written_for, sending_to)
        if why is not None:
            self._spool.set_aside(path, why)
            return True
        sent = self._progress.get(path, 0)
        while sent < len(records):
            chunk = records[sent : sent + _REPLAY_CHUNK]
            if self._chunk is None or self._chunk[:2] != (path, sent):
                self._chunk = (path, sent, PendingSends())
            await self._kafka.publish(chunk, self._chunk[2])
            sent += len(chunk)
            self._progress[path] = sent
            self._chunk = None
        await self._spool.delete(path)
        self._progress.pop(path, None)
        log.info("spool: sent %d event(s) to Kafka; %d left", len(records), self._spool.records)
        return True

    async def stop(self, timeout_s: float = FLUSH_BOUND_S) -> None:
        """Stops replaying (what is left stays on disk for the next start) and disconnects."""
        for task in self._tasks:
            task.cancel()
        # An erasure's rewrites finish before the spool closes under them.
        await asyncio.gather(*self._tasks, *self._forgetting, return_exceptions=True)
        await self._spool.close()
        await self._kafka.stop(timeout_s)
        if self._spool.records:
            log.warning("stopping with %d event(s) in the spool", self._spool.records)


def _done_after(link: asyncio.Future[None], before: asyncio.Future[None] | None) -> None:
    """Marks a chain's `link` done: now, or once the link `before` it is."""
    if before is None or before.done():
        link.set_result(None)
    else:
        before.add_done_callback(lambda _: link.set_result(None))


async def open_durable_publisher(
    kafka: Broker, spool_dir: Path, *, max_bytes: int, metrics: InferenceMetrics | None = None
) -> DurablePublisher:
    spool = await Spool.open(spool_dir, max_bytes=max_bytes, destination=kafka.destination)
    return DurablePublisher(kafka, spool, metrics)
