"""The recorded rows keep their references (migrations 0026 and 0033).

The four foreign keys of profiles, academic records and predictions checked and locked one
parent per row; their statement-level replacements must refuse the same things with the same
error the recorder's store handles (SQLSTATE 23503 and the constraint's name), and keep a
concurrent delete from leaving a row without its parent. A prediction names its profile and its
academic record each with its student: neither may be another student's (0033 for the record).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from infra.devstack import PostgresServer
from recorder_service.erasure import Erasure, apply_erasures
from recorder_service.settings import DEV_ERASURE_KEY
from recorder_service.store import remove_batch
from studentperf.config import DatabaseRole
from studentperf.migrate import apply_migrations
from tests.integration.conftest import migrated_database
from tests.integration.helpers import ONE_STUDENTS_PARENTS, migrate_before

PROFILE = "00000000-0000-4000-8000-000000000001"
RECORD = "00000000-0000-4000-8000-000000000002"
PARENTS = "INSERT INTO model_versions (model_version) VALUES ('v1');" + ONE_STUDENTS_PARENTS

# Predictions of the student $1 made from the profile $2 and record $3, one per id in $4.
INSERT_PREDICTIONS = """
INSERT INTO predictions (prediction_id, student_id, student_profile_id, academic_record_id,
    model_version, predicted_final_score, pass_probability, predicted_pass, pass_mark,
    predicted_at, event_schema_version)
SELECT id, $1, $2::uuid, $3::uuid, 'v1', 50, 0.5, true, 50, now(), 1
FROM unnest($4::uuid[]) AS id
"""
IDS = [f"00000000-0000-4000-8000-0000000001{i:02d}" for i in range(3)]
# Orphans: rows whose parent is gone, by the four references.
ORPHANS = """
SELECT (SELECT count(*) FROM student_profiles c
        WHERE NOT EXISTS (SELECT FROM students p WHERE p.student_id = c.student_id))
     + (SELECT count(*) FROM academic_records c
        WHERE NOT EXISTS (SELECT FROM students p WHERE p.student_id = c.student_id))
     + (SELECT count(*) FROM predictions c WHERE NOT EXISTS (SELECT FROM student_profiles p
        WHERE p.student_profile_id = c.student_profile_id AND p.student_id = c.student_id))
     + (SELECT count(*) FROM predictions c WHERE NOT EXISTS (SELECT FROM academic_records p
        WHERE p.academic_record_id = c.academic_record_id AND p.student_id = c.student_id))
"""
# A profile and an academic record of the student 't'.
PROFILE_T = "00000000-0000-4000-8000-000000000003"
RECORD_T = "00000000-0000-4000-8000-000000000004"
STUDENT_T = f"""
INSERT INTO students (student_id, profile_as_of) VALUES ('t', now());
INSERT INTO student_profiles (student_profile_id, student_id) VALUES ('{PROFILE_T}', 't');
INSERT INTO academic_records (academic_record_id, student_id) VALUES ('{RECORD_T}', 't');
"""


@pytest.fixture
async def database(postgres: PostgresServer) -> str:
    return await migrated_database(postgres, "references")


@pytest.fixture
async def owner(postgres: PostgresServer, database: str) -> AsyncIterator[asyncpg.Connection]:
    """This test's own migrated database, as its owner (whom no privilege stops)."""
    conn = await asyncpg.connect(postgres.dsn(database))
    try:
        await conn.execute(PARENTS)
        yield conn
    finally:
        await conn.close()


async def test_rows_naming_their_parents_are_stored(owner: asyncpg.Connection) -> None:
    await owner.execute(INSERT_PREDICTIONS, "s", PROFILE, RECORD, IDS)
    assert await owner.fetchval("SELECT count(*) FROM predictions") == 3


@pytest.mark.parametrize(
    ("student", "profile", "record", "constraint"),
    [
        ("s", "00000000-0000-4000-8000-00000000000f", RECORD,
         "predictions_student_profile_id_student_id_fkey"),
        # The profile is there, but it is another student's: the pair is what is checked.
        ("t", PROFILE, RECORD_T, "predictions_student_profile_id_student_id_fkey"),
        ("s", PROFILE, "00000000-0000-4000-8000-00000000000f",
         "predictions_academic_record_id_student_id_fkey"),
        # The record is there, but it is another student's (migration 0033).
        ("t", PROFILE_T, RECORD, "predictions_academic_record_id_student_id_fkey"),
        ("s", PROFILE, RECORD_T, "predictions_academic_record_id_student_id_fkey"),
    ],
)  # fmt: skip
async def test_one_prediction_without_its_parent_refuses_the_statement(
    owner: asyncpg.Connection, student: str, profile: str, record: str, constraint: str
) -> None:
    await owner.execute(STUDENT_T)
    # One statement: a good row, then a bad one.
    rows = [("s", PROFILE, RECORD, IDS[0]), (student, profile, record, IDS[1])]
    with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
        await owner.execute(
            """
            INSERT INTO predictions (prediction_id, student_id, student_profile_id,
                academic_record_id, model_version, predicted_final_score, pass_probability,
                predicted_pass, pass_mark, predicted_at, event_schema_version)
            SELECT id, sid, pid, rid, 'v1', 50, 0.5, true, 50, now(), 1
            FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::uuid[]) AS r (sid, pid, rid, id)
            """,
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
            [r[3] for r in rows],
        )
    assert refused.value.constraint_name == constraint
    assert refused.value.table_name == "predictions"
    assert await owner.fetchval("SELECT count(*) FROM predictions") == 0


@pytest.mark.parametrize(
    ("table", "constraint"),
    [
        ("student_profiles", "student_profiles_student_id_fkey"),
        ("academic_records", "academic_records_student_id_fkey"),
    ],
)
async def test_a_profile_or_record_of_an_unknown_student_is_refused(
    owner: asyncpg.Connection, table: str, constraint: str
) -> None:
    key = "student_profile_id" if table == "student_profiles" else "academic_record_id"
    with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
        await owner.execute(
            f"INSERT INTO {table} ({key}, student_id) VALUES (gen_random_uuid(), 's'),"
            " (gen_random_uuid(), 'nobody')"
        )
    assert refused.value.constraint_name == constraint
    assert await owner.fetchval(f"SELECT count(*) FROM {table}") == 1  # the fixture's


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        # 'p' has only a profile, 'r' only a record: each reference is checked on its own.
        ("DELETE FROM students WHERE student_id = 'p'", "student_profiles_student_id_fkey"),
        ("DELETE FROM students WHERE student_id = 'r'", "academic_records_student_id_fkey"),
        ("TRUNCATE students, academic_records CASCADE", "student_profiles_student_id_fkey"),
        ("TRUNCATE students, student_profiles CASCADE", "academic_records_student_id_fkey"),
        # Either reference of a student is named: triggers fire in the order of their names.
        ("DELETE FROM students", "academic_records_student_id_fkey"),
        ("DELETE FROM student_profiles", "predictions_student_profile_id_student_id_fkey"),
        ("DELETE FROM academic_records", "predictions_academic_record_id_student_id_fkey"),
        ("TRUNCATE students CASCADE", "academic_records_student_id_fkey"),
        ("TRUNCATE student_profiles", "predictions_student_profile_id_student_id_fkey"),
        ("TRUNCATE academic_records", "predictions_academic_record_id_student_id_fkey"),
        ("UPDATE students SET student_id = 'u'", "student_profiles_student_id_fkey"),
        ("UPDATE student_profiles SET student_id = 't'",
         "predictions_student_profile_id_student_id_fkey"),
        ("UPDATE academic_records SET student_id = 't'", "academic_records_student_id_fkey"),
        (f"UPDATE academic_records SET academic_record_id = '{PROFILE}'",
         "predictions_academic_record_id_student_id_fkey"),
        (f"UPDATE predictions SET academic_record_id = '{PROFILE}'",
         "predictions_academic_record_id_student_id_fkey"),
        ("UPDATE predictions SET student_id = 't'",
         "predictions_student_profile_id_student_id_fkey"),
    ],
)  # fmt: skip
async def test_a_referred_row_is_neither_removed_nor_rekeyed(
    owner: asyncpg.Connection, statement: str, constraint: str
) -> None:
    await owner.execute(
        "INSERT INTO students (student_id, profile_as_of) VALUES ('t', now()), ('p', now()),"
        " ('r', now());"
        "INSERT INTO student_profiles (student_profile_id, student_id)"
        " VALUES (gen_random_uuid(), 'p');"
        "INSERT INTO academic_records (academic_record_id, student_id)"
        " VALUES (gen_random_uuid(), 'r')"
    )
    await owner.execute(INSERT_PREDICTIONS, "s", PROFILE, RECORD, IDS)
    with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
        await owner.execute(statement)
    assert refused.value.constraint_name == constraint
    assert await owner.fetchval("SELECT count(*) FROM predictions") == 3
    assert await owner.fetchval(ORPHANS) == 0


async def test_rows_go_children_first_as_the_erasure_removes_them(
    owner: asyncpg.Connection,
) -> None:
    await owner.execute(INSERT_PREDICTIONS, "s", PROFILE, RECORD, IDS)
    async with owner.transaction():
        for table in ("predictions", "student_profiles", "academic_records", "students"):
            await owner.execute(f"DELETE FROM {table} WHERE student_id = 's'")
    assert await owner.fetchval("SELECT count(*) FROM students") == 0


@pytest.mark.parametrize(
    "statement", ["DELETE FROM students WHERE student_id = 't'", "TRUNCATE students CASCADE"]
)
async def test_a_delete_or_truncate_under_repeatable_read_is_refused(
    postgres: PostgresServer, database: str, owner: asyncpg.Connection, statement: str
) -> None:
    """Its snapshot would not see a reference committed after it began: here a profile of
    't', committed after the snapshot and before the delete."""
    await owner.execute("DELETE FROM academic_records; DELETE FROM student_profiles")
    await owner.execute("INSERT INTO students (student_id, profile_as_of) VALUES ('t', now())")
    other = await asyncpg.connect(postgres.dsn(database))
    try:
        with pytest.raises(asyncpg.FeatureNotSupportedError):
            async with owner.transaction(isolation="repeatable_read"):
                await owner.fetchval("SELECT count(*) FROM student_profiles")  # the snapshot
                await other.execute(
                    "INSERT INTO student_profiles (student_profile_id, student_id)"
                    " VALUES (gen_random_uuid(), 't')"
                )
                await owner.execute(statement)
    finally:
        await other.close()
    assert await owner.fetchval("SELECT count(*) FROM students WHERE student_id = 't'") == 1
    assert await owner.fetchval(ORPHANS) == 0


async def test_retention_and_erasure_delete_under_read_committed_whatever_the_default(
    postgres: PostgresServer, database: str, owner: asyncpg.Connection
) -> None:
    """A database whose default isolation is REPEATABLE READ would make every erasure and
    retention run fail on the check above, unless they name theirs."""
    await owner.execute(INSERT_PREDICTIONS, "s", PROFILE, RECORD, IDS)
    await owner.execute(
        "INSERT INTO students (student_id, profile_as_of) VALUES ('t', now());"
        "INSERT INTO student_profiles (student_profile_id, student_id)"
        " VALUES (gen_random_uuid(), 't')"
    )
    await owner.execute(
        f"ALTER DATABASE {database} SET default_transaction_isolation = 'repeatable read'"
    )
    recorder = await asyncpg.connect(postgres.dsn(database, user=DatabaseRole.RECORDER))
    try:
        assert await recorder.fetchval("SHOW default_transaction_isolation") == "repeatable read"
        removed = await remove_batch(recorder, datetime.now(UTC) + timedelta(days=1), 10)
        erasure = Erasure(str(uuid.uuid4()), "t", datetime.now(UTC), "test", "")
        [applied] = await apply_erasures(recorder, [erasure], DEV_ERASURE_KEY)
    finally:
        await recorder.close()
    assert (removed.predictions, removed.students) == (3, 1)
    assert applied.new and await owner.fetchval("SELECT count(*) FROM students") == 0


async def test_a_parent_committed_while_the_check_waits_is_not_taken_unlocked(
    postgres: PostgresServer, database: str, owner: asyncpg.Connection
) -> None:
    """The insert's check waits on one parent ('s', locked by a delete that then rolls back)
    while another ('x') is committed: only parents the check could lock pass, so 'x' (which
    its snapshot missed) refuses the insert, and no delete of 'x' can leave an orphan."""
    blocker = await asyncpg.connect(postgres.dsn(database))
    inserter = await asyncpg.connect(postgres.dsn(database, user=DatabaseRole.RECORDER))
    other = await asyncpg.connect(postgres.dsn(database))
    try:
        block = blocker.transaction()
        await block.start()
        await blocker.execute("SELECT FROM students WHERE student_id = 's' FOR UPDATE")
        inserting = asyncio.create_task(
            inserter.execute(
                "INSERT INTO academic_records (academic_record_id, student_id) VALUES"
                " ('00000000-0000-4000-8000-0000000000a1', 's'),"
                " ('00000000-0000-4000-8000-0000000000a2', 'x')"
            )
        )
        await asyncio.sleep(0.5)
        assert not inserting.done()  # its check waits on 's'
        await other.execute("INSERT INTO students (student_id, profile_as_of) VALUES ('x', now())")
        await block.rollback()
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await asyncio.wait_for(inserting, 10)
        await other.execute("DELETE FROM students WHERE student_id = 'x'")
    finally:
        for conn in (blocker, inserter, other):
            await conn.close()
    assert await owner.fetchval("SELECT count(*) FROM academic_records") == 1  # the fixture's
    assert await owner.fetchval(ORPHANS) == 0


async def test_no_other_role_may_make_a_trigger_of_the_checks(
    postgres: PostgresServer, database: str, owner: asyncpg.Connection
) -> None:
    """They run as their owner: a trigger of the recorder's own (on a temporary table, with
    arguments naming a view of its own) would run its code with the owner's rights."""
    recorder = await asyncpg.connect(postgres.dsn(database, user=DatabaseRole.RECORDER))
    try:
        await recorder.execute("CREATE TEMPORARY TABLE bait (x int)")
        for function, arguments in (
            ("recorded_rows_have_parents", "'c', 'x', 'students', 'student_id'"),
            ("recorded_rows_keep_their_parents", "'c', 'predictions', 'student_id', 'x'"),
            ("recorded_rows_truncate_with_their_children", "'c', 'predictions'"),
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await recorder.execute(
                    f"CREATE TRIGGER hijack AFTER TRUNCATE ON bait FOR EACH STATEMENT"
                    f" EXECUTE FUNCTION public.{function}({arguments})"
                )
    finally:
        await recorder.close()


@pytest.mark.parametrize("first", ["insert", "delete"])
async def test_a_concurrent_delete_and_insert_leave_no_orphan(
    postgres: PostgresServer, database: str, owner: asyncpg.Connection, first: str
) -> None:
    """The insert's check locks the parent: whichever commits second fails, as with the
    foreign key, and no prediction is left without its record."""
    await owner.execute(
        "INSERT INTO academic_records (academic_record_id, student_id) VALUES"
        " ('00000000-0000-4000-8000-000000000003', 's')"
    )
    lone = "00000000-0000-4000-8000-000000000003"
    delete_lone = f"DELETE FROM academic_records WHERE academic_record_id = '{lone}'"
    inserter = await asyncpg.connect(postgres.dsn(database, user=DatabaseRole.RECORDER))
    deleter = await asyncpg.connect(postgres.dsn(database))
    try:
        insert = inserter.transaction()
        delete = deleter.transaction()
        await insert.start()
        await delete.start()
        if first == "insert":
            await inserter.execute(INSERT_PREDICTIONS, "s", PROFILE, lone, IDS)
            # The record is locked FOR KEY SHARE: the delete waits for the insert's commit.
            deleting = asyncio.create_task(deleter.execute(delete_lone))
            await asyncio.sleep(0.5)
            assert not deleting.done()
            await insert.commit()
            with pytest.raises(asyncpg.ForeignKeyViolationError):
                await deleting
            await delete.rollback()
        else:
            await deleter.execute(delete_lone)
            inserting = asyncio.create_task(
                inserter.execute(INSERT_PREDICTIONS, "s", PROFILE, lone, IDS)
            )
            await asyncio.sleep(0.5)
            assert not inserting.done()  # waits on the deleted row's lock
            await delete.commit()
            with pytest.raises(asyncpg.ForeignKeyViolationError):
                await inserting
            await insert.rollback()
    finally:
        await inserter.close()
        await deleter.close()
    assert await owner.fetchval(ORPHANS) == 0
    stored = await owner.fetchval("SELECT count(*) FROM predictions")
    gone = await owner.fetchval(
        f"SELECT count(*) = 0 FROM academic_records WHERE academic_record_id = '{lone}'"
    )
    assert (stored, gone) == ((3, False) if first == "insert" else (0, True))


async def test_a_temporary_table_cannot_stand_in_for_a_parent(
    postgres: PostgresServer, database: str, owner: asyncpg.Connection
) -> None:
    """The recorder may create temporary tables (0004): one named like a parent table, first
    on its search_path, must not vouch for a record."""
    recorder = await asyncpg.connect(postgres.dsn(database, user=DatabaseRole.RECORDER))
    ghost = "00000000-0000-4000-8000-00000000000e"
    try:
        async with recorder.transaction():
            await recorder.execute(
                "CREATE TEMPORARY TABLE academic_records (academic_record_id uuid) ON COMMIT DROP;"
                f"INSERT INTO academic_records VALUES ('{ghost}')"
            )
            with pytest.raises(asyncpg.ForeignKeyViolationError):
                await recorder.execute(INSERT_PREDICTIONS, "s", PROFILE, ghost, IDS)
    finally:
        await recorder.close()
    assert await owner.fetchval(ORPHANS) == 0


async def test_the_migration_refuses_a_prediction_naming_another_students_record(
    postgres: PostgresServer,
) -> None:
    """0033 checks the rows written before it: a prediction of 't' made from the record of 's'
    stops it, with a count and the query that finds them, and leaves the schema as it was; once
    that row is gone, it applies."""
    name = f"crossed{uuid.uuid4().hex[:12]}"
    await postgres.ensure_database(name)
    conn = await asyncpg.connect(postgres.dsn(name))
    try:
        await migrate_before(conn, "0033")
        await conn.execute(PARENTS + STUDENT_T)
        await conn.execute(INSERT_PREDICTIONS, "s", PROFILE, RECORD, IDS[:2])
        await conn.execute(INSERT_PREDICTIONS, "t", PROFILE_T, RECORD, IDS[2:])
        with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
            await apply_migrations(conn)
        crossed = "predictions naming an academic record of another student: 1"
        assert refused.value.message == crossed
        assert "SELECT p.prediction_id FROM predictions p" in (refused.value.hint or "")
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") < "0033"
        # Its trigger is still the old one, which lets the crossed row stand.
        await conn.execute(INSERT_PREDICTIONS, "t", PROFILE_T, RECORD, [str(uuid.uuid4())])

        await conn.execute("DELETE FROM predictions WHERE student_id = 't'")
        assert "0033_predictions_records_of_their_own_student" in await apply_migrations(conn)
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute(INSERT_PREDICTIONS, "t", PROFILE_T, RECORD, [str(uuid.uuid4())])
    finally:
        await conn.close()
