"""Batches bounded by count and by time; records from before a rebalance dropped."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from recorder_service.batching import Chunk, collect
from tests.unit.recorder_fakes import TOPIC, FakeRecord, records

P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


class ScriptedPoll:
    """Returns the scripted chunks; each poll advances a fake clock by `step_s`."""

    def __init__(self, *chunks: dict[TopicPartition, list[FakeRecord]], step_s: float = 0.01):
        self.chunks = list(chunks)
        self.now = 0.0
        self.step_s = step_s
        self.epoch = 0
        self.bump_after: int | None = None
        self.asked: list[int] = []

    async def __call__(self, *, timeout_ms: int, max_records: int) -> Chunk:
        self.asked.append(max_records)
        self.now += self.step_s
        if self.bump_after is not None and len(self.asked) == self.bump_after:
            self.epoch += 1
        return self.chunks.pop(0) if self.chunks else {}


async def gather(poll: ScriptedPoll, **limits: float) -> list[tuple[TopicPartition, int]] | None:
    batch = await collect(
        poll,
        lambda: poll.epoch,
        asyncio.Event(),
        max_events=int(limits.get("max_events", 100)),
        max_wait_s=limits.get("max_wait_s", 1.0),
        clock=lambda: poll.now,
    )
    if batch is None:
        return None
    return [(TopicPartition(r.topic, r.partition), r.offset) for r in batch.records()]


async def test_a_batch_closes_when_full_and_asks_only_for_what_fits() -> None:
    poll = ScriptedPoll({P0: records(0, [b"a"] * 3)}, {P1: records(1, [b"b"] * 2)})
    assert await gather(poll, max_events=5) == [(P0, 0), (P0, 1), (P0, 2), (P1, 0), (P1, 1)]
    assert poll.asked == [5, 2]


async def test_a_batch_closes_when_its_time_is_up() -> None:
    poll = ScriptedPoll({P0: records(0, [b"a"])}, step_s=0.3)
    got = await gather(poll, max_wait_s=1.0)
    assert got == [(P0, 0)]
    assert len(poll.asked) == 5  # the first record, then polls until 1 s has passed


async def test_records_from_before_a_rebalance_are_dropped() -> None:
    poll = ScriptedPoll({P0: records(0, [b"a"] * 2)}, {P1: records(1, [b"b"], 5)}, step_s=0.3)
    poll.bump_after = 2  # the second poll returns after a rebalance
    assert await gather(poll) == [(P1, 5)]


async def test_stop_before_any_record_gives_no_batch() -> None:
    poll = ScriptedPoll()
    stop = asyncio.Event()
    stop.set()
    assert await collect(poll, lambda: 0, stop, max_events=10, max_wait_s=1) is None


@pytest.mark.parametrize("cause", ["stop", "interrupted"])
async def test_a_begun_batch_is_handed_over_at_once_on_stop_or_interruption(cause: str) -> None:
    """A stop, or a writer that needs the loop's attention (`interrupted`), does not wait out
    the batch's time nor add the next chunk: what was gathered is handed over as it is."""
    poll = ScriptedPoll({P0: records(0, [b"a"])}, {P1: records(1, [b"b"])})
    stop = asyncio.Event()

    async def polled(*, timeout_ms: int, max_records: int) -> Chunk:
        chunk = await poll(timeout_ms=timeout_ms, max_records=max_records)
        if cause == "stop":
            stop.set()
        return chunk

    batch = await collect(
        polled,
        lambda: 0,
        stop,
        max_events=100,
        max_wait_s=60.0,
        interrupted=lambda: cause == "interrupted" and bool(poll.asked),
        clock=lambda: poll.now,
    )
    assert batch is not None
    assert [(r.partition, r.offset) for r in batch.records()] == [(0, 0)]
    assert poll.asked == [100]
