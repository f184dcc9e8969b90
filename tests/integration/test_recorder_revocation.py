"""A batch abandoned by a revocation writes nothing after it: against the real PostgreSQL, with
the unit tests' fake consumer (the rebalance is called as aiokafka would) and the real store."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import asyncpg
import pytest
from aiokafka import TopicPartition

from infra.devstack import PostgresServer
from recorder_service import writer as writer_module
from recorder_service.consumer import Recorder
from recorder_service.erasure import Erasure
from recorder_service.health import RecorderHealth
from recorder_service.rows import outcome_staging_row, staging_row
from recorder_service.settings import Settings
from recorder_service.sharding import TurnGivenUp
from recorder_service.store import PostgresStore
from studentperf import envelope
from studentperf.config import DatabaseRole
from tests.integration.conftest import migrated_database
from tests.integration.helpers import blocked_by
from tests.integration.recorder_support import make_event, make_outcome_event
from tests.unit.recorder_fakes import TOPIC, FakeConsumer, FakeDeadLetters, FakeRecord
from trainer.import_events import import_event
from trainer.kaggle import KaggleRow

BASE_S = 1_700_000_000
P0 = TopicPartition(TOPIC, 0)


@pytest.fixture(scope="module")
async def dsn(postgres: PostgresServer) -> str:
    return postgres.dsn(await migrated_database(postgres, "revoke"))


def as_recorder(dsn: str) -> str:
    return dsn.replace(f"//{DatabaseRole.OWNER}@", f"//{DatabaseRole.RECORDER}@", 1)


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def a_store(dsn: str, shards: int = 1) -> PostgresStore:
    pool = await asyncpg.create_pool(as_recorder(dsn), min_size=1, max_size=shards + 1)
    return PostgresStore(pool, shards=shards)


async def predictions_of(db: asyncpg.Pool, student: str) -> int:
    return int(await db.fetchval("SELECT count(*) FROM predictions WHERE student_id = $1", student))


async def test_a_batch_abandoned_mid_split_stores_nothing_beside_the_next_owner_s_erasure(
    dsn: str, db: asyncpg.Pool
) -> None:
    """Member 1 writes a batch the database refuses most of (it is split, transaction after
    transaction). A rebalance waits revoke_wait_ms for it, then abandons it: member 2 now owns
    the partition, reads from the last commit and applies an erasure of student X that follows
    the batch in the log. Member 1's split, had it gone on with the lookup of erasures it made
    before the split, would store X's prediction that occurred before the erasure."""
    tag = uuid.uuid4().hex[:6]
    erased = f"x{tag}"
    bad = [make_event(f"bad{tag}-{i}", age=500, seconds=BASE_S) for i in range(150)]
    good = make_event(erased, age=16, seconds=BASE_S + 10)  # before the erasure
    values = [e.SerializeToString() for e in [*bad, good]]
    recs = [FakeRecord(TOPIC, 0, offset, v) for offset, v in enumerate(values)]
    consumer = FakeConsumer({P0: recs}, partitions=1)

    store1 = await a_store(dsn)
    settings = Settings(batch_max_events=10_000, batch_max_wait_ms=20, revoke_wait_ms=200)
    member1 = Recorder(settings, store1, FakeDeadLetters(), RecorderHealth())
    stop = asyncio.Event()
    task = asyncio.create_task(member1.run(consumer, stop))
    store2 = await a_store(dsn)
    try:
        # Member 1's batch is being written (split: many transactions).
        deadline = time.monotonic() + 10
        while not await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND state <> 'idle'",
            DatabaseRole.RECORDER.value,
        ):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await member1.listener.on_partitions_revoked({P0})  # waits 200 ms, then abandons
        revoked_at = time.monotonic()
        # The revocation returned once the batch had stopped: the partition moves on only then.
        assert member1.health.batches_abandoned == 1
        # Member 2, the partition's owner now, applies the erasure that follows in the log.
        erasure = Erasure(
            str(uuid.uuid4()), erased, datetime.fromtimestamp(BASE_S + 20, UTC), "test", ""
        )
        applied = await store2.write([], [erasure])
        assert applied.erasures and applied.erasures[0].new
        erased_at = time.monotonic()
        assert await predictions_of(db, erased) == 0  # nothing of X yet

        # Member 1's abandoned batch ends (uncommitted) some time later.
        deadline = time.monotonic() + 60
        while member1.health.batches_abandoned == 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        ended_at = time.monotonic()
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await store1._pool.close()
        await store2._pool.close()
    stored = await predictions_of(db, erased)
    students = int(await db.fetchval("SELECT count(*) FROM students WHERE student_id = $1", erased))
    print(
        f"\nrevoked, erasure applied {erased_at - revoked_at:.2f} s later; the abandoned batch"
        f" wrote on for {ended_at - revoked_at:.2f} s after the revocation; predictions of the"
        f" erased student (occurred before the erasure): {stored}, students rows: {students};"
        f" commits {consumer.commits}"
    )
    assert consumer.commits == []
    assert stored == 0, "a prediction of an erased student, at or before its erasure, is stored"


async def test_a_write_given_up_mid_split_starts_no_more_transactions(
    dsn: str, db: asyncpg.Pool
) -> None:
    """What stops the batch above without the revocation's wait: a shard split after its first
    transaction was refused checks its turn before each next one."""
    tag = uuid.uuid4().hex[:6]
    student = f"y{tag}"
    events = [make_event(f"bad{tag}-{i}", age=500, seconds=BASE_S) for i in range(8)]
    events.append(make_event(student, age=16, seconds=BASE_S))  # in a later transaction
    rows = [staging_row(event, offset) for offset, event in enumerate(events)]
    asked = 0

    def given_up() -> bool:
        nonlocal asked
        asked += 1
        return asked > 2  # the shard's start and its first transaction went ahead

    store = await a_store(dsn)
    try:
        with pytest.raises(TurnGivenUp):
            await store.write(rows, [], store.turn(given_up))
    finally:
        await store._pool.close()
    assert await predictions_of(db, student) == 0


@pytest.mark.parametrize("given_up_by", ["revocation", "stop"])
async def test_a_batch_behind_one_given_up_writes_nothing_before_it(
    dsn: str, db: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, given_up_by: str
) -> None:
    """Batch 1 holds a student's first import of a file and a later RecordOutcomes score; batch
    2, after it in the log, the same file's row imported again (a copy stamped later, which the
    first copy in the log outranks). Batch 1's transaction is cut and it waits to try again
    when a revocation (or the recorder's stop) gives it up. Batch 2, waiting for its turn at the
    shard, must not write then: its copy, stored first, would be the import's first, and once
    the partition is read again from the last commit the first copy is skipped and the later
    score loses to it."""
    monkeypatch.setattr(writer_module, "FIRST_RETRY_S", 5.0)  # batch 1 waits: the revocation
    monkeypatch.setattr(writer_module, "MAX_RETRY_S", 5.0)
    tag = uuid.uuid4().hex[:6]
    student, term, sha = f"c{tag}", "2026-spring", uuid.uuid4().hex * 2
    row = KaggleRow(2, student, "female", "bachelor", "standard", "none", 50.0)
    first = import_event(row, file_sha256=sha, term=term, occurred_at=_at(BASE_S))
    later = make_outcome_event(student, term, 90.0, seconds=BASE_S + 10)
    again = import_event(row, file_sha256=sha, term=term, occurred_at=_at(BASE_S + 20))
    log = [
        envelope.encode_import(first),
        envelope.encode_outcome(later),
        envelope.encode_import(again),
    ]
    recs = [
        FakeRecord(TOPIC, 0, offset, r.value, r.key, headers=r.headers)
        for offset, r in enumerate(log)
    ]
    setup = await a_store(dsn)
    try:  # the student's row, for another transaction to hold
        other = make_outcome_event(student, "2025-fall", 60.0, seconds=BASE_S - 100)
        await setup.write([outcome_staging_row(other, 0)])
    finally:
        await setup._pool.close()

    store1 = await a_store(dsn)
    settings = Settings(batch_max_events=2, batch_max_wait_ms=20, revoke_wait_ms=5_000)
    member1 = Recorder(settings, store1, FakeDeadLetters(), RecorderHealth())
    consumer1 = FakeConsumer({P0: recs[:2]}, {P0: recs[2:]}, partitions=1)
    stop = asyncio.Event()
    task = asyncio.create_task(member1.run(consumer1, stop))
    blocker = await asyncpg.connect(dsn)
    holding = blocker.transaction()
    await holding.start()
    try:
        await blocker.execute("SELECT 1 FROM students WHERE student_id = $1 FOR UPDATE", student)
        assert await blocked_by(db, blocker) == 1  # batch 1, mid-transaction
        await until(lambda: len(member1._guard._in_flight) == 2)  # batch 2, behind it
        await db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE $1 = ANY(pg_blocking_pids(pid))",
            blocker.get_server_pid(),
        )
        await holding.rollback()
        await until(lambda: member1.health.retries > 0)  # batch 1 waits to try again
        if given_up_by == "revocation":
            await member1.listener.on_partitions_revoked({P0})
        else:
            stop.set()
            await asyncio.wait_for(asyncio.shield(task), 30)
    finally:
        await blocker.close()
        stop.set()
        await asyncio.wait_for(task, 30)
        await store1._pool.close()
    written_while_given_up = int(
        await db.fetchval(
            "SELECT count(*) FROM imported_rows WHERE event_id = $1", uuid.UUID(first.event_id)
        )
    )

    # The partition's next owner reads it again from the last commit (none).
    store2 = await a_store(dsn)
    member2 = Recorder(settings, store2, FakeDeadLetters(), RecorderHealth())
    consumer2 = FakeConsumer({P0: recs[:2]}, {P0: recs[2:]}, partitions=1)
    stop2 = asyncio.Event()
    task2 = asyncio.create_task(member2.run(consumer2, stop2))
    try:
        await until(lambda: {P0: 3} in consumer2.commits, timeout=30)
    finally:
        stop2.set()
        await asyncio.wait_for(task2, 30)
        await store2._pool.close()
    score = await db.fetchval(
        "SELECT final_score FROM outcomes WHERE student_id = $1 AND term = $2", student, term
    )
    print(
        f"\nbatch 2 behind batch 1 given up: commits of member 1 {consumer1.commits}; "
        f"import rows written as batch 1 was given up ({given_up_by}) {written_while_given_up}; "
        f"score after the next owner read the partition again {score} (the later outcome: 90)"
    )
    assert consumer1.commits == []
    assert written_while_given_up == 0
    assert score == 90.0


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)
