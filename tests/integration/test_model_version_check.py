"""A recorded prediction always names a version model_versions holds (migration 0022).

The foreign key that said so checked and locked per row; its statement-level replacement must
refuse the same things with the same error the recorder's store handles (SQLSTATE 23503 and the
constraint's name: store.py retries, then splits the batch and dead-letters the row).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from infra.devstack import PostgresServer
from studentperf.config import DatabaseRole
from tests.integration.conftest import migrated_database
from tests.integration.helpers import ONE_STUDENTS_PARENTS

PARENTS = "INSERT INTO model_versions (model_version) VALUES ('v1');" + ONE_STUDENTS_PARENTS

# Three predictions of the one student, each naming the version given as $1, $2, $3.
INSERT_THREE = """
INSERT INTO predictions (prediction_id, student_id, student_profile_id, academic_record_id,
    model_version, predicted_final_score, pass_probability, predicted_pass, pass_mark,
    predicted_at, event_schema_version)
SELECT gen_random_uuid(), 's', '00000000-0000-4000-8000-000000000001',
       '00000000-0000-4000-8000-000000000002', version, 50, 0.5, true, 50, now(), 1
FROM unnest(ARRAY[$1, $2, $3]::text[]) AS version
"""


@pytest.fixture
async def owner(postgres: PostgresServer) -> AsyncIterator[asyncpg.Connection]:
    """This test's own migrated database, as its owner (whom no privilege stops)."""
    conn = await asyncpg.connect(postgres.dsn(await migrated_database(postgres, "versions")))
    try:
        await conn.execute(PARENTS)
        yield conn
    finally:
        await conn.close()


async def _count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM predictions"))


async def test_predictions_of_known_versions_are_stored(owner: asyncpg.Connection) -> None:
    await owner.execute(INSERT_THREE, "v1", "v1", "v1")
    assert await _count(owner) == 3


async def test_one_unknown_version_refuses_the_whole_statement(owner: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
        await owner.execute(INSERT_THREE, "v1", "v9", "v1")
    assert refused.value.constraint_name == "predictions_model_version_fkey"
    assert refused.value.table_name == "predictions"
    assert await _count(owner) == 0


async def test_a_prediction_cannot_be_moved_to_an_unknown_version(
    owner: asyncpg.Connection,
) -> None:
    await owner.execute(INSERT_THREE, "v1", "v1", "v1")
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await owner.execute("UPDATE predictions SET model_version = 'v9'")
    await owner.execute("INSERT INTO model_versions (model_version) VALUES ('v2')")
    await owner.execute("UPDATE predictions SET model_version = 'v2'")
    assert await owner.fetchval("SELECT count(*) FROM predictions WHERE model_version = 'v2'") == 3


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM model_versions WHERE model_version = 'v1'",
        "UPDATE model_versions SET model_version = 'v0' WHERE model_version = 'v1'",
        "TRUNCATE model_versions CASCADE",
    ],
)
async def test_a_version_row_is_never_removed_or_renamed(
    owner: asyncpg.Connection, statement: str
) -> None:
    await owner.execute(INSERT_THREE, "v1", "v1", "v1")
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await owner.execute(statement)
    assert await owner.fetchval("SELECT count(*) FROM model_versions WHERE model_version = 'v1'")
    assert await _count(owner) == 3


async def test_the_trainer_may_still_change_a_version_rows_facts(
    owner: asyncpg.Connection,
) -> None:
    await owner.execute("UPDATE model_versions SET pass_mark = 55 WHERE model_version = 'v1'")
    assert await owner.fetchval("SELECT pass_mark FROM model_versions") == 55


async def test_a_temporary_table_cannot_stand_in_for_model_versions(
    postgres: PostgresServer, owner: asyncpg.Connection
) -> None:
    """The foreign key looked up "public"."model_versions"; the trigger's unqualified
    name follows the inserting session's search_path, whose pg_temp comes first. The recorder,
    the role that inserts predictions, is also the one granted TEMPORARY (0004)."""
    database = await owner.fetchval("SELECT current_database()")
    recorder = await asyncpg.connect(postgres.dsn(database, user=DatabaseRole.RECORDER))
    try:
        async with recorder.transaction():
            await recorder.execute(
                "CREATE TEMPORARY TABLE model_versions (model_version text) ON COMMIT DROP;"
                "INSERT INTO model_versions VALUES ('ghost')"
            )
            with pytest.raises(asyncpg.ForeignKeyViolationError):
                await recorder.execute(INSERT_THREE, "ghost", "ghost", "ghost")
    finally:
        await recorder.close()
    dangling = await owner.fetchval(
        "SELECT count(*) FROM predictions p WHERE NOT EXISTS"
        " (SELECT FROM model_versions v WHERE v.model_version = p.model_version)"
    )
    assert dangling == 0
