"""Sharded writes (recorder_service/sharding.py, store.py) against the real PostgreSQL: one
student's facts merged in event order across shards and batches, and a batch whose one shard
committed while the other failed, written again whole, as the writer retries it."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import asyncpg
import pytest

from recorder_service.erasure import Erasure
from recorder_service.rows import STAGING_COLUMNS, StagingRow, staging_row
from recorder_service.sharding import TurnGivenUp, shard_of, split
from recorder_service.store import PostgresStore, is_transient
from studentperf.config import DatabaseRole
from tests.integration.conftest import Stack
from tests.integration.helpers import blocked_by, count_rows, eventually
from tests.integration.recorder_support import make_event

SHARDS = 2
STUDENT = STAGING_COLUMNS.index("student_id")
PREDICTION = STAGING_COLUMNS.index("prediction_id")
BASE_S = 1_790_000_000  # the events' times, in seconds: all well in the past


@pytest.fixture
async def store(stack: Stack) -> AsyncIterator[PostgresStore]:
    # The recorder's role, and a pool as the recorder sizes it (a connection per shard).
    pool = await asyncpg.create_pool(
        stack.database_url_as(DatabaseRole.RECORDER), min_size=SHARDS, max_size=SHARDS
    )
    yield PostgresStore(pool, shards=SHARDS)
    await pool.close()


def students_of_shard(prefix: str, shard: int, count: int) -> list[str]:
    found: list[str] = []
    n = 0
    while len(found) < count:
        candidate = f"{prefix}-{n}"
        if shard_of(candidate, SHARDS) == shard:
            found.append(candidate)
        n += 1
    return found


class Log:
    """Events as a topic would hold them: each row with its offset, and the facts it gave."""

    def __init__(self) -> None:
        self.offset = 0
        self.given: list[tuple[str, int, int, int | None, float | None]] = []

    def row(self, student: str, seconds: int, age: int | None, gpa: float | None) -> StagingRow:
        self.offset += 1
        self.given.append((student, seconds, self.offset, age, gpa))
        return staging_row(make_event(student, age=age, gpa=gpa, seconds=seconds), self.offset)

    def expected(self) -> dict[str, tuple[int | None, float | None]]:
        """Each student's facts by the merge rule: per fact, the value of the latest event
        (by time, then offset) that gave it."""
        ages: dict[str, tuple[tuple[int, int], int]] = {}
        gpas: dict[str, tuple[tuple[int, int], float]] = {}
        for student, seconds, offset, age, gpa in self.given:
            at = (seconds, offset)
            if age is not None and (student not in ages or ages[student][0] < at):
                ages[student] = (at, age)
            if gpa is not None and (student not in gpas or gpas[student][0] < at):
                gpas[student] = (at, gpa)
        return {
            student: (
                ages[student][1] if student in ages else None,
                gpas[student][1] if student in gpas else None,
            )
            for student, *_ in self.given
        }


async def stored_facts(
    db: asyncpg.Pool, students: Sequence[str]
) -> dict[str, tuple[int | None, float | None]]:
    rows = await db.fetch(
        "SELECT student_id, age, previous_gpa FROM students WHERE student_id = ANY($1)",
        list(students),
    )
    return {r["student_id"]: (r["age"], r["previous_gpa"]) for r in rows}


async def test_a_students_facts_merge_in_event_order_across_shards_and_batches(
    store: PostgresStore, db: asyncpg.Pool
) -> None:
    rng = random.Random(17)
    students = [f"order-{uuid.uuid4().hex[:6]}-{i}" for i in range(40)]
    log = Log()
    batches: list[list[StagingRow]] = []
    for batch_number in range(3):
        rows = []
        for _ in range(150):
            student = rng.choice(students)
            # Mostly forward in time; a fifth are late replays of older times; some share a
            # second with another event of the student (then the later offset wins).
            seconds = BASE_S + batch_number * 100 + rng.randrange(0, 100, 5)
            if rng.random() < 0.2:
                seconds -= 300
            age = rng.randint(12, 19) if rng.random() < 0.8 else None
            gpa = round(rng.uniform(1, 4), 2) if rng.random() < 0.7 else None
            rows.append(log.row(student, seconds, age, gpa))
        batches.append(rows)

    shards_used = [len(split(rows, [], SHARDS)) for rows in batches]
    stored = 0
    for rows in batches:
        result = await store.write(rows)
        assert not result.refused
        stored += result.stored
    expected = log.expected()
    found = await stored_facts(db, students)
    wrong = {s for s in expected if found.get(s) != expected[s]}
    print(
        f"\nfacts order: {len(students)} students, {len(log.given)} events in {len(batches)} "
        f"batches, shards per batch {shards_used}, stored {stored}, "
        f"students whose facts differ from the rule's {len(wrong)}"
    )
    assert shards_used == [SHARDS] * len(batches)
    assert stored == len(log.given)
    assert not wrong, {s: (found.get(s), expected[s]) for s in sorted(wrong)[:5]}


async def test_a_failed_shard_retried_with_its_committed_sibling_adds_nothing_and_loses_nothing(
    store: PostgresStore, db: asyncpg.Pool, stack: Stack
) -> None:
    tag = uuid.uuid4().hex[:6]
    shard_a = students_of_shard(f"a{tag}", 0, 20)
    shard_b = students_of_shard(f"b{tag}", 1, 20)
    locked, erased_student = shard_b[0], shard_a[0]
    log = Log()
    await store.write([log.row(locked, BASE_S, 14, 2.0)])  # the students row the test locks

    rows = [
        log.row(student, BASE_S + 10 + i, 15 + i, 3.0) for i in range(3) for student in shard_a
    ] + [log.row(student, BASE_S + 10 + i, 15 + i, 3.0) for i in range(3) for student in shard_b]
    # Erased as of its second event: its first two events are skipped, its third is kept.
    erasure = Erasure(
        str(uuid.uuid4()), erased_student, datetime.fromtimestamp(BASE_S + 11, UTC), "test", ""
    )
    ids: dict[str, list[uuid.UUID]] = {}
    for row in rows:
        ids.setdefault(str(row[STUDENT]), []).append(row[PREDICTION])  # type: ignore[arg-type]
    ids_a = [p for s in shard_a for p in (ids[s][2:] if s == erased_student else ids[s])]
    ids_b = [p for s in shard_b for p in ids[s]]
    assert len(split(rows, [erasure], SHARDS)) == SHARDS

    # Another transaction holds the locked student's row: shard B stops mid-transaction on it.
    blocker = await asyncpg.connect(stack.database_url)
    lock = blocker.transaction()
    await lock.start()
    await blocker.execute("SELECT 1 FROM students WHERE student_id = $1 FOR UPDATE", locked)
    writing = asyncio.create_task(store.write(rows, [erasure]))
    try:
        assert await blocked_by(db, blocker) == 1
        count = "SELECT count(*) FROM predictions WHERE prediction_id = ANY($1)"
        committed_a = await eventually(count_rows(db, count, ids_a), len(ids_a))
        committed_b = int(await db.fetchval(count, ids_b))
        # The database fails shard B: its connection is cut while its transaction is open.
        await db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE $1 = ANY(pg_blocking_pids(pid))",
            blocker.get_server_pid(),
        )
        with pytest.raises(Exception) as failed:
            await writing
    finally:
        await lock.rollback()
        await blocker.close()
    assert is_transient(failed.value)

    retry = await store.write(rows, [erasure])  # the writer retries the batch whole
    stored = {
        str(r["prediction_id"])
        for r in await db.fetch(
            "SELECT prediction_id FROM predictions WHERE prediction_id = ANY($1)", ids_a + ids_b
        )
    }
    audits = int(
        await db.fetchval("SELECT count(*) FROM erasures WHERE event_id = $1", erasure.event_id)
    )
    lost = len({str(p) for p in ids_a + ids_b} - stored)
    print(
        f"\nshard failure: sent {len(rows)} events ({len(ids_a)} + {len(ids_b)} to store, "
        f"{len(rows) - len(ids_a) - len(ids_b)} erased); before the retry shard A had "
        f"{committed_a} stored, shard B {committed_b}; the retry stored {retry.stored}, found "
        f"{retry.already_stored} already stored, skipped {retry.erased} as erased, erasure "
        f"reported new: {[a.new for a in retry.erasures]}; in the database {len(stored)}, "
        f"lost {lost}, stored twice {retry.stored + committed_a - len(stored)}, "
        f"erasure audit rows {audits}; failure: {type(failed.value).__name__}"
    )
    assert (committed_a, committed_b) == (len(ids_a), 0)  # one shard committed, one not
    assert (retry.stored, retry.already_stored) == (len(ids_b), len(ids_a))
    # Applied by the failed try (shard A committed it), and reported by the retry as applied
    # for the first time, so that the recorder counts and logs it once.
    assert retry.erased == 2 and [a.new for a in retry.erasures] == [True]
    again = await store.write(rows, [erasure])  # a redelivery: applied before, nothing new
    assert [a.new for a in again.erasures] == [False]
    assert lost == 0 and len(stored) == len(ids_a) + len(ids_b)
    assert audits == 1
    facts = await stored_facts(db, [locked, erased_student])
    assert facts == {locked: (17, 3.0), erased_student: (17, 3.0)}


class HeldRow:
    """Another transaction holding a student's row FOR UPDATE, so that a write touching it
    stays open, blocked, until the block ends."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection

    async def until_blocked(self, db: asyncpg.Pool) -> None:
        assert await blocked_by(db, self.connection) == 1

    async def cut_blocked(self, db: asyncpg.Pool) -> None:
        """The database fails the blocked write: its connection is cut mid-transaction."""
        await db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE $1 = ANY(pg_blocking_pids(pid))",
            self.connection.get_server_pid(),
        )


@asynccontextmanager
async def holding(stack: Stack, student: str) -> AsyncIterator[HeldRow]:
    connection = await asyncpg.connect(stack.database_url)
    lock = connection.transaction()
    await lock.start()
    await connection.execute("SELECT 1 FROM students WHERE student_id = $1 FOR UPDATE", student)
    try:
        yield HeldRow(connection)
    finally:
        await lock.rollback()
        await connection.close()


async def a_student_and_a_batch_erasing_it(
    store: PostgresStore,
) -> tuple[str, Log, Erasure, list[StagingRow]]:
    """A student already stored, and a batch that erases it as of BASE_S + 50 among events of
    20 other students of its shard."""
    tag = uuid.uuid4().hex[:6]
    student = students_of_shard(f"e{tag}", 0, 1)[0]
    log = Log()
    await store.write([log.row(student, BASE_S, 14, 2.0)])
    erasure = Erasure(
        str(uuid.uuid4()), student, datetime.fromtimestamp(BASE_S + 50, UTC), "test", ""
    )
    first = [log.row(s, BASE_S + 1, 15, 3.0) for s in students_of_shard(f"o{tag}", 0, 20)]
    return student, log, erasure, first


async def test_two_batches_under_way_never_write_one_students_rows_at_once(
    store: PostgresStore, db: asyncpg.Pool, stack: Stack
) -> None:
    # The writer starts a batch while the one before it ends. Here the first erases a student
    # and the second holds that student's prediction from before the erasure: written at the
    # same time, the second's lookup of erasures would miss the first's, not yet committed, and
    # keep a prediction of an erased student.
    student, log, erasure, first = await a_student_and_a_batch_erasing_it(store)
    late = log.row(student, BASE_S + 10, 15, 3.0)  # occurred before the erasure

    # Another transaction holds the student's row, so the erasure stays uncommitted meanwhile.
    async with holding(stack, student) as held:
        erasing = asyncio.create_task(store.write(first, [erasure]))
        await held.until_blocked(db)
        predicting = asyncio.create_task(store.write([late]))
        await asyncio.sleep(0.5)  # time enough for the second to look its student up, if it may
    erased, predicted = await erasing, await predicting
    left = int(await db.fetchval("SELECT count(*) FROM predictions WHERE student_id = $1", student))
    print(
        f"\nerasure and an earlier prediction in two batches at once: {left} predictions of the "
        f"erased student left, the second batch skipped {predicted.erased} as erased"
    )
    assert not erased.refused and not predicted.refused
    assert [a.new for a in erased.erasures] == [True]
    assert predicted.erased == 1 and predicted.stored == 0
    assert left == 0


async def test_a_later_batch_waits_for_an_earlier_one_retrying_the_same_shard(
    store: PostgresStore, db: asyncpg.Pool, stack: Stack
) -> None:
    # The first batch erases a student; the second holds the student's new enrolment, after
    # the erasure. The first fails mid-way and is retried; had the second written meanwhile,
    # the retried erasure would delete the enrolment, and both batches would commit.
    student, log, erasure, first = await a_student_and_a_batch_erasing_it(store)
    enrolment = log.row(student, BASE_S + 100, 16, 3.5)  # after the erasure: to be kept
    first_turn, second_turn = store.turn(), store.turn()

    async with holding(stack, student) as held:
        erasing = asyncio.create_task(store.write(first, [erasure], first_turn))
        await held.until_blocked(db)
        enrolling = asyncio.create_task(store.write([enrolment], [], second_turn))
        await held.cut_blocked(db)  # the first fails while it waits on the lock
        with pytest.raises(Exception) as failed:
            await erasing
    assert is_transient(failed.value)
    await asyncio.sleep(0.5)  # time enough for the second to write, if it may
    waited = not enrolling.done()
    retried = await store.write(first, [erasure], first_turn)  # the writer's retry
    enrolled = await enrolling
    first_turn.end()
    second_turn.end()
    left = int(await db.fetchval("SELECT count(*) FROM predictions WHERE student_id = $1", student))
    print(
        f"\nerasure retried with a later enrolment waiting: the enrolment waited for the retry: "
        f"{waited}; predictions of the student left: {left} (the enrolment)"
    )
    assert waited  # it waited for the first batch's retry
    assert [a.new for a in retried.erasures] == [True]
    assert enrolled.stored == 1 and not enrolled.refused
    assert left == 1


async def test_a_batch_given_up_while_it_waits_for_its_turn_writes_nothing(
    store: PostgresStore, db: asyncpg.Pool, stack: Stack
) -> None:
    # A rebalance gives up both batches under way; the second must not write once the first
    # lets it through, for its partitions may be another member's by then.
    tag = uuid.uuid4().hex[:6]
    student = students_of_shard(f"g{tag}", 0, 1)[0]
    log = Log()
    await store.write([log.row(student, BASE_S, 14, 2.0)])
    others = students_of_shard(f"h{tag}", 0, 4)
    first = [log.row(s, BASE_S + 1, 15, 3.0) for s in [student, *others]]
    second = log.row(student, BASE_S + 10, 15, 3.0)
    revoked = False
    first_turn, second_turn = store.turn(), store.turn(lambda: revoked)

    async with holding(stack, student) as held:
        writing = asyncio.create_task(store.write(first, [], first_turn))
        await held.until_blocked(db)
        waiting = asyncio.create_task(store.write([second], [], second_turn))
        await asyncio.sleep(0.2)
        revoked = True
    assert (await writing).stored == len(first)
    first_turn.end()
    with pytest.raises(TurnGivenUp):
        await waiting
    second_turn.end()
    count = "SELECT count(*) FROM predictions WHERE prediction_id = $1"
    assert int(await db.fetchval(count, second[PREDICTION])) == 0
