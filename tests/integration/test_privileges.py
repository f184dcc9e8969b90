"""Least privilege: each process's PostgreSQL role does what its code does, and nothing else.

The roles come from migration 0004. Each is exercised through the project's own code (the
recorder's store, predictions and, since migration 0009, outcomes, since 0011 imported CSV
rows; the CSV import's wait, the trainer's reads and registry, the monitor's reads), then
refused, with insufficient_privilege, what it must never do: change or delete predictions,
write what another process owns, any write as the analyst, any DDL. The inference service
writes nothing (0009: RecordOutcomes publishes events the recorder writes), nor does the CSV
import (0011: it publishes events too, and reads only which of them were stored).
Retention's role (migration 0007), taken by the recorder only, deletes what retention removes
and nothing more. The record of the model pointer's moves (migration 0017) is written by the
trainer only, read by it and the analyst only, and changed or deleted by nobody, the owner
included.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from infra.devstack import PostgresServer, free_port
from recorder_service.rows import import_staging_row, outcome_staging_row, staging_row
from recorder_service.store import PostgresStore, remove_batch
from studentperf.config import DatabaseRole
from studentperf.migrate import MigrationError, apply_migrations, migration_files
from studentperf.model_store import MoveKind, current_pointer, move_pointer
from studentperf.persistence.erasure import ERASURE_ROLE
from studentperf.persistence.retention import RETENTION_ROLE
from tests.integration.conftest import migrated_database
from tests.integration.recorder_support import make_event, make_outcome_event
from trainer.db_source import read_labelled_rows
from trainer.import_events import import_event
from trainer.import_wait import wait_until_stored
from trainer.kaggle import KaggleRow
from trainer.monitor.data import read_held_out, read_recent
from trainer.registry import register_version

PROCESS_ROLES = [role for role in DatabaseRole if role is not DatabaseRole.OWNER]
TABLES = [
    "model_versions",
    "students",
    "student_profiles",
    "academic_records",
    "predictions",
    "outcomes",
    "imported_rows",
    "schema_migrations",
    "model_pointer_moves",
]

# A bare prediction row: what a role may not add is refused before any constraint is checked.
INSERT_PREDICTION = """
INSERT INTO predictions (prediction_id, student_id, student_profile_id, academic_record_id,
    model_version, predicted_final_score, pass_probability, predicted_pass, pass_mark,
    predicted_at, event_schema_version)
VALUES (gen_random_uuid(), 's', gen_random_uuid(), gen_random_uuid(), 'v', 50, 0.5, true, 50,
        now(), 1)
"""

INSERT_OUTCOME = (
    "INSERT INTO outcomes (student_id, term, final_score, source) VALUES ('s', '2026-x', 1, 't')"
)
INSERT_IMPORTED = "INSERT INTO imported_rows (event_id, student_id) VALUES (gen_random_uuid(), 's')"

DDL = [
    "CREATE TABLE scratch (id int)",
    "ALTER TABLE predictions ADD COLUMN scratch int",
    "CREATE INDEX scratch_idx ON outcomes (final_score)",
    "DROP TABLE outcomes",
    "TRUNCATE predictions",
]
TEMP_TABLE = "CREATE TEMPORARY TABLE scratch (id int)"

# A column of each table, for an UPDATE that would change nothing if it were allowed.
SOME_COLUMN = {table: "student_id" for table in TABLES} | {
    "model_versions": "model_version",
    "schema_migrations": "version",
    "model_pointer_moves": "reason",
}

# Migration 0017: a move of `current`, as only the trainer records it (with the pointer's move).
INSERT_MOVE = (
    "INSERT INTO model_pointer_moves (from_version, to_version, kind, reason)"
    " VALUES (NULL, 'v', 'rollback', 'r')"
)

# (role, statement): what each role must not do.
FORBIDDEN: list[tuple[DatabaseRole, str]] = [
    *[
        (DatabaseRole.INFERENCE, sql)
        for sql in (
            "DELETE FROM predictions",
            "UPDATE predictions SET pass_mark = 0",
            "SELECT count(*) FROM predictions",
            INSERT_PREDICTION,
            "UPDATE students SET gender = 'other'",
            "SELECT gender FROM students",
            "DELETE FROM outcomes",
            "UPDATE outcomes SET student_id = 'other'",
            "INSERT INTO model_versions (model_version) VALUES ('v')",
            # What RecordOutcomes wrote before migration 0009: now the recorder's.
            INSERT_OUTCOME,
            "UPDATE outcomes SET final_score = 0",
            "SELECT count(*) FROM outcomes",
            "INSERT INTO students (student_id, profile_as_of) VALUES ('s', now())",
            "SELECT student_id FROM students",
        )
    ],
    *[
        (DatabaseRole.TRAINER, sql)
        for sql in (
            INSERT_PREDICTION,
            "UPDATE predictions SET pass_mark = 0",
            "DELETE FROM predictions",
            "DELETE FROM model_versions",
            INSERT_OUTCOME,
            "UPDATE outcomes SET final_score = 0",
            "UPDATE students SET gender = 'other'",
        )
    ],
    *[
        (DatabaseRole.RECORDER, sql)
        for sql in (
            "DELETE FROM predictions",
            "UPDATE predictions SET pass_mark = 0",
            "DELETE FROM students",
            "UPDATE students SET student_id = 'other'",
            "SELECT * FROM predictions",
            "UPDATE model_versions SET promoted_at = now()",
            # Migration 0018: a bare version row only, never a promotion time of its own.
            "INSERT INTO model_versions (model_version, promoted_at) VALUES ('v', now())",
            "DELETE FROM outcomes",
            "UPDATE outcomes SET term = '2020-x'",
            "UPDATE outcomes SET student_id = 'other'",
            "DELETE FROM imported_rows",
            "UPDATE imported_rows SET student_id = 'other'",
        )
    ],
    *[
        (DatabaseRole.IMPORTER, sql)
        for sql in (
            INSERT_PREDICTION,
            "SELECT count(*) FROM predictions",
            "DELETE FROM outcomes",
            "DELETE FROM students",
            "UPDATE students SET student_id = 'other'",
            "UPDATE outcomes SET term = '2020-x'",
            "INSERT INTO model_versions (model_version) VALUES ('v')",
            # What `make import` wrote before migration 0011: now the recorder's.
            "INSERT INTO students (student_id, profile_as_of) VALUES ('s', now())",
            "UPDATE students SET gender = 'other'",
            INSERT_OUTCOME,
            "UPDATE outcomes SET final_score = 0",
            "SELECT gender FROM students",
            "SELECT count(*) FROM outcomes",
            INSERT_IMPORTED,
            "DELETE FROM imported_rows",
        )
    ],
    *[(DatabaseRole.ANALYST, f"DELETE FROM {table}") for table in TABLES],
    *[
        (DatabaseRole.ANALYST, f"UPDATE {table} SET {column} = {column}")
        for table, column in SOME_COLUMN.items()
    ],
    (DatabaseRole.ANALYST, INSERT_PREDICTION),
    (DatabaseRole.ANALYST, INSERT_OUTCOME),
    (DatabaseRole.ANALYST, INSERT_IMPORTED),
    (DatabaseRole.ANALYST, "INSERT INTO schema_migrations (version) VALUES ('9999')"),
    # Migration 0015: a stored version is code every replica runs, so only the trainer writes
    # versions and the pointer, and nobody, the trainer included, changes or deletes a version.
    *[
        (role, sql)
        for role in PROCESS_ROLES
        if role is not DatabaseRole.TRAINER
        for sql in (
            "INSERT INTO model_artifacts (model_version) VALUES ('v')",
            "INSERT INTO model_artifact_files (model_version, file_name, content, sha256)"
            " VALUES ('v', 'f', ''::bytea, repeat('0', 64))",
            "INSERT INTO model_pointer (name, model_version) VALUES ('current', 'v')",
            "UPDATE model_pointer SET model_version = 'v'",
        )
    ],
    *[
        (role, sql)
        for role in PROCESS_ROLES
        for sql in (
            "UPDATE model_artifact_files SET content = ''::bytea",
            "UPDATE model_artifact_files SET sha256 = repeat('0', 64)",
            "DELETE FROM model_artifact_files",
            "DELETE FROM model_artifacts",
            "DELETE FROM model_pointer",
        )
    ],
    # Migration 0017: the pointer's moves are an append-only audit. Only the trainer, which
    # moves the pointer, records a move, and it cannot choose who or when; only it and the
    # analyst read them, and the replicas (0025) only which version a promotion replaced, for
    # a new replica's fallback: not who moved the pointer, when or why; nobody changes or
    # removes one.
    *[
        (role, sql)
        for role in PROCESS_ROLES
        if role is not DatabaseRole.TRAINER
        for sql in (INSERT_MOVE,)
    ],
    *[
        (role, "SELECT count(*) FROM model_pointer_moves")
        for role in PROCESS_ROLES
        if role not in (DatabaseRole.TRAINER, DatabaseRole.ANALYST, DatabaseRole.INFERENCE)
    ],
    *[
        (DatabaseRole.INFERENCE, f"SELECT {column} FROM model_pointer_moves")
        for column in ("reason", "moved_by", "moved_at", "*")
    ],
    (
        DatabaseRole.TRAINER,
        "INSERT INTO model_pointer_moves (to_version, kind, reason, moved_by)"
        " VALUES ('v', 'rollback', 'r', 'studentperf_analyst')",
    ),
    (
        DatabaseRole.TRAINER,
        "INSERT INTO model_pointer_moves (to_version, kind, reason, moved_at)"
        " VALUES ('v', 'rollback', 'r', '2000-01-01')",
    ),
    *[
        (role, sql)
        for role in PROCESS_ROLES
        for sql in (
            "UPDATE model_pointer_moves SET reason = 'rewritten'",
            "UPDATE model_pointer_moves SET moved_by = current_user",
            "DELETE FROM model_pointer_moves",
        )
    ],
    *[(role, sql) for role in PROCESS_ROLES for sql in DDL],
    *[(role, "TRUNCATE model_pointer_moves") for role in PROCESS_ROLES],
    # Only the recorder stages its batches in a temporary table.
    *[(role, TEMP_TABLE) for role in PROCESS_ROLES if role is not DatabaseRole.RECORDER],
]


# What the retention role (migration 0007), taken by the recorder, still may not do: it deletes
# predictions, profiles, records and students, and nothing else; it changes and adds nothing.
FORBIDDEN_TO_RETENTION = [
    "DELETE FROM outcomes",
    "DELETE FROM model_versions",
    "DELETE FROM schema_migrations",
    "UPDATE predictions SET pass_mark = 0",
    "UPDATE students SET gender = 'other'",
    INSERT_PREDICTION,
    INSERT_OUTCOME,
    "SELECT pass_mark FROM predictions",
    "SELECT gender FROM students",
    "SELECT final_score FROM outcomes",
    "DELETE FROM model_pointer_moves",
    "UPDATE model_pointer_moves SET reason = 'rewritten'",
    INSERT_MOVE,
    *DDL,
    TEMP_TABLE,
]


@pytest.fixture(scope="module")
async def database(postgres: PostgresServer) -> str:
    return await migrated_database(postgres, "p")


async def connect_as(postgres: PostgresServer, database: str, role: DatabaseRole) -> Any:
    return await asyncpg.connect(postgres.dsn(database, user=role))


def model_metadata(version: str) -> dict[str, Any]:
    """The metadata.json fields trainer/registry.py stores."""
    return {
        "version": version,
        "created_at": "2026-01-01T00:00:00+00:00",
        "pass_mark": 50.0,
        "data_source": "test",
        "data_sha256": "0" * 64,
        "train_rows": 1,
        "validation_rows": 1,
        "test_rows": 1,
        "estimators": {"score": "s", "pass": "p"},
        "feature_columns": ["age"],
        "libraries": {},
        "metrics": {"score_r2": 0.5},
        "baseline_metrics": {},
    }


async def test_the_roles_the_code_names_are_the_roles_the_migration_creates(
    postgres: PostgresServer, database: str
) -> None:
    conn = await asyncpg.connect(postgres.dsn(database))
    try:
        found = {
            r["rolname"]: r
            for r in await conn.fetch("SELECT * FROM pg_roles WHERE rolname LIKE 'studentperf_%'")
        }
    finally:
        await conn.close()
    # The roles that may delete cannot log in: processes take them with SET ROLE (0007, 0010).
    deleting = {name: found.pop(name) for name in (RETENTION_ROLE, ERASURE_ROLE)}
    assert set(found) == {str(role) for role in PROCESS_ROLES}
    # The recorder holds them without inheriting them: its ordinary writes cannot delete.
    assert not found[DatabaseRole.RECORDER]["rolinherit"]
    for name, role in (*found.items(), *deleting.items()):
        assert role["rolcanlogin"] == (name not in deleting), name
        assert not (role["rolsuper"] or role["rolcreaterole"] or role["rolcreatedb"]), name
        assert not role["rolbypassrls"], name


async def test_each_role_does_what_its_process_does(
    postgres: PostgresServer, database: str
) -> None:
    url = {role: postgres.dsn(database, user=role) for role in PROCESS_ROLES}
    # The recorder: two events of one student; the newer profile replaces the older.
    first, second = (
        make_event("priv-1", age=15, seconds=1_700_000_000),
        make_event("priv-1", age=16, seconds=1_700_000_100),
    )
    # RecordOutcomes' events, written by the recorder: an outcome for a known student, one for
    # a new student (added bare), then the first one replaced by a later event.
    outcomes = [
        make_outcome_event("priv-1", "2026-spring", 60.0, seconds=1_700_000_200),
        make_outcome_event("priv-2", "2026-spring", 40.0, seconds=1_700_000_200),
        make_outcome_event("priv-1", "2026-spring", 70.0, seconds=1_700_000_300),
    ]
    async with asyncpg.create_pool(url[DatabaseRole.RECORDER], min_size=1, max_size=1) as pool:
        # At start-up the recorder checks the schema; current, it needs no DDL.
        async with pool.acquire() as conn:
            assert await apply_migrations(conn) == []
        store = PostgresStore(pool)
        result = await store.write([staging_row(first, 0), staging_row(second, 1)])
        assert (result.stored, result.refused) == (2, [])
        result = await store.write([outcome_staging_row(e, 2 + i) for i, e in enumerate(outcomes)])
        assert (result.stored, result.already_stored, result.refused) == (0, 0, [])

    # `make import`'s events, written by the recorder; the importer reads that they were.
    imported = import_event(
        KaggleRow(3, "priv-3", "female", "bachelor", "standard", "none", 88.0),
        file_sha256="0" * 64,
        term="2025-fall",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    async with asyncpg.create_pool(url[DatabaseRole.RECORDER], min_size=1, max_size=1) as pool:
        result = await PostgresStore(pool).write([import_staging_row(imported, 4)])
        assert result.refused == []
    stored = await wait_until_stored(
        url[DatabaseRole.IMPORTER], [imported.event_id], stall_timeout_s=5
    )
    assert stored == 1

    # The trainer reads its rows and registers a version; the monitor reads predictions.
    trainer = url[DatabaseRole.TRAINER]
    assert len((await read_labelled_rows(trainer)).frame) == 3
    await register_version(trainer, model_metadata("test-model"), decision="d", promoted=True)
    recent = await read_recent(trainer, since=None, last=10)
    assert len(recent) == 2 and recent["final_score"].notna().sum() == 2
    assert await read_held_out(trainer, ["test-model"]) == {"test-model": {"score_r2": 0.5}}

    # The analyst reads every table.
    conn = await connect_as(postgres, database, DatabaseRole.ANALYST)
    try:
        counts = {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}
        scores = await conn.fetch(
            "SELECT student_id, final_score, source FROM outcomes WHERE term = '2026-spring'"
            " ORDER BY student_id"
        )
    finally:
        await conn.close()
    print(f"rows the roles wrote, as the analyst reads them: {counts}")
    assert counts["predictions"] == 2 and counts["outcomes"] == 3 and counts["students"] == 3
    assert counts["imported_rows"] == 1
    # The later of priv-1's two outcome events counts.
    assert [tuple(r) for r in scores] == [("priv-1", 70.0, "rpc"), ("priv-2", 40.0, "rpc")]


@pytest.mark.parametrize(
    ("role", "sql"),
    [
        pytest.param(role, sql, id=f"{role.name}: {' '.join(sql.split())[:48]}")
        for role, sql in FORBIDDEN
    ],
)
async def test_each_role_is_refused_what_it_must_not_do(
    postgres: PostgresServer, database: str, role: DatabaseRole, sql: str
) -> None:
    conn = await connect_as(postgres, database, role)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(sql)
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "sql", [pytest.param(sql, id=" ".join(sql.split())[:48]) for sql in FORBIDDEN_TO_RETENTION]
)
async def test_the_retention_role_may_delete_only_what_retention_removes(
    postgres: PostgresServer, database: str, sql: str
) -> None:
    conn = await connect_as(postgres, database, DatabaseRole.RECORDER)
    try:
        await conn.execute(f"SET ROLE {RETENTION_ROLE}")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(sql)
    finally:
        await conn.close()


async def test_the_pointer_moves_are_recorded_by_the_trainer_and_changed_by_nobody(
    postgres: PostgresServer, database: str
) -> None:
    """Migration 0017: the trainer's move of `current` leaves a row naming it, which the
    analyst reads; a move without its row is refused; even the owner, whom grants do not bind,
    cannot change or remove a row."""
    version = f"priv-{uuid.uuid4().hex[:8]}"
    trainer = await connect_as(postgres, database, DatabaseRole.TRAINER)
    try:
        await trainer.execute("INSERT INTO model_artifacts (model_version) VALUES ($1)", version)
        before = await current_pointer(trainer)
        move = await move_pointer(
            trainer, version, before, kind=MoveKind.PROMOTION, reason="privileges test"
        )
        assert move is not None and move.moved_by == DatabaseRole.TRAINER
        # Against a pointer that names something else: nothing moves, nothing is recorded.
        stale = await move_pointer(
            trainer, version, "not-served", kind=MoveKind.ROLLBACK, reason="stale"
        )
        assert stale is None
        # A move by hand, not recorded, is refused when the transaction commits.
        other = f"{version}-by-hand"
        await trainer.execute("INSERT INTO model_artifacts (model_version) VALUES ($1)", other)
        with pytest.raises(asyncpg.RaiseError, match="with no row in model_pointer_moves"):
            await trainer.execute("UPDATE model_pointer SET model_version = $1", other)
        assert await current_pointer(trainer) == version
    finally:
        await trainer.close()
    analyst = await connect_as(postgres, database, DatabaseRole.ANALYST)
    try:
        rows = await analyst.fetch("SELECT * FROM model_pointer_moves WHERE id = $1", move.id)
        stale_rows = await analyst.fetchval(
            "SELECT count(*) FROM model_pointer_moves WHERE reason = 'stale'"
        )
    finally:
        await analyst.close()
    assert [(r["from_version"], r["to_version"], r["kind"], r["moved_by"]) for r in rows] == [
        (before, version, "promotion", DatabaseRole.TRAINER.value)
    ]
    assert stale_rows == 0
    owner = await asyncpg.connect(postgres.dsn(database))
    try:
        for sql in (
            "UPDATE model_pointer_moves SET reason = 'rewritten'",
            "DELETE FROM model_pointer_moves",
            "TRUNCATE model_pointer_moves",
        ):
            with pytest.raises(asyncpg.RaiseError, match="model_pointer_moves is append-only"):
                await owner.execute(sql)
        assert await owner.fetchval(
            "SELECT reason FROM model_pointer_moves WHERE id = $1", move.id
        ) == ("privileges test")
    finally:
        await owner.close()


async def test_the_recorder_deletes_only_as_the_retention_role(
    postgres: PostgresServer, database: str
) -> None:
    """Retention's own statements run as the recorder; other process roles cannot take the
    role that makes them possible."""
    event = make_event("priv-expired", seconds=1_500_000_000)
    async with asyncpg.create_pool(
        postgres.dsn(database, user=DatabaseRole.RECORDER), min_size=1, max_size=1
    ) as pool:
        assert (await PostgresStore(pool).write([staging_row(event, 0)])).stored == 1
        async with pool.acquire() as conn:
            removed = await remove_batch(conn, datetime(2020, 1, 1, tzinfo=UTC), 10)
    print(f"retention as the recorder removed: {removed}")
    assert (removed.predictions, removed.student_profiles, removed.academic_records) == (1, 1, 1)
    assert removed.students == 1
    for role in PROCESS_ROLES:
        if role is DatabaseRole.RECORDER:
            continue
        conn = await connect_as(postgres, database, role)
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(f"SET ROLE {RETENTION_ROLE}")
        finally:
            await conn.close()


async def test_a_role_cannot_migrate_and_says_who_can(postgres: PostgresServer) -> None:
    name = f"p{uuid.uuid4().hex[:12]}"
    await postgres.ensure_database(name)  # empty: every migration pending
    conn = await connect_as(postgres, name, DatabaseRole.RECORDER)
    try:
        with pytest.raises(MigrationError, match="as the database owner") as caught:
            await apply_migrations(conn)
        assert "studentperf_recorder" in str(caught.value)
    finally:
        await conn.close()


@pytest.fixture
async def fresh_cluster(tmp_path: Path) -> AsyncIterator[PostgresServer]:
    """A cluster of its own: the session's already has the roles."""
    server = PostgresServer(tmp_path / "postgres", port=free_port())
    await server.start_and_wait(timeout=60)
    yield server
    server.stop()


async def test_two_databases_creating_the_roles_at_once_both_succeed(
    fresh_cluster: PostgresServer,
) -> None:
    """The race, made certain: b's migration waits on the roles a's has created but not yet
    committed; once a commits, b's finds them taken and goes on."""
    files = migration_files()
    at = [version for version, _ in files].index("0004_roles")
    earlier, roles_sql = files[:at], files[at][1]
    conns = {}
    for name in ("a", "b"):
        await fresh_cluster.ensure_database(name)
        conns[name] = await asyncpg.connect(fresh_cluster.dsn(name))
        await conns[name].execute("CREATE TABLE schema_migrations (version text PRIMARY KEY)")
        for _, sql in earlier:
            await conns[name].execute(sql)
    a, b = conns["a"], conns["b"]
    watcher = await asyncpg.connect(fresh_cluster.dsn("postgres"))
    try:
        async with a.transaction():
            await a.execute(roles_sql)
            b_migrates = asyncio.create_task(b.execute(roles_sql))
            async with asyncio.timeout(60):
                while not await watcher.fetchval(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1",
                    b.get_server_pid(),
                ):
                    assert not b_migrates.done(), b_migrates
                    await asyncio.sleep(0.05)
        await b_migrates  # raised unique_violation before the fix
        roles = await watcher.fetchval(
            "SELECT count(*) FROM pg_roles WHERE rolname = ANY($1::text[])",
            [role.value for role in PROCESS_ROLES],
        )
        assert roles == len(PROCESS_ROLES)
        for name in ("a", "b"):
            conn = await connect_as(fresh_cluster, name, DatabaseRole.ANALYST)
            try:
                assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 0
            finally:
                await conn.close()
    finally:
        for conn in (watcher, a, b):
            await conn.close()


async def test_make_migrate_sets_the_passwords_it_is_given(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    (tmp_path / "analyst").write_text("from-a-file\n")
    env = {
        **os.environ,
        "STUDENTPERF_DB_PASSWORD_TRAINER": "pw-trainer-1",
        "STUDENTPERF_DB_PASSWORD_ANALYST_FILE": str(tmp_path / "analyst"),
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "studentperf.migrate", "--database-url", postgres.dsn(database)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    print(done.stdout)
    assert done.returncode == 0, done.stderr
    assert "password set for studentperf_analyst, studentperf_trainer" in done.stdout
    assert "pw-trainer-1" not in done.stdout + done.stderr
    conn = await asyncpg.connect(postgres.dsn(database))
    try:
        verifiers = {
            r["rolname"]: r["rolpassword"]
            for r in await conn.fetch(
                "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY($1::text[])",
                [DatabaseRole.TRAINER.value, DatabaseRole.ANALYST.value],
            )
        }
    finally:
        await conn.close()
    # Stored as SCRAM verifiers, never as the text given.
    assert all(v and v.startswith("SCRAM-SHA-256$") for v in verifiers.values()), verifiers
