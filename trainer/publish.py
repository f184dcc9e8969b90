"""Many machines: the trainer's side of the model store (studentperf.model_store).

With publishing on (STUDENTPERF_MODEL_SOURCE=database, or `--publish`), every version the
trainer saves is also stored in the database, files and SHA-256s; before the promotion gate the
trainer brings its own models folder to the database's `current` (so it compares against what
the replicas serve, not against what this machine last trained); and a promotion moves the
database's pointer, which every replica follows, recording the move with the gate's reason
(model_pointer_moves). A publication that fails fails the run: a
version promoted only on this disk would reach no replica.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from studentperf.model_artifact import ModelArtifactError
from studentperf.model_store import (
    ArtifactRefused,
    MoveKind,
    PointerMove,
    current_pointer,
    download_version,
    follow_pointer,
    move_pointer,
    store_version,
)
from trainer.db_source import DatabaseUnavailable, connect

_FAILURES = (DatabaseUnavailable, asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


class PublishFailed(ModelArtifactError):
    """The database could not take the version or the pointer; the message says why."""


def publish_version(database_url: str, directory: Path) -> int:
    """Stores the version folder in the database; returns its size in bytes."""

    async def store() -> int:
        conn = await connect(database_url)
        try:
            return await store_version(conn, directory)
        finally:
            await conn.close()

    try:
        return asyncio.run(store())
    except _FAILURES as err:
        raise PublishFailed(f"storing version {directory.name} in the database: {err}") from err


def follow_database(database_url: str, models_dir: Path) -> tuple[str | None, str]:
    """Brings `models_dir` to the database's `current` (downloaded, hashes checked). Returns the
    version the pointer names (None: none yet) and, when that version was refused, why: the gate
    then goes on with what the folder holds, as it does when the current version cannot be
    loaded, so that a good version can replace a forged one."""

    async def follow() -> tuple[str | None, str]:
        conn = await connect(database_url)
        try:
            version = await current_pointer(conn)
            if version is None:
                return None, ""
            try:
                await follow_pointer(conn, models_dir)
            except ArtifactRefused as err:
                return version, str(err)
            return version, ""
        finally:
            await conn.close()

    try:
        return asyncio.run(follow())
    except _FAILURES as err:
        raise PublishFailed(f"reading the database's current version: {err}") from err


async def fetch_versions(
    database_url: str, versions: Sequence[str], models_dir: Path
) -> dict[str, str]:
    """Brings each of `versions` into `models_dir` from the database (hashes checked; one the
    folder holds already is not read again), so that the monitor reads a version's reference
    inputs and held-out figures on a machine that never trained it, as a replica serves it.
    Returns why each version that could not be brought was refused (not stored, or bytes that
    do not match their recorded SHA-256); a database that cannot be reached or read, or a
    folder that cannot be written, raises DatabaseUnavailable."""
    refused: dict[str, str] = {}
    conn = await connect(database_url)
    try:
        for version in versions:
            try:
                await download_version(conn, version, models_dir)
            except ArtifactRefused as err:
                refused[version] = str(err)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as err:
                # As the monitor's other reads: a failure (exit 2), never taken for an alert.
                raise DatabaseUnavailable(
                    f"bringing version {version} from the database into {models_dir} failed: "
                    f"{type(err).__name__}: {err}"
                ) from err
    finally:
        await conn.close()
    return refused


def database_current(database_url: str) -> str | None:
    """The version the database's `current` names; None when none was promoted there."""

    async def read() -> str | None:
        conn = await connect(database_url)
        try:
            return await current_pointer(conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(read())
    except _FAILURES as err:
        raise PublishFailed(f"reading the database's current version: {err}") from err


def point_database(
    database_url: str, version: str, expected: str | None, reason: str
) -> PointerMove | None:
    """Moves the database's `current` to `version` if it still names `expected` (what the gate
    compared against), recording the promotion with the gate's `reason`; returns the recorded
    move, None when the pointer named something else (nothing moved, nothing recorded)."""

    async def point() -> PointerMove | None:
        conn = await connect(database_url)
        try:
            return await move_pointer(
                conn, version, expected, kind=MoveKind.PROMOTION, reason=reason
            )
        finally:
            await conn.close()

    try:
        return asyncio.run(point())
    except _FAILURES as err:
        raise PublishFailed(f"moving the database's current to {version}: {err}") from err
