"""What the fetch loop and the rebalance listener share, and the listener itself.

When partitions are revoked, the batch being written is finished and committed under the old
generation if that takes less than `wait_s`; otherwise, or when the loop is waiting out an
outage, it is abandoned uncommitted, and whoever gets the partitions reads it again (writing it
twice adds nothing). No lock is shared: aiokafka runs the listener while a rebalance holds
`getmany()`, so a lock the loop keeps across a poll would deadlock (aio-libs/aiokafka#335).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from aiokafka import ConsumerRebalanceListener, TopicPartition

from recorder_service.batching import Batch
from recorder_service.health import Status

log = logging.getLogger(__name__)


@dataclass(eq=False)
class InFlight:
    batch: Batch
    abandoned: bool = False
    # True while the loop polls to keep its membership during an outage: it cannot finish
    # the batch then, and its poll waits for the rebalance to end.
    polling: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)


class BatchGuard:
    def __init__(self) -> None:
        # Bumped once per revocation: records fetched in an older epoch are not ours to commit.
        self.epoch = 0
        self.revoking = False
        self._in_flight: InFlight | None = None

    def begin(self, batch: Batch) -> InFlight:
        self._in_flight = InFlight(batch)
        return self._in_flight

    def end(self, flight: InFlight) -> None:
        flight.done.set()
        if self._in_flight is flight:
            self._in_flight = None

    async def revoke(self, wait_s: float) -> None:
        """Lets the batch in flight finish within `wait_s`, else abandons it."""
        flight = self._in_flight
        self.revoking = True
        try:
            if flight is not None and not flight.polling:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(flight.done.wait(), wait_s)
            if flight is not None and not flight.done.is_set():
                flight.abandoned = True
        finally:
            self.revoking = False
            self.epoch += 1


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, guard: BatchGuard, status: Status, wait_s: float) -> None:
        self._guard = guard
        self._status = status
        self._wait_s = wait_s

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._guard.revoke(self._wait_s)
        if revoked:
            log.info("partitions revoked: %s", _names(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._status.rebalances += 1
        log.info("partitions assigned: %s", _names(assigned))


def _names(partitions: set[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions)) or "none"
