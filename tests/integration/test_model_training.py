"""Training from the database's outcomes, and the model_versions row it leaves."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from infra.devstack import KafkaBroker
from recorder_service.settings import DEAD_LETTER_SUFFIX
from studentperf.config import DatabaseRole
from studentperf.model_folder import local_versions
from tests.integration.conftest import REPO, Stack
from tests.kaggle_csv import kaggle_rows, write
from trainer.db_source import read_labelled_rows
from trainer.import_csv import import_file
from trainer.registry import register_version

# The CSV import goes through Kafka to the recorder (and its dead-letter topic before it: the
# broker creates no topic by itself).
pytestmark = pytest.mark.usefixtures("dead_letter_topic", "recorder")


@pytest.fixture(scope="module")
async def dead_letter_topic(stack: Stack, kafka: KafkaBroker) -> None:
    await kafka.create_topic(stack.topic + DEAD_LETTER_SUFFIX, partitions=3)


async def train(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Runs the trainer off the event loop, which the module's servers share."""
    return await asyncio.to_thread(
        subprocess.run, command, cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )


async def test_training_reads_the_database_and_records_the_version(
    tmp_path: Path, stack: Stack, db: asyncpg.Pool
) -> None:
    csv = write(tmp_path / "exams.csv", kaggle_rows(300, seed=8))
    imported = await import_file(
        csv, shared=stack.shared_as(DatabaseRole.IMPORTER), term="2023-spring"
    )
    assert imported.stored == 300
    found = await read_labelled_rows(stack.database_url_as(DatabaseRole.TRAINER))
    assert len(found.frame) >= 300 and found.frame["final_score"].notna().all()

    models = tmp_path / "models"
    command = [sys.executable, "-m", "trainer", "--models-dir", str(models)]
    command += [
        "--database-url",
        stack.database_url_as(DatabaseRole.TRAINER),
        "--min-db-rows",
        "100",
    ]
    done = await train(command)
    assert "source: database postgresql://" in done.stdout, done.stdout
    assert "using synthetic data" not in done.stdout
    assert "no current version: promoted" in done.stdout and "    recorded" in done.stdout
    version = (models / "current").readlink().name
    row = await db.fetchrow("SELECT * FROM model_versions WHERE model_version = $1", version)
    assert row["data_source"].startswith("database ") and len(row["data_sha256"]) == 64
    assert row["promoted_at"] is not None and row["promotion_decision"].endswith("promoted")
    assert row["train_rows"] + row["validation_rows"] + row["test_rows"] == len(found.frame)
    metadata = json.loads((models / version / "metadata.json").read_text())
    assert json.loads(row["metrics"]) == metadata["metrics"]
    groups = json.loads(row["group_quality"])
    assert groups == metadata["group_quality"]
    assert [a["attribute"] for a in groups["attributes"]] == [
        "gender",
        "lunch_program",
        "parental_education",
    ]
    assert row["feature_columns"] == metadata["feature_columns"]

    # With too few rows asked for, the trainer says it falls back.
    command[-1] = str(len(found.frame) + 1)
    done = await train(command)
    assert "fewer than the" in done.stdout and "using synthetic data instead" in done.stdout


async def test_the_version_row_gets_the_facts_whoever_writes_first(
    stack: Stack, db: asyncpg.Pool
) -> None:
    # The recorder's own statement: a bare row, nothing on conflict.
    bare = "INSERT INTO model_versions (model_version) VALUES ($1) ON CONFLICT DO NOTHING"
    metadata = {
        "version": "v-order",
        "created_at": "2026-01-01T00:00:00+00:00",
        "pass_mark": 50.0,
        "data_source": "test",
        "data_sha256": "0" * 64,
        "train_rows": 7,
        "validation_rows": 1,
        "test_rows": 2,
        "estimators": {"score": "ridge(alpha=1)", "pass": "logistic(C=1)"},
        "feature_columns": ["age"],
        "libraries": {},
        "metrics": {"score_rmse": 7.0},
        "baseline_metrics": {"score_rmse": 13.0},
    }
    for version, recorder_first in (("v-recorder-first", True), ("v-trainer-first", False)):
        if recorder_first:
            await db.execute(bare, version)
        await register_version(
            stack.database_url_as(DatabaseRole.TRAINER),
            metadata | {"version": version},
            decision="d",
            promoted=False,
        )
        await db.execute(bare, version)
        row = await db.fetchrow("SELECT * FROM model_versions WHERE model_version = $1", version)
        assert (row["train_rows"], row["score_estimator"]) == (7, "ridge(alpha=1)"), version
        assert row["promoted_at"] is None


async def test_a_version_that_serves_a_group_worse_is_refused_and_the_row_says_why(
    tmp_path: Path, stack: Stack, db: asyncpg.Pool
) -> None:
    models = tmp_path / "models"
    command = [sys.executable, "-m", "trainer", "--models-dir", str(models), "--synthetic"]
    command += ["--rows", "3000", "--database-url", stack.database_url_as(DatabaseRole.TRAINER)]
    calm = await train([*command, "--seed", "5"])
    assert "no current version: promoted" in calm.stdout and "    recorded" in calm.stdout
    served = (models / "current").readlink().name

    planted = [*command, "--seed", "7", "--plant-unfairness", "lunch_program=free_or_reduced"]
    unfair = await train(planted)
    (refused,) = [v for v in local_versions(models) if v.version != served]
    print(unfair.stdout[unfair.stdout.index("[5/6]") : unfair.stdout.index("[6/6]")])
    assert "NOT promoted (--force overrides)" in unfair.stdout
    assert (models / "current").readlink().name == served
    row = await db.fetchrow(
        "SELECT * FROM model_versions WHERE model_version = $1", refused.version
    )
    assert row["promoted_at"] is None
    assert "lunch_program score_rmse gap" in row["promotion_decision"]
    lunch = next(
        a
        for a in json.loads(row["group_quality"])["attributes"]
        if a["attribute"] == "lunch_program"
    )
    rmse = next(g for g in lunch["gaps"] if g["figure"] == "score_rmse")
    assert rmse["highest"] == "free_or_reduced" and rmse["interval_low"] > 5

    forced = await train([*planted, "--force"])
    assert "but forced: promoted" in forced.stdout
    promoted = (models / "current").readlink().name
    assert promoted not in (served, refused.version)  # a new version of the same data and seed
    row = await db.fetchrow("SELECT * FROM model_versions WHERE model_version = $1", promoted)
    assert (
        row["promoted_at"] is not None
        and "lunch_program score_rmse gap" in row["promotion_decision"]
    )
