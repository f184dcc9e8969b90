"""A batch abandoned by a revocation writes nothing after it: against the real PostgreSQL, with
the unit tests' fake consumer (the rebalance is called as aiokafka would) and the real store."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from aiokafka import TopicPartition

from infra.devstack import PostgresServer
from recorder_service.consumer import Recorder
from recorder_service.erasure import Erasure
from recorder_service.health import RecorderHealth
from recorder_service.rows import staging_row
from recorder_service.settings import Settings
from recorder_service.sharding import TurnGivenUp
from recorder_service.store import PostgresStore
from studentperf.config import DatabaseRole
from tests.integration.conftest import migrated_database
from tests.integration.recorder_support import make_event
from tests.unit.recorder_fakes import TOPIC, FakeConsumer, FakeDeadLetters, FakeRecord

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
