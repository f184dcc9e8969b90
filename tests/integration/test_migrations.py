"""The SQL schema: every migration applies to an empty database, once, even when raced."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from infra.devstack import PostgresServer
from studentperf.migrate import apply_migrations, migration_files


async def fresh_database(postgres: PostgresServer) -> str:
    name = f"m{uuid.uuid4().hex[:12]}"
    await postgres.ensure_database(name)
    return postgres.dsn(name)


async def test_all_migrations_apply_to_an_empty_database_and_then_nothing(
    postgres: PostgresServer,
) -> None:
    conn = await asyncpg.connect(await fresh_database(postgres))
    try:
        expected = [version for version, _ in migration_files()]
        assert await apply_migrations(conn) == expected
        assert await apply_migrations(conn) == []
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
        assert {"students", "academic_records", "model_versions", "predictions"} <= tables
    finally:
        await conn.close()


async def test_concurrent_runners_apply_each_migration_once(postgres: PostgresServer) -> None:
    dsn = await fresh_database(postgres)
    conns = [await asyncpg.connect(dsn) for _ in range(3)]
    try:
        results = await asyncio.gather(*(apply_migrations(c) for c in conns))
        applied = [v for result in results for v in result]
        assert sorted(applied) == [version for version, _ in migration_files()]
    finally:
        for conn in conns:
            await conn.close()


async def test_constraints_refuse_what_the_api_refuses(postgres: PostgresServer) -> None:
    conn = await asyncpg.connect(await fresh_database(postgres))
    try:
        await apply_migrations(conn)
        insert = "INSERT INTO students (student_id, age, profile_as_of) VALUES ($1, $2, now())"
        await conn.execute(insert, "ok_id-1", 16)
        for student_id, age in [("bad id", 16), ("x" * 65, 16), ("fine", 5), ("fine", 101)]:
            try:
                await conn.execute(insert, student_id, age)
            except asyncpg.CheckViolationError:
                continue
            raise AssertionError(f"stored {student_id!r}, age {age}")
    finally:
        await conn.close()


async def test_a_prediction_must_name_the_student_its_profile_belongs_to(
    postgres: PostgresServer,
) -> None:
    """Migration 0016: one foreign key on (student_profile_id, student_id) replaces the two
    single ones, and refuses a prediction whose student is not its profile's student."""
    conn = await asyncpg.connect(await fresh_database(postgres))
    try:
        await apply_migrations(conn)
        profile, record, records_of_b = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        await conn.execute(
            "INSERT INTO students (student_id, profile_as_of) VALUES ('a', now()), ('b', now());"
            "INSERT INTO model_versions (model_version) VALUES ('v1')"
        )
        await conn.execute(
            "INSERT INTO student_profiles (student_profile_id, student_id) VALUES ($1, 'a')",
            profile,
        )
        await conn.execute(
            "INSERT INTO academic_records (academic_record_id, student_id) VALUES ($1, 'a'),"
            " ($2, 'b')",
            record,
            records_of_b,
        )
        insert = """
            INSERT INTO predictions (prediction_id, student_id, student_profile_id,
                academic_record_id, model_version, predicted_final_score, pass_probability,
                predicted_pass, pass_mark, predicted_at, event_schema_version)
            VALUES ($1, $2, $3, $4, 'v1', 70, 0.8, true, 50, now(), 1)"""
        await conn.execute(insert, uuid.uuid4(), "a", profile, record)
        try:
            # b's own record: only the profile is another student's (migration 0033 checks
            # the record's pair too).
            await conn.execute(insert, uuid.uuid4(), "b", profile, records_of_b)
        except asyncpg.ForeignKeyViolationError as refused:
            assert refused.constraint_name == "predictions_student_profile_id_student_id_fkey"
        else:
            raise AssertionError("stored a prediction for b made from a's profile")
        assert await conn.fetchval("SELECT count(*) FROM predictions") == 1
    finally:
        await conn.close()
