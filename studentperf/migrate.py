"""Versioned SQL migrations: numbered files in `migrations/`, each applied once, in order.

`python -m studentperf.migrate` applies what is missing; the recorder does the same at start-up.
An advisory lock serializes concurrent runners, so several processes starting at once is safe.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from importlib import resources

import asyncpg

from studentperf.config import SharedSettings, mask_dsn

# Any constant works; it only has to be the same for every runner of this schema.
_LOCK_KEY = 0x5354_5544  # "STUD"


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) of every migration, in the order they apply."""
    folder = resources.files("studentperf") / "migrations"
    found = sorted(
        (entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )
    return found


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Applies the migrations not yet applied, each in its own transaction; returns them."""
    applied_now: list[str] = []
    for version, sql in migration_files():
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = await conn.fetchval(
                "SELECT count(*) FROM schema_migrations WHERE version = $1", version
            )
            if done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied_now.append(version)
    return applied_now


async def _main(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        applied = await apply_migrations(conn)
    finally:
        await conn.close()
    where = mask_dsn(database_url)
    if applied:
        print(f"applied {len(applied)} migration(s) to {where}: {', '.join(applied)}")
    else:
        print(f"schema of {where} is up to date")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--database-url",
        default=SharedSettings.from_env(os.environ).database_url,
        help="PostgreSQL DSN (default: $STUDENTPERF_DATABASE_URL)",
    )
    asyncio.run(_main(parser.parse_args().database_url))


if __name__ == "__main__":
    main()
