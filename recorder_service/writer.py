"""Finishing one batch: its rows to the database, its dead letters to their topic, then its
offsets, in that order, each step retried with backoff through outages.

It runs as a task beside the fetch loop, so the next batch is fetched and decoded while the
database works on this one, and so a rebalance can wait for it to finish (and commit under
the old generation) without waiting on the fetch loop, which the rebalance itself holds.
Two batches may be under way at once, so that the database starts on the next while this one
ends (its last shard, its commit, its offsets): their offsets are still committed in order,
and the store never writes one student's rows in both at once (store.PostgresStore.write).
While the database (or the dead-letter topic) is away it pauses every assigned partition and
commits nothing; the fetch loop keeps polling so the group keeps this member.

No record can stop it: the store reports the rows it refuses (whatever the error), the
dead-letter sink sends any letter in some form, and what either of them raises is therefore
the infrastructure's failure, waited out like an outage, never a reason to exit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from aiokafka.errors import KafkaError

from recorder_service.batching import Batch
from recorder_service.dead_letters import DeadLetterUnavailable, dead_letter
from recorder_service.health import RecorderHealth, State
from recorder_service.ports import Consumer, DeadLetterSink, Store
from recorder_service.rebalance import BatchGuard, InFlight
from recorder_service.sharding import Turn, TurnGivenUp
from recorder_service.store import DatabaseUnusable, WriteResult, describe
from recorder_service.triage import Rejected, Triaged
from studentperf.retry import Backoff

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_RETRY_S = 0.2
MAX_RETRY_S = 5.0
# How often a wait between retries looks whether the batch must be given up instead.
CHECK_S = 0.05


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch, decoded: ready to be written."""

    batch: Batch
    triaged: Triaged


class GivenUp(Exception):
    """The batch is dropped uncommitted (stopping, or its partitions revoked); its records
    are read again by whoever holds the partitions next, and writing them again adds nothing."""


def _outage_text(error: Exception) -> str:
    if isinstance(error, (DeadLetterUnavailable, DatabaseUnusable)):
        return f"{type(error).__name__}: {error}"  # our own texts, which hold no values
    return describe(error)


class BatchWriter:
    def __init__(
        self,
        store: Store,
        dead_letters: DeadLetterSink,
        health: RecorderHealth,
        guard: BatchGuard,
        *,
        commit_timeout_s: float,
    ) -> None:
        self._store = store
        self._dead_letters = dead_letters
        self._health = health
        self._guard = guard
        self._commit_timeout_s = commit_timeout_s
        # The batches under way whose last try failed: an outage lasts while any does.
        self._failing: set[InFlight] = set()
        self._flights: dict[asyncio.Task[bool], InFlight] = {}

    def start(
        self,
        consumer: Consumer,
        prepared: Prepared,
        stop: asyncio.Event,
        before: asyncio.Task[bool] | None = None,
    ) -> asyncio.Task[bool]:
        """Starts finishing the batch in a task of its own. Its place in the rebalance's
        watch and in the order shards are written is taken here, at once, in the order the
        batches are handed over."""
        flight = self._guard.begin()
        prior = self._flights.get(before) if before is not None else None
        # A batch behind one given up writes nothing either: where that one wrote nothing,
        # these later records would be stored before it, and an import's later copy become
        # its first once both are read again.
        turn = self._store.turn(lambda: flight.abandoned or (prior is not None and prior.abandoned))
        task = asyncio.create_task(self._finish(consumer, prepared, stop, flight, turn, before))
        self._flights[task] = flight
        task.add_done_callback(lambda done: self._flights.pop(done, None))
        return task

    async def _finish(
        self,
        consumer: Consumer,
        prepared: Prepared,
        stop: asyncio.Event,
        flight: InFlight,
        turn: Turn,
        before: asyncio.Task[bool] | None,
    ) -> bool:
        """Writes the batch, dead-letters what cannot be written, and commits its offsets once
        `before` (the batch before it, still being finished) has ended; returns False when
        the batch was given up uncommitted. A batch whose predecessor was given up is given
        up too: its offsets would commit past records nobody wrote."""
        batch, triaged = prepared.batch, prepared.triaged
        try:
            if triaged.erasures and before is not None:
                # The batch before may still send letters of a student this batch erases (its
                # refused records of before the erasure): sent after the audit row, which tells
                # EraseStudent the student is gone, they would be copies made after the erasure.
                await _after(before)
            written = await self._until_done(
                lambda: self._write(triaged, turn), consumer, flight, stop, "database"
            )
            # An erased student's refused record is skipped as the student's events are: its
            # letter would be a new copy of the student's data (recorder_service/erasure.py).
            rejected = [
                r for i, r in enumerate(triaged.rejected) if i not in written.erased_refused
            ] + [
                Rejected(triaged.sources[r.index], r.reason, r.error, r.attempts)
                for r in written.refused
            ]
            letters = [dead_letter(r, batch.first_seen_at) for r in rejected]
            if before is not None:
                # First, so that a batch given up behind one given up sends no dead letters
                # (they would be sent again when its records are read again).
                await _after(before)
            await self._until_done(
                lambda: self._dead_letters.send(letters),
                consumer,
                flight,
                stop,
                "dead-letter topic",
            )
            if flight.abandoned:
                raise GivenUp
            self._account(batch, written, rejected)
            await self._commit(consumer, batch)
        except GivenUp:
            flight.abandoned = True  # before its turn ends: the batch behind sees it
            if not stop.is_set():
                self._health.batches_abandoned += 1
                log.warning("batch of %d abandoned uncommitted: partitions revoked", batch.size)
            return False
        finally:
            turn.end()
            self._failing.discard(flight)
            self._guard.end(flight)
            if flight.abandoned and not self._failing and self._health.state is State.DEGRADED:
                # The batch that waited out the outage was given up (a revocation): none waits
                # now, and consuming goes on; the next batch that meets the outage says so again.
                # Left degraded, an idle member would report an outage that may be long over.
                self._health.running()
        return True

    async def _write(self, triaged: Triaged, turn: Turn) -> WriteResult:
        started = time.perf_counter()
        named = triaged.named()
        written = await self._store.write(triaged.rows, triaged.erasures, turn, named)
        # A batch of rejected records naming no student touches no database.
        if triaged.rows or triaged.erasures or named:
            self._health.write_seconds.observe(time.perf_counter() - started)
        return written

    async def _until_done(
        self,
        action: Callable[[], Awaitable[T]],
        consumer: Consumer,
        flight: InFlight,
        stop: asyncio.Event,
        what: str,
    ) -> T:
        pauses = Backoff(FIRST_RETRY_S, MAX_RETRY_S).pauses()
        while True:
            if flight.abandoned:
                raise GivenUp
            try:
                result = await action()
            except TurnGivenUp:
                raise GivenUp from None
            except Exception as error:  # see the module: no record gets here
                self._failing.add(flight)
                self._health.degraded(f"{what} unavailable: {_outage_text(error)}")
                self._health.retries += 1
            else:
                self._failing.discard(flight)
                # Over only when no batch under way is waiting one out.
                if self._health.state is State.DEGRADED and not self._failing:
                    consumer.resume(*consumer.paused())
                    self._health.running()
                return result
            consumer.pause(*consumer.assignment())
            await self._wait(next(pauses), flight, stop)

    async def _wait(self, delay: float, flight: InFlight, stop: asyncio.Event) -> None:
        """Waits `delay` before the next try; raises GivenUp when the batch cannot be kept."""
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            # A revocation: the batch cannot be finished now, so the rebalance need not wait.
            if stop.is_set() or flight.abandoned or self._guard.revoking:
                flight.abandoned = True
                raise GivenUp
            await asyncio.sleep(min(CHECK_S, max(0.0, deadline - time.monotonic())))

    def _account(self, batch: Batch, written: WriteResult, rejected: list[Rejected]) -> None:
        self._health.batches += 1
        self._health.batch_size.observe(batch.size)
        self._health.transactions += written.transactions
        self._health.events_stored += written.stored
        self._health.events_already_stored += written.already_stored
        erased = written.erased + len(written.erased_refused)
        self._health.events_erased += erased
        for applied in written.erasures:
            if applied.new:
                self._health.erasures_applied += 1
                # The event id and the counts only: the audit row has the rest, hashed.
                log.info("erasure %s applied: removed %s", applied.event_id, dict(applied.removed))
        if erased:
            log.info("skipped %d event(s) of erased students", erased)
        for r in rejected:
            self._health.dead_lettered[r.reason.value] += 1
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
        assigned = consumer.assignment()
        offsets = {tp: o for tp, o in batch.next_offsets().items() if tp in assigned}
        if not offsets:
            return
        try:
            await asyncio.wait_for(consumer.commit(offsets), self._commit_timeout_s)
        except (KafkaError, TimeoutError) as error:
            # Not committing is always safe: the records come again and add nothing.
            self._health.commits_refused += 1
            log.warning("offset commit refused (%s: %s)", type(error).__name__, error)
        else:
            self._health.commits += 1
            self._health.last_commit_at = time.time()
            self._health.committed.update(offsets)


async def _after(before: asyncio.Task[bool]) -> None:
    """Returns once the batch before has ended; raises GivenUp when it was given up."""
    await asyncio.wait({before})  # not `await before`: a cancel would reach it
    if not before.result():
        raise GivenUp
