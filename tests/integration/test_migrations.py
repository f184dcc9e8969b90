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
