"""Micro-batching, alone with fakes and inside the prediction core: no network."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from inference_service.batcher import MicroBatcher
from inference_service.core import PredictionCore, PublishUnavailable
from studentperf import envelope
from studentperf.envelope import KafkaRecord
from tests.unit.test_core import AgeModel, RecordingPublisher, student


class Doubler:
    """Doubles each number; refuses negative ones alone and fails a batch holding 999."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay_s = delay_s

    async def __call__(self, items: Sequence[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        await asyncio.sleep(self.delay_s)
        if 999 in items:
            raise RuntimeError("unlucky batch")
        return [ValueError(f"negative {n}") if n < 0 else 2 * n for n in items]


async def test_concurrent_callers_share_a_batch_and_each_gets_its_own_result() -> None:
    process = Doubler()
    batcher = MicroBatcher(process, max_wait_s=0.05, max_items=100)
    results = await asyncio.gather(*(batcher.submit(n) for n in range(20)))
    assert results == [2 * n for n in range(20)]
    assert process.batches == [list(range(20))]  # in arrival order, in one batch


async def test_a_lone_caller_does_not_wait_for_the_bound() -> None:
    batcher = MicroBatcher(Doubler(), max_wait_s=3600.0, max_items=100)
    # Waiting for the bound would take an hour; the timeout only turns that into a failure.
    async with asyncio.timeout(60):
        assert await batcher.submit(4) == 8


class Gated:
    """Doubles; records each batch and its start (loop clock); the first runs until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.started_at: list[float] = []

    async def __call__(self, items: Sequence[int]) -> list[int | Exception]:
        self.started_at.append(asyncio.get_running_loop().time())
        self.batches.append(list(items))
        if len(self.batches) == 1:
            await self.release.wait()
        return [2 * n for n in items]


async def test_batches_grow_while_one_is_processed_and_the_wait_is_bounded() -> None:
    process = Gated()
    batcher = MicroBatcher(process, max_wait_s=0.02, max_items=100)
    first = asyncio.ensure_future(batcher.submit(1))
    while not process.batches:  # noqa: ASYNC110 (the fake has no event to wait on)
        await asyncio.sleep(0)
    submitted_at = asyncio.get_running_loop().time()
    later = [asyncio.ensure_future(batcher.submit(n)) for n in (2, 3, 4)]
    async with asyncio.timeout(60):  # were the bound ignored, it would wait for the release
        while len(process.batches) < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
    # The second batch went while the first still ran (it runs until released), so the bound
    # sent it; and not before the bound: a loop timer fires at most one clock tick early, and a
    # busy machine only makes the wait longer.
    assert not first.done()
    assert process.batches == [[1], [2, 3, 4]]
    tick = time.get_clock_info("monotonic").resolution  # the loop's clock
    assert process.started_at[1] - submitted_at >= 0.02 - tick
    process.release.set()
    assert await asyncio.gather(first, *later) == [2, 4, 6, 8]


async def test_a_full_batch_goes_at_once() -> None:
    process = Doubler()
    batcher = MicroBatcher(process, max_wait_s=5.0, max_items=3)
    assert await asyncio.gather(*(batcher.submit(n) for n in range(7))) == [
        0,
        2,
        4,
        6,
        8,
        10,
        12,
    ]
    assert process.batches == [[0, 1, 2], [3, 4, 5], [6]]


async def test_errors_reach_only_their_callers() -> None:
    batcher = MicroBatcher(Doubler(), max_wait_s=0.05, max_items=3)
    results = await asyncio.gather(
        *(batcher.submit(n) for n in (1, -2, 3, 999, 5, 6)), return_exceptions=True
    )
    assert results[0] == 2 and results[2] == 6
    assert isinstance(results[1], ValueError)  # its own failure only
    # 999's batch failed as a whole: each of its callers gets the error.
    assert all(isinstance(r, RuntimeError) for r in results[3:])


async def test_a_caller_going_away_does_not_cancel_the_others() -> None:
    process = Doubler(delay_s=0.05)
    batcher = MicroBatcher(process, max_wait_s=0.01, max_items=10)
    leaving = asyncio.ensure_future(batcher.submit(1))
    staying = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0.01)
    leaving.cancel()
    assert await staying == 4
    assert leaving.cancelled()
    await batcher.drain()


class CountingPublisher(RecordingPublisher):
    def __init__(self, fail: bool = False) -> None:
        super().__init__(fail)
        self.calls = 0

    async def publish(self, records: Sequence[KafkaRecord]) -> None:
        self.calls += 1
        await asyncio.sleep(0.001)
        await super().publish(records)


def batched_core(publisher: RecordingPublisher) -> PredictionCore:
    return PredictionCore(
        AgeModel(), publisher, max_batch_size=10, microbatch_wait_s=0.05, microbatch_max=64
    )


async def test_batched_predict_calls_share_one_publish_and_keep_their_own_answers() -> None:
    publisher = CountingPublisher()
    core = batched_core(publisher)
    ages = list(range(20, 60))
    predictions = await asyncio.gather(*(core.predict(student(f"s{a}", a)) for a in ages))
    assert [p.predicted_final_score for p in predictions] == [float(a) for a in ages]
    assert publisher.calls == 1
    events = [envelope.decode(r.value) for r in publisher.records]
    assert [e.event_id for e in events] == [p.prediction_id for p in predictions]
    assert [r.key for r in publisher.records] == [f"s{a}".encode() for a in ages]
    assert core.in_flight == 0


async def test_batched_predict_fails_every_caller_whose_events_were_not_published() -> None:
    core = batched_core(CountingPublisher(fail=True))
    results = await asyncio.gather(
        *(core.predict(student(f"s{a}", a)) for a in range(20, 25)), return_exceptions=True
    )
    assert all(isinstance(r, PublishUnavailable) for r in results)


async def test_explanations_bypass_the_batcher() -> None:
    publisher = CountingPublisher()
    core = batched_core(publisher)
    answers = await asyncio.gather(
        core.predict(student("a", 30), top_factors=2), core.predict(student("b", 40))
    )
    assert len(answers[0].explanation.top_factors) == 2
    assert not answers[1].HasField("explanation")
    assert publisher.calls == 2


def test_the_batcher_refuses_a_zero_wait() -> None:
    with pytest.raises(ValueError, match="positive wait"):
        MicroBatcher(Doubler(), max_wait_s=0, max_items=1)
