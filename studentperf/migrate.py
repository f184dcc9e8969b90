"""Versioned SQL migrations: numbered files in `migrations/`, each applied once, in order.

`python -m studentperf.migrate` applies what is missing, connected as the database owner (the
only role allowed DDL). The recorder calls the same at start-up: with the schema current it only
reads `schema_migrations`, so its own role (which may not do DDL) suffices; with migrations
pending, that role gets a MigrationError saying to run the migrations as the owner. An
advisory lock serializes concurrent runners, so several processes starting at once is safe.

Migrations hold no passwords. The command line also sets the password of each process role
whose STUDENTPERF_DB_PASSWORD_<ROLE> (or STUDENTPERF_DB_PASSWORD_<ROLE>_FILE) is given, e.g.
STUDENTPERF_DB_PASSWORD_RECORDER; roles without one are left as they are.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Mapping
from importlib import resources

from studentperf.config import ConfigError, DatabaseRole, SharedSettings, env_secret, mask_dsn
from studentperf.extras import require_module
from studentperf.persistence.schema import (
    APPLIED_VERSIONS,
    CREATE_MIGRATIONS_TABLE,
    CURRENT_USER,
    IS_APPLIED,
    LOCK_RUNNERS,
    MIGRATIONS_TABLE_EXISTS,
    NOTE_APPLIED,
    SET_PASSWORD,
)

# Before asyncpg is imported: from a client-only install, name the extra that brings it.
require_module("asyncpg", "studentperf.migrate")

import asyncpg  # noqa: E402  (after the check above, on purpose)

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


class MigrationError(RuntimeError):
    """Migrations are pending and the connected role may not apply them."""


async def pending_migrations(conn: asyncpg.Connection) -> list[str]:
    """The versions not applied yet, found without DDL and without the lock."""
    versions = [version for version, _ in migration_files()]
    if await conn.fetchval(MIGRATIONS_TABLE_EXISTS) is None:
        return versions
    applied = {r["version"] for r in await conn.fetch(APPLIED_VERSIONS)}
    return [version for version in versions if version not in applied]


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Applies the migrations not yet applied, each in its own transaction; returns them.

    Raises MigrationError when some are pending and the connected role lacks the privileges.
    """
    pending = await pending_migrations(conn)
    if not pending:
        return []
    try:
        return await _apply(conn)
    except asyncpg.InsufficientPrivilegeError as err:
        user = await conn.fetchval(CURRENT_USER)
        raise MigrationError(
            f"migrations {', '.join(pending)} are pending and role {user} may not apply them "
            f"({err}): run `make migrate` (python -m studentperf.migrate) as the database owner"
        ) from err


async def _apply(conn: asyncpg.Connection) -> list[str]:
    applied_now: list[str] = []
    for version, sql in migration_files():
        async with conn.transaction():
            await conn.execute(LOCK_RUNNERS, _LOCK_KEY)
            await conn.execute(CREATE_MIGRATIONS_TABLE)
            done = await conn.fetchval(IS_APPLIED, version)
            if done:
                continue
            await conn.execute(sql)
            await conn.execute(NOTE_APPLIED, version)
            applied_now.append(version)
    return applied_now


def role_passwords(env: Mapping[str, str]) -> dict[DatabaseRole, str]:
    """The passwords STUDENTPERF_DB_PASSWORD_<ROLE> (or its _FILE) gives, by role."""
    found: dict[DatabaseRole, str] = {}
    for role in DatabaseRole:
        if role is not DatabaseRole.OWNER:
            password = env_secret(env, f"DB_PASSWORD_{role.name}")
            if password:
                found[role] = password
    return found


async def set_passwords(conn: asyncpg.Connection, passwords: Mapping[DatabaseRole, str]) -> None:
    """Gives each role its password (the statement is built server-side: %L quotes it)."""
    for role, password in passwords.items():
        statement = await conn.fetchval(SET_PASSWORD, role.value, password)
        await conn.execute(statement)


async def _main(database_url: str, passwords: Mapping[DatabaseRole, str]) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        applied = await apply_migrations(conn)
        await set_passwords(conn, passwords)
    finally:
        await conn.close()
    where = mask_dsn(database_url)
    if applied:
        print(f"applied {len(applied)} migration(s) to {where}: {', '.join(applied)}")
    else:
        print(f"schema of {where} is up to date")
    if passwords:
        print(f"password set for {', '.join(sorted(passwords))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--database-url",
        default=SharedSettings.from_env(os.environ, DatabaseRole.OWNER).database_url,
        help="PostgreSQL DSN of the database owner (default: $STUDENTPERF_DATABASE_URL)",
    )
    args = parser.parse_args()
    try:
        passwords = role_passwords(os.environ)
    except ConfigError as err:
        parser.error(str(err))
    asyncio.run(_main(args.database_url, passwords))


if __name__ == "__main__":
    main()
