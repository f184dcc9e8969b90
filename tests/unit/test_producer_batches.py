"""When the service's own producer batches leave (inference_service.producer_batches), against a
producer that records what it is handed and settles it when told: the order of one partition's
batches, a generation at a time, holding only while busy, and failures."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, NotLeaderForPartitionError

from inference_service import producer_batches
from inference_service.producer_batches import Load, OpenBatches, RecordTooLarge
from studentperf.envelope import KafkaRecord
from tests.unit.loop_turns import turns


class Builder:
    def __init__(self, room: int) -> None:
        self.values: list[bytes] = []
        self.room = room
        self.closed = False

    def append(self, *, key: bytes, value: bytes, timestamp: None, headers: Any) -> object:
        if self.closed or len(value) > self.room:
            return None
        self.room -= len(value)
        self.values.append(value)
        return object()

    def close(self) -> None:
        self.closed = True


class Producer:
    """Takes batches (`send_batch`), each settled later by `ack` or `fail`; `refuse` makes it
    refuse the next batch of a partition."""

    def __init__(self, batch_bytes: int = 1000) -> None:
        self.batch_bytes = batch_bytes
        self.taken: list[tuple[int, list[bytes], asyncio.Future[None]]] = []
        self.refused: dict[int, Exception] = {}
        self.took = asyncio.Event()

    def create_batch(self) -> Builder:
        return Builder(self.batch_bytes)

    async def send_batch(self, builder: Builder, topic: str, *, partition: int) -> Any:
        assert builder.closed, "a batch is closed before it is handed over"
        if partition in self.refused:
            raise self.refused.pop(partition)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.taken.append((partition, builder.values, future))
        self.took.set()
        return future

    def ack_all(self) -> None:
        for _, _, future in self.taken:
            if not future.done():
                future.set_result(None)

    def values(self) -> list[tuple[int, list[bytes]]]:
        return [(partition, values) for partition, values, _ in self.taken]


class Busy(Load):
    def __init__(self, busy: bool) -> None:
        super().__init__()
        self.is_busy = busy

    def busy(self) -> bool:
        return self.is_busy


def record(value: str) -> KafkaRecord:
    return KafkaRecord(key=b"k", value=value.encode(), headers=[])


def batches(producer: Producer, busy: bool = False, hold_s: float = 0.05) -> OpenBatches:
    return OpenBatches(producer, "t", load=Busy(busy), hold_s=hold_s)


async def test_a_lone_record_leaves_at_the_end_of_its_loop_turn() -> None:
    producer = Producer()
    open_batches = batches(producer)
    ack = open_batches.add(0, record("a"))
    assert producer.taken == []  # the other publishes of this turn may still join
    await turns(3)
    assert producer.values() == [(0, [b"a"])]
    producer.ack_all()
    await ack


async def test_what_comes_while_a_generation_is_out_leaves_together_once_it_is_settled() -> None:
    producer = Producer()
    open_batches = batches(producer)
    first = open_batches.add(0, record("a"))
    await turns(3)
    later = [open_batches.add(p, record(v)) for p, v in ((0, "b"), (1, "c"), (0, "d"))]
    await asyncio.sleep(0.02)
    assert producer.values() == [(0, [b"a"])], "nothing more leaves while one is out"
    producer.ack_all()
    await first
    await turns(3)
    assert producer.values() == [(0, [b"a"]), (0, [b"b", b"d"]), (1, [b"c"])]
    assert later[0] is later[2]  # one batch, one future
    producer.ack_all()
    await asyncio.gather(*later)


async def test_a_busy_process_holds_a_generation_from_its_first_record() -> None:
    loop = asyncio.get_running_loop()
    for busy, least, most in ((True, 0.05, 1.0), (False, 0.0, 0.04)):
        producer = Producer()
        open_batches = batches(producer, busy=busy, hold_s=0.05)
        started = loop.time()
        ack = open_batches.add(0, record("a"))
        await producer.took.wait()
        assert least <= loop.time() - started < most, f"busy={busy}"
        producer.ack_all()
        await ack


async def test_records_that_join_a_held_generation_leave_with_it_and_later_ones_still_leave() -> (
    None
):
    """Each `add` asks for a hand-over; while one is held, a second must not be scheduled: the
    second would hand over an empty generation and reset the count of batches out, after which
    nothing would ever leave again."""
    producer = Producer()
    open_batches = batches(producer, busy=True, hold_s=0.02)
    held = [open_batches.add(0, record("a")), open_batches.add(1, record("b"))]
    await producer.took.wait()
    await asyncio.sleep(0.05)
    assert producer.values() == [(0, [b"a"]), (1, [b"b"])]
    producer.ack_all()
    await asyncio.gather(*held)
    later = open_batches.add(0, record("c"))
    await asyncio.sleep(0.1)
    assert producer.values()[2:] == [(0, [b"c"])]
    producer.ack_all()
    await later


async def test_a_full_batch_is_followed_by_another_of_its_partition_in_order() -> None:
    producer = Producer(batch_bytes=2)
    open_batches = batches(producer)
    acks = [open_batches.add(0, record(v)) for v in "abc"]
    assert acks[0] is acks[1] and acks[1] is not acks[2]
    await turns(3)
    assert producer.values() == [(0, [b"a", b"b"]), (0, [b"c"])]
    with pytest.raises(RecordTooLarge):
        open_batches.add(0, record("xyz"))


async def test_a_batch_refused_fails_the_later_ones_of_its_partition_only() -> None:
    producer = Producer(batch_bytes=1)
    open_batches = batches(producer)
    refusal = NotLeaderForPartitionError()
    producer.refused[0] = refusal
    first, second = open_batches.add(0, record("a")), open_batches.add(0, record("b"))
    other = open_batches.add(1, record("c"))
    await turns(3)
    for ack in (first, second):
        with pytest.raises(NotLeaderForPartitionError):
            await asyncio.wait_for(ack, 5)  # not left waiting for an answer
    assert producer.values() == [(1, [b"c"])], "nothing of partition 0 overtakes its refusal"
    producer.ack_all()
    await other


class SlowToRefuse(Producer):
    """Refuses partition 1's batch, a moment after it is handed over."""

    async def send_batch(self, builder: Builder, topic: str, *, partition: int) -> Any:
        if partition == 1:
            await asyncio.sleep(0.02)
        return await super().send_batch(builder, topic, partition=partition)


async def test_what_comes_while_a_generation_settles_within_its_hand_over_leaves_by_itself() -> (
    None
):
    """The generation settles before its hand-over ends (a batch acknowledged at once, the last
    refused): the record that came meanwhile leaves then, not only once another record comes
    (a lone caller would wait out its publish timeout)."""
    producer = SlowToRefuse()
    producer.refused[1] = NotLeaderForPartitionError()
    open_batches = batches(producer)
    first, refused = open_batches.add(0, record("a")), open_batches.add(1, record("b"))
    await producer.took.wait()  # partition 0's batch taken, partition 1's under way
    producer.ack_all()
    later = open_batches.add(0, record("c"))
    await first
    with pytest.raises(NotLeaderForPartitionError):
        await refused
    async with asyncio.timeout(1):
        while len(producer.taken) < 2:  # noqa: ASYNC110 (polls what the fake records)
            await asyncio.sleep(0.005)
    assert producer.values() == [(0, [b"a"]), (0, [b"c"])]
    producer.ack_all()
    await later


async def test_a_batch_the_producer_drops_fails_its_records_at_once() -> None:
    """aiokafka cancels a batch's future when it drops the batch (a producer stopped under
    it): its records' publishes fail then, to be spooled, rather than wait out their timeout."""
    producer = Producer()
    open_batches = batches(producer)
    ack = open_batches.add(0, record("a"))
    await producer.took.wait()
    producer.taken[0][2].cancel()
    with pytest.raises(KafkaConnectionError, match="dropped the batch"):
        await asyncio.wait_for(ack, 1)


async def test_the_brokers_answer_reaches_every_record_of_the_batch() -> None:
    producer = Producer()
    open_batches = batches(producer)
    ack = open_batches.add(0, record("a"))
    await turns(3)
    producer.taken[0][2].set_exception(KafkaTimeoutError())
    with pytest.raises(KafkaTimeoutError):
        await ack


async def test_closing_fails_what_the_producer_did_not_take_and_refuses_more() -> None:
    producer = Producer()
    open_batches = batches(producer, busy=True, hold_s=10)
    ack = open_batches.add(0, record("a"))
    await open_batches.close()
    with pytest.raises(KafkaConnectionError):
        await ack
    with pytest.raises(KafkaConnectionError):
        open_batches.add(0, record("b"))
    assert producer.taken == []


@pytest.mark.parametrize("hold_s", [10, 0.02])
async def test_a_stop_hands_over_what_is_open_without_holding_it_and_waits_for_it(
    hold_s: float,
) -> None:
    """The hold close() cuts short must not fire later either (hold_s=0.02: it falls within
    the wait): a second hand-over of nothing would take the generation under way for settled,
    and close would return before its ack."""
    producer = Producer()
    open_batches = batches(producer, busy=True, hold_s=hold_s)
    ack = open_batches.add(0, record("a"))
    closing = asyncio.create_task(open_batches.close(flush_s=5))
    await asyncio.sleep(0.1)
    assert producer.values() == [(0, [b"a"])]
    assert not closing.done(), "close returned with a batch under way"
    producer.ack_all()
    await closing
    await ack


async def test_while_a_generation_is_out_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producer_batches, "MAX_OPEN_BATCHES", 2)
    producer = Producer(batch_bytes=1)
    open_batches = batches(producer)
    out = open_batches.add(0, record("a"))
    await turns(3)
    waiting = [open_batches.add(0, record("b")), open_batches.add(0, record("c"))]
    with pytest.raises(KafkaTimeoutError, match="2 producer batches wait"):
        open_batches.add(0, record("d"))
    producer.ack_all()
    await out
    await turns(3)
    producer.ack_all()
    await asyncio.gather(*waiting)
    assert producer.values() == [(0, [b"a"]), (0, [b"b"]), (0, [b"c"])]


async def test_close_settles_a_generation_whose_hand_over_it_cancelled_before_it_began() -> None:
    """close() with a hold pending reschedules the hand-over at once (call_later 0); with
    flush_s=0 (`_replace`) the flush's timeout strikes in the same loop turn, and close cancels
    the `_send` task before its first step: its `try/finally` never runs, so the generation's
    batches are neither handed over nor failed. Their futures are never settled: the publishes
    waiting on them sit out their whole publish timeout (test_producer_batches'
    test_closing_fails_what_the_producer_did_not_take_and_refuses_more hangs on this)."""
    producer = Producer()
    open_batches = batches(producer, busy=True, hold_s=10)
    ack = open_batches.add(0, record("a"))
    await open_batches.close()
    assert producer.taken == []
    try:
        await asyncio.wait_for(asyncio.shield(ack), 1)
    except KafkaConnectionError:
        pass  # failed, as close() promises for what the producer did not take
    except TimeoutError:
        pytest.fail("the batch's future is never settled (not taken, not failed)")


async def test_nothing_is_refused_while_no_generation_is_out() -> None:
    """MAX_OPEN_BATCHES is documented as the bound "while a generation is out: the broker is not
    answering", but `add` applies it whatever is out: on a topic of more than 64 partitions one
    micro-batch (up to 256 events, one batch per partition) is refused with the broker idle and
    healthy, and its events go to the spool, and every later call's behind them."""
    producer = Producer()
    open_batches = batches(producer)
    acks = [open_batches.add(partition, record("a")) for partition in range(100)]
    await asyncio.sleep(0.01)
    producer.ack_all()
    await asyncio.gather(*acks)


def test_a_thread_that_wants_a_core_all_the_time_is_busy_and_one_asleep_is_not() -> None:
    load = Load(window_s=0.05)
    spun_until = time.monotonic() + 0.08
    while time.monotonic() < spun_until:  # running, or waiting for a CPU on a shared machine
        pass
    assert load.busy()
    time.sleep(0.08)
    assert not load.busy()
