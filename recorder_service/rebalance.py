"""What the fetch loop and the rebalance listener share, and the listener itself.

When partitions are revoked, the batches being written (at most two, committed in order) are
finished and committed under the old generation if that takes less than `wait_s`; otherwise
what is not finished is abandoned uncommitted, and whoever gets the partitions reads it again
(writing it twice adds nothing). An abandoned batch stops before its next transaction, and the
revocation waits for the one it may be in, so none of its rows commit after the partitions
moved on. A batch waiting out an outage gives up at once (and so does
the one behind it, after the write it may be in the middle of). No lock is
shared: aiokafka runs the listener while a rebalance holds `getmany()`, so a lock the fetch
loop keeps across a poll would deadlock (aiokafka#335); the writer, which the listener may wait
for, never polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from aiokafka import ConsumerRebalanceListener, TopicPartition

from recorder_service.health import RecorderHealth

log = logging.getLogger(__name__)

# How long an abandoned batch may take to end: the transaction it is in (its statements are
# bounded at 60 s each by recorder_service.service's pool), then no other.
ABANDONED_STOP_S = 180.0


@dataclass(eq=False)
class InFlight:
    abandoned: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)


class BatchGuard:
    def __init__(self) -> None:
        # Bumped as each revocation starts: records fetched in an older epoch are not ours to
        # write or commit.
        self.epoch = 0
        self.revoking = False
        # From a revocation until the next assignment: no partition is this member's to read.
        self.reassigning = False
        self._in_flight: list[InFlight] = []  # oldest first

    def begin(self) -> InFlight:
        flight = InFlight()
        self._in_flight.append(flight)
        return flight

    def end(self, flight: InFlight) -> None:
        flight.done.set()
        if flight in self._in_flight:
            self._in_flight.remove(flight)

    async def revoke(self, wait_s: float) -> None:
        """Lets the batches in flight finish within `wait_s`, else abandons those that did not."""
        # First: a batch fetched but not yet handed to the writer must not be handed over
        # while (or after) the partitions move, nor another read meanwhile.
        self.epoch += 1
        self.reassigning = True
        flights = list(self._in_flight)
        if not flights:
            return
        self.revoking = True
        try:
            # Waited for even when one waits out an outage: that one gives up at once (it sees
            # `revoking`), but the other may be mid-transaction, and its rows must not land
            # after the partitions have moved on, beside the next owner's (whose erasure of a
            # student could then miss a prediction this write commits).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    for flight in flights:
                        await flight.done.wait()
            abandoned = [flight for flight in flights if not flight.done.is_set()]
            for flight in abandoned:
                flight.abandoned = True
            # An abandoned batch starts no transaction more (each checks first), but one may
            # be under way; it ends with its statement, each bounded by the pool's command
            # timeout. Until then the partitions stay here.
            try:
                async with asyncio.timeout(ABANDONED_STOP_S):
                    for flight in abandoned:
                        await flight.done.wait()
            except TimeoutError:
                log.error(
                    "an abandoned batch did not end within %g s; its partitions move regardless",
                    ABANDONED_STOP_S,
                )
        finally:
            self.revoking = False


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, guard: BatchGuard, health: RecorderHealth, wait_s: float) -> None:
        self._guard = guard
        self._health = health
        self._wait_s = wait_s

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._guard.revoke(self._wait_s)
        self._health.forget(revoked)
        if revoked:
            log.info("partitions revoked: %s", _names(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._guard.reassigning = False
        self._health.rebalances += 1
        self._health.forget(assigned)
        if assigned and not self._health.first_assigned_at:
            self._health.first_assigned_at = time.time()
        log.info("partitions assigned: %s", _names(assigned))


def _names(partitions: set[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions)) or "none"
