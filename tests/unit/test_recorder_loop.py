"""The consumer loop's decisions, with a fake consumer, store and dead-letter topic."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence

import pytest
from aiokafka import TopicPartition

from recorder_service import consumer as consumer_module
from recorder_service import writer as writer_module
from recorder_service.consumer import Recorder
from recorder_service.erasure import Erasure, Named
from recorder_service.health import RecorderHealth, State
from recorder_service.rebalance import BatchGuard, RebalanceListener
from recorder_service.rows import StagingRow
from recorder_service.settings import Settings
from recorder_service.sharding import Turn
from recorder_service.store import WriteResult
from tests.unit.loop_turns import turns
from tests.unit.recorder_fakes import (
    TOPIC,
    FakeConsumer,
    FakeDeadLetters,
    FakeRecord,
    FakeStore,
    event_bytes,
    records,
)

P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "FIRST_RETRY_S", 0.02)
    monkeypatch.setattr(writer_module, "MAX_RETRY_S", 0.05)
    monkeypatch.setattr(writer_module, "CHECK_S", 0.005)
    monkeypatch.setattr(consumer_module, "OUTAGE_POLL_S", 0.01)
    monkeypatch.setattr(consumer_module, "IDLE_POLL_S", 0.01)


def make(store: FakeStore, dead: FakeDeadLetters | None = None, **settings: int) -> Recorder:
    options = {"batch_max_wait_ms": 20, **settings}
    return Recorder(Settings(**options), store, dead or FakeDeadLetters(), RecorderHealth())  # type: ignore[arg-type]


async def run_until(
    recorder: Recorder, consumer: FakeConsumer, done: Callable[[], bool], timeout: float = 5
) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(consumer, stop))
    try:
        await wait_for(done, timeout)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_a_batch_is_written_then_its_offsets_committed() -> None:
    calls: list[str] = []
    consumer = FakeConsumer(
        {P0: records(0, [event_bytes() for _ in range(3)])},
        {P1: records(1, [event_bytes()], first_offset=7)},
    )
    consumer.calls = calls
    store = FakeStore(calls=calls)
    recorder = make(store)
    await run_until(recorder, consumer, lambda: bool(consumer.commits))
    assert consumer.commits == [{P0: 3, P1: 8}]
    assert calls == ["write", "commit"]
    assert recorder.stored == 4


async def test_batches_are_bounded_by_count() -> None:
    consumer = FakeConsumer({P0: records(0, [event_bytes() for _ in range(5)])})
    recorder = make(FakeStore(), batch_max_events=2)
    await run_until(recorder, consumer, lambda: len(consumer.commits) == 3)
    assert consumer.commits == [{P0: 2}, {P0: 4}, {P0: 5}]


async def test_an_outage_pauses_commits_nothing_and_resumes_by_itself() -> None:
    states: list[State] = []
    consumer = FakeConsumer({P0: records(0, [event_bytes(), event_bytes()])})
    store = FakeStore(outage=3)
    recorder = make(store)
    original = store.write

    async def watching(rows, erasures=(), turn=None, named=()):  # type: ignore[no-untyped-def]
        states.append(recorder.health.state)
        assert not consumer.commits  # nothing committed while the database is away
        return await original(rows, erasures, turn, named)

    store.write = watching  # type: ignore[method-assign]
    await run_until(recorder, consumer, lambda: bool(consumer.commits))
    assert store.attempts == 4
    assert states == [State.RUNNING, State.DEGRADED, State.DEGRADED, State.DEGRADED]
    assert consumer.calls[0] == "pause" and "resume" in consumer.calls
    assert not consumer.paused_tps
    assert consumer.commits == [{P0: 2}]
    assert recorder.health.outages == 1 and recorder.health.retries == 3


async def test_records_polled_during_an_outage_are_put_back() -> None:
    consumer = FakeConsumer({P0: records(0, [event_bytes()])})
    store = FakeStore(outage=2)
    recorder = make(store)
    pause = consumer.pause

    def pause_then_assign_more(*tps: TopicPartition) -> None:
        pause(*tps)
        if len(consumer.calls) == 1:  # a rebalance hands over a partition the loop did not pause
            consumer.chunks.append({TopicPartition(TOPIC, 5): records(5, [event_bytes()], 40)})

    consumer.pause = pause_then_assign_more  # type: ignore[method-assign]
    await run_until(recorder, consumer, lambda: bool(consumer.commits))
    assert consumer.seeks == [(TopicPartition(TOPIC, 5), 40)]


async def test_a_member_is_reassigning_from_a_revocation_until_the_next_assignment() -> None:
    """The listener marks the member reassigning from a revocation until the next assignment,
    when the poller reads nothing raw (polling.py): the revoked partitions may already be
    another member's. A batch fetched before the revocation is of an older epoch. The health
    counts the assignments and notes when the first with partitions came."""
    guard, health = BatchGuard(), RecorderHealth()
    listener = RebalanceListener(guard, health, wait_s=1.0)
    await listener.on_partitions_assigned(set())  # a member of the group, with no partition
    await listener.on_partitions_revoked(set())
    assert (guard.reassigning, guard.epoch) == (True, 1)
    await listener.on_partitions_assigned({P0, P1})
    assert (guard.reassigning, guard.epoch) == (False, 1)
    # Counted, and the time of the first assignment with partitions kept (benchmarks read it).
    first = health.first_assigned_at
    assert first > 0 and health.rebalances == 2
    await listener.on_partitions_revoked({P0, P1})
    await listener.on_partitions_assigned({P1})
    assert (health.first_assigned_at, health.rebalances) == (first, 3)


async def test_a_revocation_waits_for_the_abandoned_batch_to_end_and_then_is_over() -> None:
    """A batch not finished within the wait is abandoned, but the transaction it may be in
    can still commit: the partitions move on only once it ended. Then the revocation is over:
    a later outage is waited out again rather than given up at once."""
    guard = BatchGuard()
    flight = guard.begin()
    revoking = asyncio.create_task(guard.revoke(wait_s=0))
    await turns(5)
    assert flight.abandoned and guard.revoking and not revoking.done()
    guard.end(flight)
    await turns(5)
    assert revoking.done() and not guard.revoking


async def test_a_revocation_waits_for_the_batch_being_written_and_its_commit() -> None:
    consumer = FakeConsumer({P0: records(0, [event_bytes()])})
    store = FakeStore(delay_s=0.2)
    recorder = make(store)
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(consumer, stop))
    await wait_for(lambda: store.attempts == 1)
    await recorder.listener.on_partitions_revoked({P0})
    assert consumer.commits == [{P0: 1}]  # committed before the rebalance went on
    stop.set()
    await task


async def test_a_revocation_abandons_a_batch_that_takes_too_long() -> None:
    consumer = FakeConsumer({P0: records(0, [event_bytes()])})
    store = FakeStore(delay_s=0.3)
    recorder = make(store, revoke_wait_ms=20)
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(consumer, stop))
    await wait_for(lambda: store.attempts == 1)
    await recorder.listener.on_partitions_revoked({P0})
    await wait_for(lambda: recorder.health.batches_abandoned == 1)
    stop.set()
    await task
    assert consumer.commits == []
    assert recorder.stored == 0  # written (idempotently), but neither counted nor committed


async def test_a_revocation_during_an_outage_abandons_the_batch_at_once() -> None:
    consumer = FakeConsumer({P0: records(0, [event_bytes()])})
    store = FakeStore(outage=10**6)
    recorder = make(store, revoke_wait_ms=60_000)
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(consumer, stop))
    await wait_for(lambda: recorder.health.state is State.DEGRADED)
    async with asyncio.timeout(1):  # it must not wait for a batch that cannot finish
        await recorder.listener.on_partitions_revoked({P0})
    await wait_for(lambda: recorder.health.batches_abandoned == 1)
    # No batch waits for the database any more: not degraded, or an idle member would report
    # an outage long after it ended (RecorderDegraded; found by review, helper-70).
    await wait_for(lambda: recorder.health.state is State.RUNNING, timeout=1)
    stop.set()
    await task
    assert consumer.commits == []


async def test_records_fetched_before_a_rebalance_are_not_committed_after_it() -> None:
    consumer = FakeConsumer({P0: records(0, [event_bytes()])})
    recorder = make(FakeStore(), batch_max_wait_ms=200)
    getmany = consumer.getmany
    calls = 0

    async def rebalance_after_first(**kwargs):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        chunk = await getmany(**kwargs)
        if calls == 2:  # while the batch gathers, the partitions move
            await recorder.listener.on_partitions_revoked({P0})
            consumer.chunks.append({P1: records(1, [event_bytes()])})
        return chunk

    consumer.getmany = rebalance_after_first  # type: ignore[method-assign,assignment]
    await run_until(recorder, consumer, lambda: bool(consumer.commits))
    assert consumer.commits == [{P1: 1}]


async def test_poison_is_dead_lettered_before_the_commit_and_the_rest_written() -> None:
    calls: list[str] = []
    values = [event_bytes(), b"\x00garbage", event_bytes(), event_bytes()]
    consumer = FakeConsumer({P0: records(0, values)})
    consumer.calls = calls
    store = FakeStore(refuse={1}, calls=calls)  # the database refuses the third record
    dead = FakeDeadLetters(calls=calls)
    recorder = make(store, dead)
    await run_until(recorder, consumer, lambda: bool(consumer.commits))
    assert calls == ["write", "dead-letters", "commit"]
    assert len(store.written) == 2
    reasons = [(dict(d.headers)["dead-letter-source-offset"], d.reason) for d in dead.sent]
    assert reasons == [(b"1", "undecodable"), (b"2", "constraint-violation")]
    assert dict(dead.sent[1].headers)["dead-letter-attempts"] == b"2"
    assert recorder.health.dead_lettered == {"undecodable": 1, "constraint-violation": 1}
    assert consumer.commits == [{P0: 4}]


async def test_an_erased_student_s_poison_is_skipped_and_counted_not_dead_lettered() -> None:
    # The store finds the student the record names erased (after its time): its letter would
    # be a new copy of the erased student's data.
    values: list[tuple[bytes, bytes]] = [
        (b"s-kept", event_bytes("s-kept")),
        (b"s-erased", b"\x00garbage"),
        (b"s-kept", b"\x00garbage"),
    ]
    batch = [FakeRecord(TOPIC, 0, i, value, key) for i, (key, value) in enumerate(values)]
    consumer = FakeConsumer({P0: batch})
    store, dead = FakeStore(erased={"s-erased"}), FakeDeadLetters()
    recorder = make(store, dead)
    await run_until(recorder, consumer, lambda: bool(consumer.commits))
    assert [dict(d.headers)["dead-letter-source-offset"] for d in dead.sent] == [b"2"]
    assert len(store.written) == 1
    assert recorder.health.events_erased == 1
    assert recorder.health.dead_lettered == {"undecodable": 1}
    assert consumer.commits == [{P0: 3}]


async def test_an_unreachable_dead_letter_topic_holds_the_commit_back() -> None:
    from recorder_service.dead_letters import DeadLetterUnavailable

    consumer = FakeConsumer({P0: records(0, [b"\x00garbage"])})
    dead = FakeDeadLetters()
    failures = 2
    send = dead.send

    async def flaky(letters):  # type: ignore[no-untyped-def]
        nonlocal failures
        if failures:
            failures -= 1
            assert not consumer.commits
            raise DeadLetterUnavailable("broker away")
        await send(letters)

    dead.send = flaky  # type: ignore[method-assign]
    recorder = make(FakeStore(), dead)
    await run_until(recorder, consumer, lambda: bool(consumer.commits))
    assert len(dead.sent) == 1 and consumer.commits == [{P0: 1}]


async def test_an_error_of_the_whole_store_is_waited_out_not_the_end_of_the_recorder() -> None:
    # The store reports each row it refuses; what it raises is the database's failure.
    consumer = FakeConsumer({P0: records(0, [event_bytes()])})
    store = FakeStore()
    write = store.write
    failures = 2

    async def broken_twice(rows, erasures=(), turn=None, named=()):  # type: ignore[no-untyped-def]
        nonlocal failures
        if failures:
            failures -= 1
            raise RuntimeError("bug")
        return await write(rows, erasures, turn, named)

    store.write = broken_twice  # type: ignore[method-assign]
    recorder = make(store)
    states: list[State] = []

    def committed() -> bool:
        states.append(recorder.health.state)
        return bool(consumer.commits)

    await run_until(recorder, consumer, committed)
    assert State.DEGRADED in states
    assert consumer.commits == [{P0: 1}] and recorder.stored == 1
    assert recorder.health.retries == 2 and recorder.dead_lettered == 0


async def wait_for(condition: Callable[[], bool], timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return
            await asyncio.sleep(0.005)


async def test_the_next_batch_is_fetched_while_one_is_written_and_commits_keep_order() -> None:
    consumer = FakeConsumer(
        {P0: records(0, [event_bytes()])},
        {P0: records(0, [event_bytes()], first_offset=1)},
        {P0: records(0, [event_bytes()], first_offset=2)},
    )
    store = FakeStore(delay_s=0.1)
    recorder = make(store, batch_max_events=1)
    fetched_during_first_write: list[int] = []
    write = store.write

    async def watching(rows, erasures=(), turn=None, named=()):  # type: ignore[no-untyped-def]
        result = await write(rows, erasures, turn, named)
        fetched_during_first_write.append(len(consumer.chunks))
        return result

    store.write = watching  # type: ignore[method-assign]
    await run_until(recorder, consumer, lambda: len(consumer.commits) == 3)
    assert fetched_during_first_write[0] < 2  # the second chunk was taken meanwhile
    assert consumer.commits == [{P0: 1}, {P0: 2}, {P0: 3}]


async def test_two_batches_are_written_at_once_and_committed_in_order() -> None:
    consumer = FakeConsumer(
        *({P0: records(0, [event_bytes()], first_offset=offset)} for offset in range(3))
    )
    store = FakeStore(delays=[0.3, 0.0, 0.0])  # the second is written before the first
    recorder = make(store, batch_max_events=1)
    await run_until(recorder, consumer, lambda: len(consumer.commits) == 3)
    assert store.most_at_once == 2
    assert consumer.commits == [{P0: 1}, {P0: 2}, {P0: 3}]


async def test_no_batch_is_committed_past_one_given_up() -> None:
    consumer = FakeConsumer(
        {P0: records(0, [event_bytes()])}, {P0: records(0, [event_bytes()], first_offset=1)}
    )
    store = FakeStore(outage=1, delays=[0.1, 0.0])  # the first fails, the second is written
    recorder = make(store, batch_max_events=1)
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(consumer, stop))
    await wait_for(lambda: recorder.health.state is State.DEGRADED and len(store.written) == 1)
    stop.set()  # stopping during the outage gives the first up, uncommitted
    async with asyncio.timeout(2):
        await task
    assert consumer.commits == []  # not the second's offset either: it would skip the first


async def test_batches_read_after_a_rebalance_commit_though_one_from_before_is_given_up() -> None:
    consumer = FakeConsumer({P0: records(0, [event_bytes()])})
    store = FakeStore(delays=[0.5, 0.1, 0.1, 0.1])  # the first outlasts the revocation's wait
    recorder = make(store, batch_max_events=1, revoke_wait_ms=20)
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(consumer, stop))
    await wait_for(lambda: store.attempts == 1)
    await recorder.listener.on_partitions_revoked({P0})
    # Assigned again: read from the last commit, the first record comes again, then more.
    consumer.chunks += [{P0: records(0, [event_bytes()], first_offset=n)} for n in range(3)]
    # Not chained to the batch given up: they commit in their own order.
    await wait_for(lambda: len(consumer.commits) == 3, timeout=3)
    await wait_for(lambda: recorder.health.batches_abandoned == 1)  # when its write ends
    stop.set()
    await task
    assert consumer.commits == [{P0: 1}, {P0: 2}, {P0: 3}]


async def test_an_outage_lasts_while_any_batch_under_way_waits_one_out() -> None:
    consumer = FakeConsumer(
        {P0: records(0, [event_bytes()])}, {P0: records(0, [event_bytes()], first_offset=1)}
    )
    # The first fails quickly; the second is written while the first waits to try again.
    store = FakeStore(delays=[0.05, 0.3, 0.3, 0.05, 0.05])
    recorder = make(store, batch_max_events=1)
    original = store.write
    failures = 0

    async def first_fails_twice(rows, erasures=(), turn=None, named=()):  # type: ignore[no-untyped-def]
        nonlocal failures
        result = await original(rows, erasures, turn, named)
        if rows[0][0] == 0:  # the first batch's log offset
            if failures < 2:
                failures += 1
                raise ConnectionRefusedError("database is away")
            consumer.calls.append("first written")
        return result

    store.write = first_fails_twice  # type: ignore[method-assign]
    await run_until(recorder, consumer, lambda: len(consumer.commits) == 2)
    # Fetching resumed only once the first was written, not when the second was.
    assert consumer.calls.index("resume") > consumer.calls.index("first written")
    assert consumer.commits == [{P0: 1}, {P0: 2}]


async def test_a_writer_that_fails_ends_the_loop_and_leaves_no_task_behind() -> None:
    consumer = FakeConsumer(
        {P0: records(0, [event_bytes()])}, {P0: records(0, [event_bytes()], first_offset=1)}
    )
    store = FakeStore(delays=[0.0, 5.0])

    async def broken_commit(offsets: dict[TopicPartition, int]) -> None:
        raise RuntimeError("a bug")

    consumer.commit = broken_commit  # type: ignore[method-assign]
    recorder = make(store, batch_max_events=1)
    with pytest.raises(RuntimeError, match="a bug"):
        await asyncio.wait_for(recorder.run(consumer, asyncio.Event()), 3)
    left = [t for t in asyncio.all_tasks() if "_finish" in repr(t.get_coro())]
    assert left == []


async def test_a_batch_waiting_behind_the_writers_is_dropped_when_partitions_are_revoked() -> None:
    consumer = FakeConsumer(
        *({P0: records(0, [event_bytes()], first_offset=offset)} for offset in range(3))
    )
    store = FakeStore(delay_s=0.2)
    recorder = make(store, batch_max_events=1)
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(consumer, stop))
    # Two batches are written at once; the third is decoded and waits behind them.
    await wait_for(lambda: store.attempts == 2 and not consumer.chunks)
    await recorder.listener.on_partitions_revoked({P0})
    await asyncio.sleep(0.3)
    stop.set()
    await task
    # The two finished, committed in order; the third was never written.
    assert consumer.commits == [{P0: 1}, {P0: 2}]
    assert store.attempts == 2


async def test_no_write_lands_after_a_revocation_that_found_a_batch_waiting_out_an_outage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batch 1 waits out an outage of its shard while batch 2's transaction is under way. The
    revocation must wait for batch 2's write (which then commits nothing): once it returns,
    the partition's next owner writes, and batch 2's rows landing beside an erasure it applies
    could keep a prediction of an erased student."""
    monkeypatch.setattr(writer_module, "FIRST_RETRY_S", 1.0)  # batch 1 stays stalled meanwhile
    monkeypatch.setattr(writer_module, "MAX_RETRY_S", 1.0)
    consumer = FakeConsumer(
        {P0: records(0, [event_bytes()])}, {P0: records(0, [event_bytes()], first_offset=1)}
    )
    store = FakeStore()
    loop = asyncio.get_running_loop()
    second_started = asyncio.Event()
    second_landed: list[float] = []

    async def write(
        rows: Sequence[StagingRow],
        erasures: Sequence[Erasure] = (),
        turn: Turn | None = None,
        named: Sequence[Named] = (),
    ) -> WriteResult:
        if rows[0][0] == 0:  # batch 1 (offset 0): its shard's connection is lost, every time
            await asyncio.sleep(0.05)
            raise ConnectionResetError("connection lost")
        second_started.set()  # batch 2: its transaction is under way...
        await asyncio.sleep(0.5)
        second_landed.append(loop.time())  # ...and commits now
        return await FakeStore.write(store, rows, erasures, turn, named)

    store.write = write  # type: ignore[method-assign]
    recorder = make(store, batch_max_wait_ms=1, batch_max_events=1, revoke_wait_ms=60_000)
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(consumer, stop))
    await wait_for(lambda: second_started.is_set() and recorder.health.state is State.DEGRADED)
    await recorder.listener.on_partitions_revoked({P0})
    revoked_at = loop.time()  # the rebalance goes on: another member may write P0 now
    await wait_for(lambda: bool(second_landed), 2)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert consumer.commits == []  # batch 2 follows batch 1, given up: neither commits
    assert second_landed[0] <= revoked_at, (
        f"batch 2's rows landed {second_landed[0] - revoked_at:.3f} s after the revocation"
    )


async def test_a_record_with_a_null_header_value_does_not_stop_the_recorder() -> None:
    poisoned = records(0, [event_bytes(), event_bytes(), event_bytes()])
    poisoned[1] = dataclasses.replace(poisoned[1], headers=[("trace-id", None)])
    consumer = FakeConsumer({P0: poisoned}, {P0: records(0, [event_bytes()], first_offset=3)})
    store = FakeStore()
    recorder = make(store, batch_max_events=3)
    await run_until(recorder, consumer, lambda: len(consumer.commits) == 2)
    assert consumer.commits == [{P0: 3}, {P0: 4}]
    assert recorder.stored == 4


async def test_no_letter_of_a_student_is_sent_after_a_later_batch_applied_their_erasure() -> None:
    """Batch 1 holds a student's undecodable record, batch 2 (after it in the log) the
    student's erasure. Batch 1's letter is slow to be acknowledged; batch 2, handed over
    meanwhile, must not apply the erasure before it is: once the audit row is written,
    EraseStudent tells the caller the student is erased, and no copy of their records may be
    made after that (README, Erasure: the horizon)."""
    from recorder_service.dead_letters import DeadLetter
    from studentperf import envelope
    from tests.unit.test_erasure import erasure_event

    order: list[str] = []

    @dataclasses.dataclass
    class TurnTakingStore(FakeStore):
        async def write(
            self,
            rows: Sequence[StagingRow],
            erasures: Sequence[Erasure] = (),
            turn: Turn | None = None,
            named: Sequence[Named] = (),
        ) -> WriteResult:
            if turn is not None:
                await turn.wait(0)
            if erasures:
                order.append("erasure applied")
            result = await super().write(rows, erasures, turn, named)
            if turn is not None:
                turn.done_with(0)
            return result

    class SlowDeadLetters(FakeDeadLetters):
        async def send(self, letters: Sequence[DeadLetter]) -> None:
            if letters:
                await asyncio.sleep(0.3)  # acks=all, a slow broker
                order.append("letter sent")
            await super().send(letters)

    erasure = envelope.encode_erasure(erasure_event(student_id="s-x"))
    consumer = FakeConsumer(
        {P0: [FakeRecord(TOPIC, 0, 0, b"\x00garbage", b"s-x")]},
        {P0: [FakeRecord(TOPIC, 0, 1, erasure.value, erasure.key, headers=erasure.headers)]},
    )
    recorder = make(TurnTakingStore(), SlowDeadLetters(), batch_max_events=1)
    await run_until(recorder, consumer, lambda: len(consumer.commits) == 2)
    assert order == ["letter sent", "erasure applied"]
