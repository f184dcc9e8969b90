"""Splitting a batch by student, and the order in which batches write each shard
(recorder_service/sharding.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from recorder_service.erasure import Erasure, Named
from recorder_service.rows import STAGING_COLUMNS, StagingRow
from recorder_service.sharding import ShardTurns, TurnGivenUp, shard_of, split
from tests.unit.loop_turns import turns

STUDENT = STAGING_COLUMNS.index("student_id")


def row(student_id: str, offset: int) -> StagingRow:
    values: list[object] = [None] * len(STAGING_COLUMNS)
    values[0], values[STUDENT] = offset, student_id  # log_offset is the first column
    return tuple(values)


def erasure(student_id: str) -> Erasure:
    return Erasure(f"e-{student_id}", student_id, datetime(2026, 1, 1, tzinfo=UTC), "t", "")


def test_a_students_rows_and_erasures_share_one_shard_in_batch_order() -> None:
    students = [f"s{i}" for i in range(50)]
    rows = [row(students[(i * 7) % 50], i) for i in range(400)]
    erasures = [erasure(s) for s in students[::5]]

    parts = split(rows, erasures, 2)

    assert len(parts) == 2  # fifty students fill both shards
    seen: dict[str, int] = {}
    for number, part in enumerate(parts):
        assert part.indexes == sorted(part.indexes)  # the batch's (log) order is kept
        assert [rows[i] for i in part.indexes] == part.rows
        for r in part.rows:
            assert seen.setdefault(str(r[STUDENT]), number) == number
        for e in part.erasures:
            assert seen.setdefault(e.student_id, number) == number
    assert sorted(i for part in parts for i in part.indexes) == list(range(len(rows)))
    assert sum(len(part.erasures) for part in parts) == len(erasures)


def test_the_shard_of_a_student_is_the_same_in_every_process() -> None:
    # Another process, another string-hash salt: the shards must not depend on it.
    students = [f"student-{i}" for i in range(64)]
    code = (
        "from recorder_service.sharding import shard_of;"
        f"print([shard_of(s, 4) for s in {students!r}])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    here = [shard_of(s, 4) for s in students]
    assert other.stdout.strip() == str(here)
    assert set(here) == {0, 1, 2, 3}


def test_one_shard_or_one_student_is_the_batch_unsplit() -> None:
    rows = [row("alice", i) for i in range(5)]
    assert [p.indexes for p in split(rows, [erasure("alice")], 3)] == [[0, 1, 2, 3, 4]]
    mixed = [row(f"s{i}", i) for i in range(20)]
    assert [p.indexes for p in split(mixed, [], 1)] == [list(range(20))]
    assert split([], [], 2) == split([], [], 1) == []


def test_a_refused_record_s_student_is_looked_up_in_that_student_s_shard() -> None:
    # Where the student's erasures of every batch are applied: in turn, before the lookup.
    at = datetime(2026, 1, 1, tzinfo=UTC)
    students = [f"s{i}" for i in range(20)]
    named = [Named(i, student, at) for i, student in enumerate(students)]

    parts = split([], [], 2, named)  # a batch of refused records only still has its shards

    assert sorted(n.index for part in parts for n in part.named) == list(range(20))
    for part in parts:
        assert not part.empty and not part.rows and not part.erasures
        assert {shard_of(n.student_id, 2) for n in part.named} == {part.number}
    [whole] = split([], [], 1, named)
    assert whole.named == named


async def test_each_shard_is_written_in_the_order_the_batches_took_their_turns() -> None:
    """A batch writes a shard only once every batch before it is done with that shard (wrote
    it, or has none of its students there), whatever the batches between did."""
    order = ShardTurns(2)
    first, second, third = order.take(), order.take(), order.take()
    await first.wait(0)  # no batch before it
    second_at_0 = asyncio.create_task(second.wait(0))
    await turns(5)
    assert not second_at_0.done()  # the first is still writing shard 0
    first.done_with(0)
    await turns(5)
    assert second_at_0.done()
    # The second has none of its students in shard 1 and says so early: the third's turn
    # there comes as soon as the first is done with it, not at the second's end.
    second.done_with(1)
    third_at_1 = asyncio.create_task(third.wait(1))
    await turns(5)
    assert not third_at_1.done()
    first.done_with(1)
    await turns(5)
    assert third_at_1.done()


async def test_a_batch_given_up_while_waiting_writes_nothing_and_its_end_frees_all() -> None:
    """Its partitions revoked while it waited, a batch must not write when its turn comes
    (another member may write those students by now); its end lets the batch after it write
    every shard, though it wrote none."""
    revoked = False
    order = ShardTurns(2)
    first, second, third = order.take(), order.take(lambda: revoked), order.take()
    waiting = asyncio.create_task(second.wait(0))
    await turns(5)
    revoked = True
    first.end()
    await turns(5)
    assert waiting.done()
    with pytest.raises(TurnGivenUp):
        waiting.result()
    second.end()
    third_waits = [asyncio.create_task(third.wait(shard)) for shard in range(2)]
    await turns(5)
    assert all(wait.done() for wait in third_waits)
