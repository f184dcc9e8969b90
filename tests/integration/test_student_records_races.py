"""Student records where two writers or two copies meet, against the real PostgreSQL through
the recorder's own store (recorder_service/store.py), as the recorder writes its batches: an
import run again after an erasure, an import run twice before the recorder got to either,
retention removing a profile while a prediction that uses it is written, and an erasure that
meets a later enrolment's events in the log before or after them."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import asyncpg
import pytest

from inference_service.core_ports import ErasureAnswer
from inference_service.history_store import PostgresHistoryStore
from inference_service.servicer import _erasure_response
from recorder_service.erasure import Erasure, Named, apply_erasures
from recorder_service.rows import (
    STAGING_COLUMNS,
    import_staging_row,
    outcome_staging_row,
    staging_row,
)
from recorder_service.settings import DEV_ERASURE_KEY
from recorder_service.sharding import Turn, TurnGivenUp
from recorder_service.store import PostgresStore, WriteResult, remove_batch
from studentperf.config import DatabaseRole
from studentperf.v1.import_event_pb2 import ImportEvent
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from tests.integration.conftest import Stack
from tests.integration.helpers import blocked_by
from tests.integration.recorder_support import make_event, make_outcome_event
from trainer.import_events import import_event
from trainer.import_wait import WaitGaveUp, wait_until_stored
from trainer.kaggle import KaggleRow

TERM = "2026-import"


@pytest.fixture
async def store(stack: Stack) -> AsyncIterator[PostgresStore]:
    pool = await asyncpg.create_pool(
        stack.database_url_as(DatabaseRole.RECORDER), min_size=1, max_size=2
    )
    yield PostgresStore(pool)
    await pool.close()


def _csv_row(student_id: str, line: int = 2, score: float = 50.0) -> KaggleRow:
    return KaggleRow(line, student_id, "female", "bachelor", "standard", "none", score)


def _at(day: int) -> datetime:
    return datetime(2026, 1, day, tzinfo=UTC)


async def _rows_of(db: asyncpg.Pool, student_id: str) -> dict[str, int]:
    counts = {}
    for table in ("students", "outcomes", "imported_rows"):
        counts[table] = await db.fetchval(
            f"SELECT count(*) FROM {table} WHERE student_id = $1", student_id
        )
    return counts


async def test_the_same_import_twice_in_one_batch_leaves_a_later_outcome_standing(
    store: PostgresStore, db: asyncpg.Pool
) -> None:
    """A re-import stores nothing new, and a RecordOutcomes call made after an import wins. The
    second import of a file may land in the recorder's batch beside the first (the recorder
    away, `make import` run again): its copy, stamped later, must not override the score given
    in between, as it does not when the copies come in batches of their own."""
    results = {}
    for same_batch in (False, True):
        sha = uuid.uuid4().hex * 2  # a file of its own: event ids of their own
        sid = f"csv-{sha[:12]}-000002"
        first = import_event(_csv_row(sid), file_sha256=sha, term=TERM, occurred_at=_at(1))
        outcome = make_outcome_event(sid, TERM, 90.0, seconds=int(_at(2).timestamp()))
        again = import_event(_csv_row(sid), file_sha256=sha, term=TERM, occurred_at=_at(3))
        rows = [
            import_staging_row(first, 1),
            outcome_staging_row(outcome, 2),
            import_staging_row(again, 3),
        ]
        if same_batch:
            assert (await store.write(rows)).refused == []
        else:
            for row in rows:
                await store.write([row])
        results[same_batch] = await db.fetchval(
            "SELECT final_score FROM outcomes WHERE student_id = $1 AND term = $2", sid, TERM
        )
    # Across batches the later RecordOutcomes score stays; in one batch it must too.
    assert results == {False: 90.0, True: 90.0}


async def _retention_races_a_write(
    stack: Stack,
    store: PostgresStore,
    db: asyncpg.Pool,
    turn: Turn | None = None,
    when_blocked: Callable[[], None] = lambda: None,
) -> tuple[asyncio.Task[WriteResult], PredictionEvent]:
    """The recorder's write of a new prediction finds its profile there (ON CONFLICT DO
    NOTHING: no lock taken); then, while the write waits (a third transaction holds an
    uncommitted insert of its new academic record, the statement in between), retention
    deletes the expired prediction that used the profile and the profile, now unused, and
    commits. Returns the write, ended, and the new prediction."""
    sid = f"ret-{uuid.uuid4().hex[:10]}"
    old = make_event(
        sid, age=16, gpa=2.0, seconds=int(datetime(2020, 1, 1, tzinfo=UTC).timestamp())
    )
    assert (await store.write([staging_row(old, 1)])).stored == 1
    outcome = make_outcome_event(sid, "2020-spring", 70.0, seconds=int(_at(1).timestamp()))
    await store.write([outcome_staging_row(outcome, 2)])

    # The new prediction: the same profile (age 16), another academic record (GPA 3.0).
    new = make_event(sid, age=16, gpa=3.0)
    new_row = staging_row(new, 3)
    record_id = new_row[STAGING_COLUMNS.index("academic_record_id")]
    assert (
        new_row[STAGING_COLUMNS.index("student_profile_id")]
        == staging_row(old, 1)[STAGING_COLUMNS.index("student_profile_id")]
    )

    blocker = await asyncpg.connect(stack.database_url)
    retention = await asyncpg.connect(stack.database_url)
    holding = blocker.transaction()
    await holding.start()
    await blocker.execute(
        "INSERT INTO academic_records (academic_record_id, student_id, previous_gpa) "
        "VALUES ($1, $2, 3.0)",
        uuid.UUID(str(record_id)),
        sid,
    )
    writing = asyncio.create_task(store.write([new_row], (), turn))
    try:
        # The recorder is past the profile insert, waiting at academic_records.
        assert await blocked_by(db, blocker) == 1
        when_blocked()
        removed = await asyncio.wait_for(
            remove_batch(retention, datetime(2021, 1, 1, tzinfo=UTC), 10), 10
        )
        assert removed.predictions >= 1 and removed.student_profiles >= 1
    finally:
        await holding.rollback()
        await blocker.close()
        await retention.close()
    await asyncio.wait({writing})
    return writing, new


async def _stored(db: asyncpg.Pool, event: PredictionEvent) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM predictions WHERE prediction_id = $1", uuid.UUID(event.event_id)
        )
    )


async def test_retention_removing_a_profile_while_a_prediction_using_it_is_written_refuses_nothing(
    stack: Stack, store: PostgresStore, db: asyncpg.Pool
) -> None:
    """The prediction's foreign key to the profile retention removed fails; a batch of one row
    was refused on its own (dead-lettered): a prediction the service answered, never
    recorded. Written again, the profile is inserted anew."""
    writing, new = await _retention_races_a_write(stack, store, db)
    assert writing.result().refused == []
    assert await _stored(db, new) == 1


async def _what_is_kept(db: asyncpg.Pool, student: str) -> dict[str, object]:
    facts = await db.fetchrow(
        "SELECT age, previous_gpa FROM students WHERE student_id = $1", student
    )
    return {
        "predictions": await db.fetchval(
            "SELECT array_agg(predicted_at ORDER BY predicted_at) FROM predictions"
            " WHERE student_id = $1",
            student,
        ),
        "outcomes": await db.fetchval(
            "SELECT array_agg(term ORDER BY term) FROM outcomes WHERE student_id = $1", student
        ),
        "profiles": await db.fetchval(
            "SELECT array_agg(age) FROM student_profiles WHERE student_id = $1", student
        ),
        "records": await db.fetchval(
            "SELECT count(*) FROM academic_records WHERE student_id = $1", student
        ),
        "facts": None if facts is None else tuple(facts),
    }


async def test_an_erasure_keeps_a_later_enrolment_however_the_log_falls_into_batches(
    store: PostgresStore, db: asyncpg.Pool
) -> None:
    """One student's log: a prediction and an outcome before the erasure's time, a prediction
    and an outcome after it (a new enrolment, met by the recorder before the erasure: another
    instance published them while the erasure waited in a spool), then the erasure. Whether the
    erasure comes in the same batch as the events or in the next, the same is kept: the later
    enrolment, and nothing the student gave at or before the erasure."""
    t = int(_at(1).timestamp())
    kept: dict[str, dict[str, object]] = {}
    for layout in ("one batch", "two batches"):
        student = f"later-{uuid.uuid4().hex[:10]}"
        events = [
            staging_row(make_event(student, age=15, gpa=2.0, seconds=t + 10), 1),
            outcome_staging_row(
                make_outcome_event(student, "2026-spring", 60.0, seconds=t + 12), 2
            ),
            staging_row(make_event(student, age=17, gpa=None, seconds=t + 30), 3),
            outcome_staging_row(make_outcome_event(student, "2026-fall", 70, seconds=t + 31), 4),
        ]
        erasure = Erasure(str(uuid.uuid4()), student, _at(1).replace(second=20), "registrar", "")
        if layout == "one batch":
            assert (await store.write(events, [erasure])).refused == []
        else:
            assert (await store.write(events)).refused == []
            await store.write([], [erasure])
        kept[layout] = await _what_is_kept(db, student)
    print(f"\nkept after the erasure, by layout: {kept}")
    assert (
        kept["one batch"]
        == kept["two batches"]
        == {
            "predictions": [datetime.fromtimestamp(t + 30, UTC)],
            "outcomes": ["2026-fall"],
            "profiles": [17],
            "records": 1,
            "facts": (17, None),  # the GPA was given before the erasure only
        }
    )


@pytest.mark.parametrize("layout", ["erasure in the next batch", "erasure in the same batch"])
async def test_reimport_after_an_erasure_brings_nothing_back_however_the_log_fell(
    store: PostgresStore, db: asyncpg.Pool, layout: str
) -> None:
    """`make import` of the same file after an erasure stores nothing, whether the recorder
    stored the first import before the erasure came or skipped it as erased (it met the erasure
    in the same batch): a skipped import event is noted in imported_rows too."""
    sha = uuid.uuid4().hex * 2
    sid = f"csv-{sha[:12]}-000002"
    row = KaggleRow(2, sid, "female", "bachelor", "standard", "none", 50.0)
    first = import_event(row, file_sha256=sha, term=TERM, occurred_at=_at(1))
    erasure = Erasure(str(uuid.uuid4()), sid, _at(2), "registrar", "ticket-1")
    if layout == "erasure in the next batch":
        await store.write([import_staging_row(first, 10)])
        await store.write([], [erasure])
    else:
        await store.write([import_staging_row(first, 10)], [erasure])
    nothing = {"students": 0, "outcomes": 0, "imported_rows": 0}
    assert await _rows_of(db, sid) == nothing

    # `make import` of the same file again: the same event id, stamped with this run's time.
    again = import_event(row, file_sha256=sha, term=TERM, occurred_at=_at(3))
    assert again.event_id == first.event_id
    await store.write([import_staging_row(again, 30)])
    assert await _rows_of(db, sid) == nothing
    # The event's id is still known, without the student.
    found = await db.fetchrow(
        "SELECT student_id FROM imported_rows WHERE event_id = $1", uuid.UUID(first.event_id)
    )
    assert found is not None and found["student_id"] is None


async def _outcome_and_student(db: asyncpg.Pool, sid: str) -> tuple[object, ...]:
    o = await db.fetchrow(
        "SELECT final_score, recorded_at FROM outcomes WHERE student_id = $1", sid
    )
    return (o["final_score"], o["recorded_at"])


async def test_an_outcome_kept_by_an_erasure_keeps_no_time_of_before(
    store: PostgresStore, db: asyncpg.Pool
) -> None:
    """The erased student's outcome for a term (before the erasure), then a new enrolment's
    outcome for the same term (after it), then the erasure: the same is kept whether the
    erasure meets the two in one batch or after them, recorded as of the kept score (the
    upsert keeps the earliest acceptance as recorded_at, which the monitor pairs predictions
    and outcomes by: the erased one's must not survive)."""
    t = int(_at(1).timestamp())
    kept = {}
    for layout in ("one batch", "three batches"):
        sid = f"oc-{uuid.uuid4().hex[:10]}"
        old = outcome_staging_row(make_outcome_event(sid, "2026-spring", 60.0, seconds=t + 10), 1)
        new = outcome_staging_row(make_outcome_event(sid, "2026-spring", 70.0, seconds=t + 30), 2)
        erasure = Erasure(str(uuid.uuid4()), sid, _at(1).replace(second=20), "registrar", "")
        if layout == "one batch":
            await store.write([old, new], [erasure])
        else:
            await store.write([old])
            await store.write([new])
            await store.write([], [erasure])
        kept[layout] = await _outcome_and_student(db, sid)
    print(f"\nkept: {kept}")
    assert kept["one batch"] == kept["three batches"] == (70.0, datetime.fromtimestamp(t + 30, UTC))


async def test_a_students_row_kept_by_an_erasure_keeps_no_first_seen_at_of_before(
    store: PostgresStore, db: asyncpg.Pool
) -> None:
    """first_seen_at is the recorder's clock when it inserted the row, not an event's time: an
    erased student recorded after its erasure's time (the recorder behind, or the erasure
    spooled) must not leave it on the later enrolment's row."""
    t = int(_at(1).timestamp())
    sid = f"fs-{uuid.uuid4().hex[:10]}"
    await store.write([staging_row(make_event(sid, age=15, gpa=2.0, seconds=t + 10), 1)])
    erased_first_seen = await db.fetchval(
        "SELECT first_seen_at FROM students WHERE student_id = $1", sid
    )
    await asyncio.sleep(0.2)
    await store.write([staging_row(make_event(sid, age=17, gpa=None, seconds=t + 30), 2)])
    erasure = Erasure(str(uuid.uuid4()), sid, _at(1).replace(second=20), "registrar", "")
    await store.write([], [erasure])
    first_seen = await db.fetchval("SELECT first_seen_at FROM students WHERE student_id = $1", sid)
    assert first_seen != erased_first_seen, "the erased student's first_seen_at survived"


async def test_an_abandoned_batch_starts_no_transaction_more_after_a_foreign_key_retry(
    stack: Stack, store: PostgresStore, db: asyncpg.Pool
) -> None:
    """The batch is given up (its partitions revoked) while its one transaction waits; that
    transaction then fails on a foreign key (retention removed the profile meanwhile). Written
    again, it would be a transaction started after the batch was given up."""
    abandoned = False

    def abandon() -> None:
        nonlocal abandoned
        abandoned = True

    writing, new = await _retention_races_a_write(
        stack, store, db, store.turn(lambda: abandoned), when_blocked=abandon
    )
    assert isinstance(writing.exception(), TurnGivenUp)
    assert await _stored(db, new) == 0, "a transaction started after the batch was given up"


async def test_make_import_wait_counts_an_import_event_skipped_as_erased(
    stack: Stack, store: PostgresStore
) -> None:
    """`make import --wait` waits for every event id in imported_rows, which notes one the
    recorder skipped because its student was erased (met in the same batch as the erasure)."""
    sha = uuid.uuid4().hex * 2
    sid = f"csv-{sha[:12]}-000002"
    row = KaggleRow(2, sid, "female", "bachelor", "standard", "none", 50.0)
    first = import_event(row, file_sha256=sha, term=TERM, occurred_at=_at(1))
    erasure = Erasure(str(uuid.uuid4()), sid, _at(2), "registrar", "ticket-1")
    await store.write([import_staging_row(first, 10)], [erasure])
    try:
        stored = await wait_until_stored(
            stack.database_url_as(DatabaseRole.IMPORTER), [first.event_id], stall_timeout_s=3
        )
    except WaitGaveUp as gave_up:
        pytest.fail(f"--wait gave up on an event the recorder handled: {gave_up}")
    assert stored == 1


T = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
ERASED_AS_OF = datetime.fromtimestamp(T + 20, UTC)


def _erasure(sid: str) -> Erasure:
    return Erasure(str(uuid.uuid4()), sid, ERASED_AS_OF, "registrar", "")


def _import(sid: str, sha: str, seconds: int) -> ImportEvent:
    row = KaggleRow(2, sid, "female", "bachelor", "standard", "none", 50.0)
    return import_event(
        row, file_sha256=sha, term=TERM, occurred_at=datetime.fromtimestamp(seconds, UTC)
    )


@pytest.mark.parametrize("layout", ["one batch", "two batches"])
async def test_imported_rows_of_an_erased_enrolment_name_no_student(
    store: PostgresStore, db: asyncpg.Pool, layout: str
) -> None:
    """An import the student gave before the erasure, a prediction of a later enrolment, then
    the erasure: whether it meets the import in its batch (the import is skipped and noted
    without the student) or after it, no imported row names the student any more."""
    sha = uuid.uuid4().hex * 2
    sid = f"csv-{sha[:12]}-000002"
    imported = _import(sid, sha, T + 10)
    rows = [
        import_staging_row(imported, 1),
        staging_row(make_event(sid, age=17, gpa=None, seconds=T + 30), 2),
    ]
    if layout == "one batch":
        await store.write(rows, [_erasure(sid)])
    else:
        await store.write(rows)
        await store.write([], [_erasure(sid)])
    found = await db.fetchrow(
        "SELECT student_id FROM imported_rows WHERE event_id = $1",
        uuid.UUID(imported.event_id),
    )
    print(f"\n{layout}: imported_rows.student_id of the erased import = {found}")
    assert found is not None
    assert found["student_id"] is None, "the erased enrolment's import still names the student"


async def test_a_kept_profile_and_record_keep_no_first_seen_at_of_before(
    store: PostgresStore, db: asyncpg.Pool
) -> None:
    """As the students row: a profile and academic record a later enrolment shares with the
    erased one (their ids derive from their content) are seen anew."""
    sid = f"pf-{uuid.uuid4().hex[:10]}"
    await store.write([staging_row(make_event(sid, age=15, gpa=2.0, seconds=T + 10), 1)])
    before = await db.fetchrow(
        "SELECT (SELECT first_seen_at FROM student_profiles WHERE student_id = $1) AS p,"
        " (SELECT first_seen_at FROM academic_records WHERE student_id = $1) AS r",
        sid,
    )
    await asyncio.sleep(0.2)
    await store.write([staging_row(make_event(sid, age=15, gpa=2.0, seconds=T + 30), 2)])
    await store.write([], [_erasure(sid)])
    after = await db.fetchrow(
        "SELECT (SELECT first_seen_at FROM student_profiles WHERE student_id = $1) AS p,"
        " (SELECT first_seen_at FROM academic_records WHERE student_id = $1) AS r",
        sid,
    )
    print(f"\nbefore the erasure {dict(before)}, after {dict(after)}")
    assert after["p"] is not None and after["r"] is not None  # kept: the later prediction's
    assert after["p"] != before["p"], "the erased prediction's profile first_seen_at survived"
    assert after["r"] != before["r"], "the erased prediction's record first_seen_at survived"


async def test_a_kept_outcome_keeps_no_updated_at_of_before(
    store: PostgresStore, db: asyncpg.Pool
) -> None:
    """The later enrolment's score for the term equals the erased one's: the upsert keeps
    updated_at (a repeat moves only its order), which must not say when the erased student's
    score was recorded."""
    sid = f"ou-{uuid.uuid4().hex[:10]}"
    await store.write([outcome_staging_row(make_outcome_event(sid, TERM, 60.0, seconds=T + 10), 1)])
    erased_updated = await db.fetchval("SELECT updated_at FROM outcomes WHERE student_id = $1", sid)
    await asyncio.sleep(0.2)
    await store.write([outcome_staging_row(make_outcome_event(sid, TERM, 60.0, seconds=T + 30), 2)])
    await store.write([], [_erasure(sid)])
    kept = await db.fetchrow(
        "SELECT recorded_at, recorded_as_of, updated_at FROM outcomes WHERE student_id = $1", sid
    )
    print(f"\nerased score recorded (updated_at) {erased_updated}; kept outcome {dict(kept)}")
    assert kept["updated_at"] != erased_updated, "the erased score's updated_at survived"


async def test_erasure_that_cleared_facts_does_not_answer_removed_nothing(
    stack: Stack, store: PostgresStore, db: asyncpg.Pool
) -> None:
    """An import before the erasure (profile facts, a score for the term), then a later
    enrolment's score for the same term: the erasure clears the imported facts, and says so
    (an empty `removed` is "removed nothing", what an unknown student gets)."""
    sha = uuid.uuid4().hex * 2
    sid = f"csv-{sha[:12]}-000002"
    imported = _import(sid, sha, T + 10)
    later = outcome_staging_row(make_outcome_event(sid, TERM, 70.0, seconds=T + 30), 2)
    await store.write([import_staging_row(imported, 1), later])
    facts_before = await db.fetchval("SELECT gender FROM students WHERE student_id = $1", sid)
    conn = await asyncpg.connect(stack.database_url_as(DatabaseRole.RECORDER))
    try:
        [applied] = await apply_erasures(conn, [_erasure(sid)], DEV_ERASURE_KEY)
    finally:
        await conn.close()
    facts_after = await db.fetchval("SELECT gender FROM students WHERE student_id = $1", sid)
    left = await db.fetchval(
        "SELECT student_id FROM imported_rows WHERE event_id = $1", uuid.UUID(imported.event_id)
    )
    print(
        f"\ngender before {facts_before!r}, after {facts_after!r}; removed {dict(applied.removed)};"
        f" imported_rows.student_id after: {left!r}"
    )
    assert facts_before == "female" and facts_after is None
    assert dict(applied.removed) == {"student_facts": 1}
    assert left is None


async def test_an_erasure_unties_imported_rows_noted_with_the_student_before(
    store: PostgresStore, db: asyncpg.Pool
) -> None:
    """Imported rows noted before imports stopped naming the student: a later enrolment keeps
    the students row (no cascade), and the erasure unties them itself."""
    sid = f"legacy-{uuid.uuid4().hex[:10]}"
    await store.write([staging_row(make_event(sid, seconds=T + 30), 1)])
    event_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO imported_rows (event_id, student_id) VALUES ($1, $2)", event_id, sid
    )
    await store.write([], [_erasure(sid)])
    assert await db.fetchval("SELECT count(*) FROM students WHERE student_id = $1", sid) == 1
    found = await db.fetchrow("SELECT student_id FROM imported_rows WHERE event_id = $1", event_id)
    assert found is not None and found["student_id"] is None


async def test_an_outcome_is_recorded_as_of_its_first_acceptance_however_the_log_fell(
    store: PostgresStore, db: asyncpg.Pool
) -> None:
    """Two outcomes of one student and term, accepted at T+10 and T+30: the later score stands,
    and recorded_at says when the first was accepted (the time the monitor pairs an outcome
    with the predictions made before it), whether the two meet in one batch or two, and
    whether the older one reaches the log first or comes late (a spool's replay)."""
    layouts = {
        "in order, one batch": [[(10, 60.0, 1), (30, 70.0, 2)]],
        "in order, two batches": [[(10, 60.0, 1)], [(30, 70.0, 2)]],
        "replayed late, one batch": [[(30, 70.0, 1), (10, 60.0, 2)]],
        "replayed late, two batches": [[(30, 70.0, 1)], [(10, 60.0, 2)]],
    }
    found = {}
    for layout, batches in layouts.items():
        sid = f"oa-{uuid.uuid4().hex[:10]}"
        for batch in batches:
            await store.write(
                [
                    outcome_staging_row(
                        make_outcome_event(sid, TERM, score, seconds=T + seconds), offset
                    )
                    for seconds, score, offset in batch
                ]
            )
        row = await db.fetchrow(
            "SELECT final_score, recorded_at, recorded_as_of FROM outcomes WHERE student_id = $1",
            sid,
        )
        found[layout] = tuple(row)
    print(f"\n{found}")
    expected = (
        70.0,
        datetime.fromtimestamp(T + 10, UTC),
        datetime.fromtimestamp(T + 30, UTC),
    )
    assert found == dict.fromkeys(layouts, expected)


async def test_an_erasure_in_the_batch_of_the_student_s_events_says_it_skipped_them(
    stack: Stack, store: PostgresStore, db: asyncpg.Pool
) -> None:
    """A user's walkthrough: a prediction for a student, an outcome, and the student erased at
    once. The three events reach the recorder in one batch; the erasure is applied first and
    the two events are skipped, never stored. The student's data is gone, and EraseStudent's
    answer (read from the audit row, as the service reads it) says two events were skipped:
    not "removed nothing", which tells the school the student had no data. The same batch
    again (a redelivery) adds nothing to the audit."""
    sid = f"sb-{uuid.uuid4().hex[:10]}"
    rows = [
        staging_row(make_event(sid, seconds=T + 10), 1),
        outcome_staging_row(make_outcome_event(sid, TERM, 60.0, seconds=T + 15), 2),
    ]
    erasure = _erasure(sid)  # at T + 20
    written = await store.write(rows, [erasure])
    history = PostgresHistoryStore(stack.database_url_as(DatabaseRole.ANALYST))
    try:
        removed = await history.erasure(erasure.event_id)
        again = await store.write(rows, [erasure])
        after_redelivery = await history.erasure(erasure.event_id)
    finally:
        await history.close()
    assert removed is not None
    answer = _erasure_response(ErasureAnswer(erasure.event_id, removed))
    print(f"\nskipped {written.erased}; audit removed {removed}; summary {answer.summary!r}")
    assert written.erased == 2 and again.erased == 2
    assert removed == {"events_skipped": 2}
    assert answer.summary == (
        "removed nothing stored; skipped 2 event(s) of the student not yet recorded"
    )
    assert after_redelivery == removed
    assert [a.new for a in again.erasures] == [False]
    assert (
        await db.fetchval(
            "SELECT (SELECT count(*) FROM predictions WHERE student_id = $1)"
            " + (SELECT count(*) FROM outcomes WHERE student_id = $1)"
            " + (SELECT count(*) FROM students WHERE student_id = $1)",
            sid,
        )
        == 0
    )


async def test_two_erasures_in_one_write_each_count_the_events_they_skip_once(
    store: PostgresStore, db: asyncpg.Pool
) -> None:
    """One student's stored prediction, then one write with two erasures of the student (asked
    twice, ten seconds apart), the student's events before each, a refused record naming the
    student, and a new enrolment's prediction after both. The first erasure deletes the stored
    rows and counts the events before it; the second counts only the one between them, never
    one the first counted. Each audit row is whole once written: the same write again changes
    neither."""
    sid = f"tw-{uuid.uuid4().hex[:10]}"
    await store.write([staging_row(make_event(sid, seconds=T + 5), 1)])
    early = _erasure(sid)  # at T + 20
    late = Erasure(str(uuid.uuid4()), sid, datetime.fromtimestamp(T + 30, UTC), "registrar", "")
    rows = [
        staging_row(make_event(sid, seconds=T + 8), 2),
        outcome_staging_row(make_outcome_event(sid, TERM, 60.0, seconds=T + 25), 3),
        staging_row(make_event(sid, seconds=T + 40), 5),  # a new enrolment: stored
    ]
    # Refused before the database (its value unreadable, say), named by its key, at T + 12.
    named = [Named(0, sid, datetime.fromtimestamp(T + 12, UTC))]

    async def audits() -> dict[str, object]:
        found = await db.fetch(
            "SELECT event_id, removed FROM erasures WHERE event_id = ANY($1::uuid[])",
            [uuid.UUID(late.event_id), uuid.UUID(early.event_id)],
        )
        return {str(r["event_id"]): json.loads(r["removed"]) for r in found}

    written = await store.write(rows, [early, late], named=named)
    first = await audits()
    again = await store.write(rows, [early, late], named=named)
    print(f"\naudits {first}; skipped {written.erased} row(s), refused {written.erased_refused}")
    assert written.erased == 2 and written.erased_refused == {0}
    assert first[early.event_id] == {
        "predictions": 1,
        "student_profiles": 1,
        "academic_records": 1,
        "students": 1,
        "events_skipped": 2,  # the prediction at T + 8, the refused record at T + 12
    }
    assert first[late.event_id] == {"events_skipped": 1}  # the outcome at T + 25
    assert again.erased == 2 and [a.new for a in again.erasures] == [False, False]
    assert await audits() == first
    assert await db.fetchval("SELECT count(*) FROM predictions WHERE student_id = $1", sid) == 1
