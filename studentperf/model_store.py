"""Model versions in the database, for replicas on many machines with no shared disk.

The trainer stores every version it saves (`store_version`: each file of the version folder with
its SHA-256, in one transaction) and moves the `current` pointer when it promotes one
(`move_pointer`, which records who moved it, from which version to which and why, in
model_pointer_moves). A replica follows the pointer (`fetch_current`): it downloads a version it
does not have into its own models folder, which then looks like the trainer's (version folders
and a `current` link, which the replica moves once it has loaded the version: see
inference_service.reload), so loading and hot reload stay what they are for one machine.

Every file's bytes are hashed and compared with the hash the trainer recorded BEFORE anything is
written to disk, let alone unpickled: a pickle is code, and a version whose bytes were changed in
the table is refused (ArtifactRefused) without touching the folder. Only the trainer's role may
write the tables (migration 0015). A rollback (trainer/rollback_cli.py) checks a stored version
with `verify_stored` and chooses among `published_versions` before it moves the pointer. A new
replica whose pointer's version does not load there walks `replaced_versions` back for one that
does (inference_service.reload).
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Final

import asyncpg

from studentperf.config import ConfigError, env_str
from studentperf.durable import fsync_path
from studentperf.model_artifact import (
    CURRENT,
    METADATA_FILE,
    MODEL_FILE,
    ModelArtifactError,
    linked_version,
    set_current,
)
from studentperf.persistence.artifacts import (
    CURRENT_POINTER,
    FILE_PART,
    MOVE_POINTER,
    PUBLISHED_VERSIONS,
    REPLACED_VERSIONS,
    STORE_FILE,
    STORE_VERSION,
    VERSION_FILES,
)

# A version's files are read in parts of this size, one statement each: every statement is
# bounded (the follower's command timeout), so a large model on a slow link still arrives,
# part by part, where one statement for all of it would time out on every try.
DOWNLOAD_PART_BYTES = 1 << 20

# Where promoted versions travel: "folder" (one machine, the `current` link) or "database".
MODEL_SOURCES: Final = ("folder", "database")


def read_model_source(env: Mapping[str, str]) -> str:
    """STUDENTPERF_MODEL_SOURCE, one of MODEL_SOURCES (any case); ConfigError otherwise."""
    source = env_str(env, "MODEL_SOURCE", MODEL_SOURCES[0]).lower()
    if source not in MODEL_SOURCES:
        raise ConfigError(
            f"STUDENTPERF_MODEL_SOURCE={source!r} is not valid: must be one of "
            f"{', '.join(MODEL_SOURCES)}"
        )
    return source


class ArtifactRefused(ModelArtifactError):
    """A stored version that must not be loaded: a hash mismatch, a missing or odd file."""

    def __init__(self, version: str, reason: str) -> None:
        super().__init__(f"version {version}: {reason}")
        self.version = version


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _plain_name(name: str) -> bool:
    """A name that is one path component, never hidden or climbing out of its folder, and not
    the `current` link's (a version of that name would make the link point at itself)."""
    return bool(name) and Path(name).name == name and not name.startswith(".") and name != CURRENT


async def store_version(conn: asyncpg.Connection, directory: Path) -> int:
    """Stores the version folder's files with their SHA-256 in one transaction; returns how many
    bytes. A version stored already is an error (asyncpg.UniqueViolationError): versions never
    change once saved. Not inside another transaction: a file is accepted only in the top-level
    transaction that inserted its version (migration 0024)."""
    files = await asyncio.to_thread(_read_files, directory)
    async with conn.transaction():
        await conn.execute(STORE_VERSION, directory.name)
        for name, content in files:
            await conn.execute(STORE_FILE, directory.name, name, content, sha256_hex(content))
    return sum(len(content) for _, content in files)


def _read_files(directory: Path) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted(directory.iterdir()) if p.is_file()]


async def current_pointer(conn: asyncpg.Connection) -> str | None:
    """The version `current` names in the database; None when none was promoted there."""
    version: str | None = await conn.fetchval(CURRENT_POINTER)
    return version


class MoveKind(StrEnum):
    """Why `current` moved, as model_pointer_moves.kind records it (migration 0017)."""

    PROMOTION = "promotion"  # the gate promoted a new version (trainer/train.py)
    ROLLBACK = "rollback"  # an operator served an earlier one (trainer/rollback_cli.py)


@dataclass(frozen=True)
class PointerMove:
    """A move of `current`, as recorded in model_pointer_moves."""

    id: int
    moved_at: datetime
    moved_by: str  # the database role that moved it


async def move_pointer(
    conn: asyncpg.Connection, version: str, expected: str | None, *, kind: MoveKind, reason: str
) -> PointerMove | None:
    """Points `current` at `version` if it still names `expected` (None: no version yet) and
    records the move with its kind and reason, both in one statement; returns the recorded move,
    or None when the pointer named something else and nothing moved."""
    row = await conn.fetchrow(MOVE_POINTER, version, expected, kind.value, reason)
    if row is None:
        return None
    return PointerMove(row["id"], row["moved_at"], row["moved_by"])


async def replaced_versions(conn: asyncpg.Connection, version: str, most: int) -> list[str]:
    """The versions `version` replaced, walking its promotions back, nearest first: at most
    `most` steps, each version once and never `version` itself (a walk may come round to one
    again). Empty when no promotion to it was recorded (migration 0017)."""
    rows = await conn.fetch(REPLACED_VERSIONS, version, most)
    return distinct_versions(version, [row["model_version"] for row in rows])


def distinct_versions(version: str, walked: list[str]) -> list[str]:
    """`walked` in its order, each once, without `version`: a version a walk comes round to
    again was tried already, or is the one being replaced."""
    seen, distinct = {version}, []
    for walked_version in walked:
        if walked_version not in seen:
            seen.add(walked_version)
            distinct.append(walked_version)
    return distinct


@dataclass(frozen=True)
class Followed:
    version: str
    downloaded: bool  # False: it was in the local folder already


async def download_version(conn: asyncpg.Connection, version: str, models_dir: Path) -> bool:
    """Makes `models_dir/version` hold the stored version, its hashes checked first; returns
    whether it had to be downloaded. Raises ArtifactRefused on a mismatch (nothing written)."""
    if not _plain_name(version):
        raise ArtifactRefused(version, "not a version name")
    target = models_dir / version
    if (target / MODEL_FILE).is_file():
        return False  # written only after its hashes were checked (below)
    files = await stored_files(conn, version)
    # Off the event loop: hashing a model of some megabytes takes a while.
    await asyncio.to_thread(place_checked, models_dir, version, files)
    return True


async def stored_files(conn: asyncpg.Connection, version: str) -> list[tuple[str, bytes, str]]:
    """The version's files as stored, (name, bytes, recorded SHA-256), unchecked; read in
    parts of DOWNLOAD_PART_BYTES, all from one snapshot."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(VERSION_FILES, version)
        files = []
        for row in rows:
            name, size = row["file_name"], row["size"]
            content = bytearray()
            while len(content) < size:
                part = await conn.fetchval(
                    FILE_PART, version, name, len(content) + 1, DOWNLOAD_PART_BYTES
                )
                if not part:  # cannot be, in one snapshot; but never loop on it
                    raise ArtifactRefused(version, f"{name} ends before its recorded size")
                content += part
            files.append((name, bytes(content), row["sha256"]))
    return files


def place_checked(models_dir: Path, version: str, files: list[tuple[str, bytes, str]]) -> None:
    """Checks every file against its recorded SHA-256, then writes them all as
    `models_dir/version`, all or nothing. Raises ArtifactRefused, having written nothing."""
    check_files(version, files)
    _place(models_dir, version, [(name, content) for name, content, _ in files])


def check_files(version: str, files: list[tuple[str, bytes, str]]) -> None:
    """Raises ArtifactRefused unless the version has its model and metadata and every file
    hashes to its recorded SHA-256."""
    names = {name for name, _, _ in files}
    if not {MODEL_FILE, METADATA_FILE} <= names:
        raise ArtifactRefused(version, f"the database holds no {MODEL_FILE} or {METADATA_FILE}")
    for name, content, recorded in files:
        if not _plain_name(name):
            raise ArtifactRefused(version, f"holds a file named {name!r}")
        found = sha256_hex(content)
        if found != recorded:
            raise ArtifactRefused(
                version,
                f"{name} hashes to {found[:16]}..., not the {recorded[:16]}... the trainer "
                "recorded; refused unread",
            )


def _place(models_dir: Path, version: str, files: list[tuple[str, bytes]]) -> None:
    """Writes the checked files as `models_dir/version`, all or nothing, and durably: a
    version folder that exists is trusted as complete (`download_version`), so its files reach
    the disk before its name does, or a machine crash could leave it there with empty files."""
    target = models_dir / version
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = models_dir / f".download-{version}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        for name, content in files:
            (staging / name).write_bytes(content)
            fsync_path(staging / name)
        fsync_path(staging)
        try:
            staging.rename(target)
        except OSError:
            # Another process of this machine (a worker) placed it meanwhile: the same checked
            # bytes, or the rename would not have failed on a complete folder.
            if not (target / MODEL_FILE).is_file():
                raise
        fsync_path(models_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


async def fetch_current(
    conn: asyncpg.Connection, models_dir: Path, *, refused: str | None = None
) -> Followed | None:
    """Makes `models_dir` hold the version the database's `current` names (downloaded if
    missing, hashes checked) without moving the local link. None: nothing was promoted in the
    database yet, or the pointer still names `refused` (refused already: not downloaded again)."""
    version = await current_pointer(conn)
    if version is None or version == refused:
        return None
    return Followed(version, await download_version(conn, version, models_dir))


async def follow_pointer(conn: asyncpg.Connection, models_dir: Path) -> Followed | None:
    """`fetch_current`, then points the local `current` link at that version: the trainer's
    folder, which gates against what the database serves."""
    followed = await fetch_current(conn, models_dir)
    if followed is not None and linked_version(models_dir) != followed.version:
        await asyncio.to_thread(set_current, models_dir, followed.version)
    return followed


@dataclass(frozen=True)
class Published:
    """A version a model source holds, and when the gate last promoted it (None: never, or
    not known). With `replaced_known`, `replaced` is the version that promotion took `current`
    from (None: it was the first one served); promotions noted before the sources kept that
    (the database's before migration 0017, a folder's log before this rule) leave it unknown."""

    version: str
    promoted_at: datetime | None
    replaced: str | None = None
    replaced_known: bool = False


async def published_versions(conn: asyncpg.Connection) -> list[Published]:
    """Every version stored in the database, with its last promotion (model_versions)."""
    rows = await conn.fetch(PUBLISHED_VERSIONS)
    return [
        Published(row["model_version"], row["promoted_at"], row["replaced"], row["replaced_known"])
        for row in rows
    ]


async def verify_stored(conn: asyncpg.Connection, version: str) -> int:
    """Checks the stored version's files against their recorded SHA-256s, nothing written;
    returns how many files. Raises ArtifactRefused."""
    files = await stored_files(conn, version)
    await asyncio.to_thread(check_files, version, files)
    return len(files)
