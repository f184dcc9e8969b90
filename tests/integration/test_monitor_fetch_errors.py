"""The monitor's fetch of the versions it judges (STUDENTPERF_MODEL_SOURCE=database) fails as
its other reads do: exit 2 and the JSON verdict with the error, never a traceback's exit 1,
which is the monitor's "a threshold crossed" and what deploy/'s CronJob alerts on."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from infra.devstack import PostgresServer
from studentperf.config import DatabaseRole
from studentperf.model_store import store_version
from tests.integration.conftest import REPO, migrated_database
from tests.integration.helpers import ONE_STUDENTS_PARENTS, train_version

PREDICTION = """
INSERT INTO predictions (prediction_id, student_id, student_profile_id, academic_record_id,
    model_version, predicted_final_score, pass_probability, predicted_pass, pass_mark,
    predicted_at, event_schema_version)
VALUES (gen_random_uuid(), 's', '00000000-0000-4000-8000-000000000001',
        '00000000-0000-4000-8000-000000000002', $1, 50, 0.5, true, 50, now(), 1)
"""


@pytest.fixture(scope="module")
async def database(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database holding one stored version and one prediction it served."""
    url = postgres.dsn(await migrated_database(postgres, "monitorfetch"))
    models = tmp_path_factory.mktemp("trainer-models")
    version = await asyncio.to_thread(train_version, models, 3, 3)
    trainer = await asyncpg.connect(_as(url, DatabaseRole.TRAINER))
    try:
        await store_version(trainer, models / version)
    finally:
        await trainer.close()
    owner = await asyncpg.connect(url)
    try:
        await owner.execute("INSERT INTO model_versions (model_version) VALUES ($1)", version)
        await owner.execute(ONE_STUDENTS_PARENTS)
        await owner.execute(PREDICTION, version)
    finally:
        await owner.close()
    return url


@pytest.fixture
async def unreadable_artifacts(database: str) -> AsyncIterator[str]:
    """A role that reads what the monitor read before it fetched versions (predictions, their
    inputs and outcomes, model_versions), not the artifact tables."""
    role = f"monitor_{uuid.uuid4().hex[:8]}"
    owner = await asyncpg.connect(database)
    try:
        await owner.execute(f"CREATE ROLE {role} LOGIN")
        await owner.execute(
            f"GRANT SELECT ON predictions, student_profiles, academic_records, outcomes,"
            f" model_versions TO {role}"
        )
        yield role
    finally:
        await owner.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
        await owner.execute(f"DROP ROLE {role}")
        await owner.close()


def _as(url: str, role: str) -> str:
    return url.replace(f"//{DatabaseRole.OWNER}@", f"//{role}@", 1)


def _monitor(url: str, models_dir: Path, report: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STUDENTPERF_DATABASE_URL": url, "STUDENTPERF_MODEL_SOURCE": "database"}
    return subprocess.run(
        [sys.executable, "-m", "trainer.monitor", "--last", "10",
         "--models-dir", str(models_dir), "--report", str(report), "--json", "-"],
        cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def _assert_failed(done: subprocess.CompletedProcess[str], why: str) -> None:
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.returncode == 2, (done.returncode, done.stdout[-500:])
    verdict = json.loads(done.stdout)
    assert verdict["status"] == "error" and why in verdict["error"], verdict


async def test_artifacts_the_role_may_not_read_are_an_error_not_an_alert(
    database: str, unreadable_artifacts: str, tmp_path: Path
) -> None:
    done = await asyncio.to_thread(
        _monitor, _as(database, unreadable_artifacts), tmp_path / "models", tmp_path / "r.html"
    )
    _assert_failed(done, "InsufficientPrivilegeError")


async def test_a_models_folder_that_cannot_be_written_is_an_error_not_an_alert(
    database: str, tmp_path: Path
) -> None:
    not_a_folder = tmp_path / "models"
    not_a_folder.write_text("a file where the models folder should be")
    done = await asyncio.to_thread(
        _monitor, _as(database, DatabaseRole.TRAINER), not_a_folder, tmp_path / "r.html"
    )
    _assert_failed(done, str(not_a_folder))
