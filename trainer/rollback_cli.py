"""`studentperf-rollback [VERSION]` (`make rollback [VERSION=v]`): serve an earlier version again.

Moves `current` back, in the model source STUDENTPERF_MODEL_SOURCE names: the models folder's
`current` link (folder, one machine) or the database's pointer (database, many machines, as the
trainer's role: the one that may move it, recording the move in model_pointer_moves as a
rollback, with why this version). Without VERSION, the version the one served replaced when
the gate promoted it (trainer.rollback). The chosen version's files are checked against the
SHA-256s the trainer recorded before anything moves. Services pick the move up as they do a
promotion: hot reload follows the link, or the pointer, on its next poll.

Exit status: 0 moved (or the version is served already), 2 refused (no such version, bytes that
do not verify, nothing to go back to; bad arguments), 1 the database could not be used or the
pointer moved meanwhile (try again).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from studentperf.config import ConfigError, DatabaseRole, SharedSettings, mask_dsn
from studentperf.model_artifact import CURRENT, set_current
from studentperf.model_folder import local_versions, verify_local
from studentperf.model_store import (
    MODEL_SOURCES,
    ArtifactRefused,
    MoveKind,
    PointerMove,
    current_pointer,
    move_pointer,
    published_versions,
    read_model_source,
    verify_stored,
)
from trainer.db_source import DatabaseUnavailable, connect
from trainer.promote import promotion_lock
from trainer.rollback import Choice, RollbackRefused, choose_version

REFUSED = 2
FAILED = 1


@dataclass(frozen=True)
class RollbackConfig:
    version: str | None  # None: the version the current one replaced (trainer.rollback)
    source: str  # one of MODEL_SOURCES
    models_dir: Path
    database_url: str


@dataclass(frozen=True)
class Moved:
    previous: str | None
    choice: Choice
    files: int  # how many files were verified (0: nothing moved, it was current already)
    recorded: PointerMove | None = None  # the database's record of the move (folder: none)


class PointerMoved(Exception):
    """Someone else moved the database's pointer between the read and the move."""


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str]) -> RollbackConfig:
    parser = argparse.ArgumentParser(prog="studentperf-rollback", description=__doc__)
    parser.add_argument(
        "version",
        nargs="?",
        help="the version to serve (default: the one the current version replaced)",
    )
    try:
        source = read_model_source(environ)
        shared = SharedSettings.from_env(environ, DatabaseRole.TRAINER)
    except ConfigError as err:
        parser.error(str(err))
    parser.add_argument(
        "--source",
        choices=MODEL_SOURCES,
        default=source,
        help="where `current` is (env STUDENTPERF_MODEL_SOURCE, default folder)",
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=Path(environ.get("STUDENTPERF_MODELS_DIR", "models")),
        help="the models folder, with --source folder (env STUDENTPERF_MODELS_DIR)",
    )
    parser.add_argument(
        "--database-url",
        default=shared.database_url,
        help="with --source database: as the trainer's role (env STUDENTPERF_DATABASE_URL)",
    )
    args = parser.parse_args(argv)
    return RollbackConfig(args.version or None, args.source, args.models_dir, args.database_url)


def roll_back_folder(models_dir: Path, requested: str | None) -> Moved:
    """Moves the folder's `current` link, under the gate's lock."""
    if not models_dir.is_dir():
        raise RollbackRefused(f"there is no models folder at {models_dir}")
    with promotion_lock(models_dir):
        link = models_dir / CURRENT
        current = link.readlink().name if link.is_symlink() else None
        choice = choose_version(requested, current, local_versions(models_dir))
        if choice.already_current:
            return Moved(current, choice, 0)
        files = verify_local(models_dir, choice.version)
        set_current(models_dir, choice.version)
    return Moved(current, choice, files)


async def roll_back_database(database_url: str, requested: str | None) -> Moved:
    """Moves the database's pointer if it still names the version read first."""
    conn = await connect(database_url)
    try:
        current = await current_pointer(conn)
        choice = choose_version(requested, current, await published_versions(conn))
        if choice.already_current:
            return Moved(current, choice, 0)
        files = await verify_stored(conn, choice.version)
        recorded = await move_pointer(
            conn, choice.version, current, kind=MoveKind.ROLLBACK, reason=choice.reason
        )
        if recorded is None:
            raise PointerMoved(
                f"the database's current moved away from {current} meanwhile (a promotion?); "
                "nothing done: look at what is served, then run the rollback again"
            )
    finally:
        await conn.close()
    return Moved(current, choice, files, recorded)


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv, os.environ)
    if config.source == "database":
        where = f"the database's pointer ({mask_dsn(config.database_url)})"
    else:
        where = f"{config.models_dir / CURRENT}"
    try:
        if config.source == "database":
            moved = asyncio.run(roll_back_database(config.database_url, config.version))
        else:
            moved = roll_back_folder(config.models_dir, config.version)
    except (RollbackRefused, ArtifactRefused) as err:
        print(f"rollback refused ({where}): {err}; nothing moved", file=sys.stderr)
        return REFUSED
    except (DatabaseUnavailable, PointerMoved, asyncpg.PostgresError, OSError) as err:
        print(f"rollback failed ({where}): {err}", file=sys.stderr)
        return FAILED
    version = moved.choice.version
    if moved.choice.already_current:
        print(f"{where} names {version} already: nothing to do")
        return 0
    print(
        f"rolled back {where}: {moved.previous} -> {version}, {moved.choice.reason}; "
        f"{moved.files} files verified against their recorded SHA-256"
    )
    if moved.recorded is not None:
        print(
            f"recorded as move {moved.recorded.id} in model_pointer_moves "
            f"(by {moved.recorded.moved_by} at {moved.recorded.moved_at:%Y-%m-%d %H:%M:%S%z})"
        )
    print(
        "services following it load it on their next poll (STUDENTPERF_MODEL_POLL_INTERVAL_S); "
        "the next promotion by the gate moves it on again"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
