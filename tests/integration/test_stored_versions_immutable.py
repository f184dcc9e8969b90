"""A stored version never changes once the trainer saved it (review, issue 17 item 4).

The SHA-256 a replica checks a file against sits in the same row as the file's bytes
(model_artifact_files.sha256), so whoever can change the bytes can change the hash with them:
the check then compares the forged bytes with the forger's hash, and the replica writes the
pickle to its folder and unpickles it. The tests in test_many_machines.py forge the bytes only.
So the tables refuse any change, to their owner too (migration 0021, as model_pointer_moves
does since 0017), and a file is only inserted with its version (0024): changing a stored
version takes a deliberate DDL step.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from inference_service.model_follower import ModelFollower
from infra.devstack import PostgresServer
from studentperf.config import DatabaseRole
from studentperf.model_artifact import MODEL_FILE
from studentperf.model_store import (
    MoveKind,
    current_pointer,
    move_pointer,
    sha256_hex,
    store_version,
)
from tests.integration.conftest import migrated_database
from tests.integration.helpers import train_version


@pytest.fixture
async def database(postgres: PostgresServer) -> AsyncIterator[str]:
    """This test's own migrated database, as the owner."""
    yield postgres.dsn(await migrated_database(postgres, "immutable"))


def _as(url: str, role: DatabaseRole) -> str:
    return url.replace(f"//{DatabaseRole.OWNER}@", f"//{role}@", 1)


async def test_a_stored_version_cannot_be_rewritten_with_a_matching_hash(
    database: str, tmp_path: Path
) -> None:
    trainer_models = tmp_path / "trainer-models"
    version = await asyncio.to_thread(train_version, trainer_models, 3, 3)
    trainer = await asyncpg.connect(_as(database, DatabaseRole.TRAINER))
    try:
        await store_version(trainer, trainer_models / version)
        assert await move_pointer(
            trainer, version, None, kind=MoveKind.PROMOTION, reason="the trainer's version"
        )
        assert await current_pointer(trainer) == version
    finally:
        await trainer.close()

    # Someone with the owner's rights (the role that runs the migrations) swaps the served
    # version's pickle for another one, and its recorded hash with it, in one statement; or
    # removes the version's files, to store forged ones under its name.
    other = await asyncio.to_thread(train_version, tmp_path / "elsewhere", 11, 11)
    forged = (tmp_path / "elsewhere" / other / MODEL_FILE).read_bytes()
    owner = await asyncpg.connect(database)
    try:
        for statement, args in (
            (
                "UPDATE model_artifact_files SET content = $3, sha256 = $4"
                " WHERE model_version = $1 AND file_name = $2",
                (version, MODEL_FILE, forged, sha256_hex(forged)),
            ),
            ("DELETE FROM model_artifact_files WHERE model_version = $1", (version,)),
            ("TRUNCATE model_artifact_files", ()),
            ("UPDATE model_artifacts SET stored_at = now()", ()),
            ("TRUNCATE model_artifacts CASCADE", ()),
        ):
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await owner.execute(statement, *args)
    finally:
        await owner.close()
    # Nor may it gain a file, which a replica that downloaded it before would never have: not
    # from the trainer's role, which stores versions, nor from the owner.
    added = b"feature,value\n"
    for url in (_as(database, DatabaseRole.TRAINER), database):
        conn = await asyncpg.connect(url)
        try:
            with pytest.raises(asyncpg.RaiseError, match="gains no file"):
                await conn.execute(
                    "INSERT INTO model_artifact_files VALUES ($1, $2, $3, $4)",
                    version,
                    "reference_inputs_extra.csv",
                    added,
                    sha256_hex(added),
                )
        finally:
            await conn.close()

    # A new replica (an empty folder of its own) follows the pointer: the trainer's bytes.
    replica = tmp_path / "replica"
    follower = ModelFollower(_as(database, DatabaseRole.INFERENCE), str(replica))
    try:
        await follower.sync()
    finally:
        await follower.close()
    placed = (replica / version / MODEL_FILE).read_bytes()
    assert placed != forged, f"a pickle the trainer never recorded was placed as {version}"
    assert placed == (trainer_models / version / MODEL_FILE).read_bytes()
