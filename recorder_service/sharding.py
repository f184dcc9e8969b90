"""Splitting a batch by student into shards that are written concurrently, each over its own
database connection and in its own transaction (recorder_service/store.py).

A student's rows and erasures always fall in the same shard (a stable hash of the student id),
so each shard's facts merge, erasures and outcome upserts touch rows no other shard touches:
the shards never wait for each other's row locks, and one student's events are merged in
their order within the one transaction that holds them all. The only rows every shard may
write are shared ones such as model_versions, inserted in a fixed order (recording.SPREAD),
so shards can wait on each other there but never deadlock.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from recorder_service.erasure import Erasure, Named
from recorder_service.rows import STAGING_COLUMNS, StagingRow

_STUDENT = STAGING_COLUMNS.index("student_id")


@dataclass(slots=True)
class Shard:
    """The rows of some students, in the batch's order; `indexes[i]` is the place of
    `rows[i]` in the batch (a refusal names a row by that place). `number` is the shard's
    place among all shards: the same students' in every batch."""

    number: int
    indexes: list[int] = field(default_factory=list)
    rows: list[StagingRow] = field(default_factory=list)
    erasures: list[Erasure] = field(default_factory=list)
    # The students of the batch's refused records that fall here, looked up with the rows'.
    named: list[Named] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.rows and not self.erasures and not self.named


def shard_of(student_id: str, shards: int) -> int:
    """The same shard for the same student in every batch and every process (crc32, not
    Python's salted hash)."""
    return zlib.crc32(student_id.encode()) % shards


def split(
    rows: Sequence[StagingRow],
    erasures: Sequence[Erasure],
    shards: int,
    named: Sequence[Named] = (),
) -> list[Shard]:
    """The batch's non-empty shards (at most `shards`), each keeping the batch's order."""
    if shards == 1:  # every student's: no hash to take
        whole = Shard(0, list(range(len(rows))), list(rows), list(erasures), list(named))
        return [] if whole.empty else [whole]
    parts = [Shard(number) for number in range(shards)]
    for index, row in enumerate(rows):
        part = parts[shard_of(str(row[_STUDENT]), shards)]
        part.indexes.append(index)
        part.rows.append(row)
    for erasure in erasures:
        parts[shard_of(erasure.student_id, shards)].erasures.append(erasure)
    # In the shard of the student it names, after that student's erasures of earlier batches.
    for name in named:
        parts[shard_of(name.student_id, shards)].named.append(name)
    return [part for part in parts if not part.empty]


class TurnGivenUp(Exception):
    """The batch was given up while it waited for its turn: nothing of it was written."""


class ShardTurns:
    """The order in which batches write each shard number: the batch handed over first writes
    it first. With two batches under way, a batch whose shard failed keeps its place there
    while it waits to try again, so a later batch never writes that shard's students before
    it: an erasure retried after a later event of its student would delete that event."""

    def __init__(self, shards: int) -> None:
        self._last: list[asyncio.Future[None] | None] = [None] * shards

    def take(self, given_up: Callable[[], bool] = lambda: False) -> Turn:
        """The next batch's place; taken in the order the batches are handed over.
        `given_up` says when the batch may no longer write (its partitions revoked)."""
        loop = asyncio.get_running_loop()
        mine = [loop.create_future() for _ in self._last]
        turn = Turn(after=list(self._last), mine=mine, given_up=given_up)
        self._last = [*mine]
        return turn


@dataclass(frozen=True, slots=True)
class Turn:
    """One batch's place at each shard: `after[n]` is done once the batch before it is done
    with shard n; `mine[n]` once this batch is (and so every batch before it)."""

    after: list[asyncio.Future[None] | None]
    mine: list[asyncio.Future[None]]
    given_up: Callable[[], bool]

    async def wait(self, shard: int) -> None:
        """Until this batch may write `shard`; raises TurnGivenUp if it may no longer write."""
        earlier = self.after[shard]
        if earlier is not None and not earlier.done():
            await asyncio.wait({earlier})  # not `await earlier`: a cancel would reach it
        self.check()

    def check(self) -> None:
        # A batch given up while it waited must not write after all: its partitions may be
        # another member's by now, writing the same students (and erasing them) from its
        # last commit.
        if self.given_up():
            raise TurnGivenUp

    def done_with(self, shard: int) -> None:
        """Shard `shard` written (committed once), or not this batch's: the next batch's turn
        there comes as soon as every batch before this one is done with it too."""
        mine, earlier = self.mine[shard], self.after[shard]
        if mine.done():
            return
        if earlier is None or earlier.done():
            _finish(mine)
        else:
            earlier.add_done_callback(lambda _: _finish(mine))

    def end(self) -> None:
        """The batch is committed or given up: it writes nothing more."""
        for shard in range(len(self.mine)):
            self.done_with(shard)


def _finish(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
