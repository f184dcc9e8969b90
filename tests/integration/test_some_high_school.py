"""The parental education level some_high_school end to end (issue 16), on the real services.

A Kaggle-format row with "some high school" imports with that level; a Predict with
PARENTAL_EDUCATION_SOME_HIGH_SCHOOL is answered, stored under its name and read back as its
number, by the current model and by a model trained before the level existed (which has no
column for it and answers it as an unknown category).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from infra.devstack import KafkaBroker
from recorder_service.settings import DEAD_LETTER_SUFFIX
from studentperf.config import DatabaseRole
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from studentperf.v1 import student_pb2 as pb
from tests.integration.conftest import Stack, inference_settings, serving
from tests.integration.helpers import count_rows, eventually
from tests.kaggle_csv import write
from tests.old_model import save_old_model
from trainer import kaggle
from trainer.import_csv import import_file

pytestmark = pytest.mark.usefixtures("dead_letter_topic", "recorder")

SOME_HIGH_SCHOOL = pb.PARENTAL_EDUCATION_SOME_HIGH_SCHOOL
STORED = """
SELECT s.parental_education AS student, p.parental_education AS profile, r.model_version
FROM predictions r
JOIN students s USING (student_id)
JOIN student_profiles p USING (student_profile_id)
WHERE r.prediction_id = $1
"""


@pytest.fixture(scope="module")
async def dead_letter_topic(stack: Stack, kafka: KafkaBroker) -> AsyncIterator[None]:
    await kafka.create_topic(stack.topic + DEAD_LETTER_SUFFIX, partitions=3)
    yield


def some_high_school_student(student_id: str) -> pb.Student:
    return pb.Student(
        profile=pb.StudentProfile(
            student_id=student_id, age=16, parental_education=SOME_HIGH_SCHOOL
        ),
        academic_record=pb.AcademicRecord(attendance_percentage=88.0, previous_gpa=2.7),
    )


async def predict_store_and_read_back(
    stub: api_grpc.PredictionServiceAsyncStub, db: asyncpg.Pool, student_id: str
) -> tuple[api.Prediction, asyncpg.Record]:
    """One Predict with the new level; its stored row once recorded; its history entry."""
    answer = await stub.Predict(
        api.PredictRequest(student=some_high_school_student(student_id)), timeout=10
    )
    prediction = answer.prediction
    assert "profile.parental_education" not in " ".join(prediction.imputed_fields)

    recorded = count_rows(
        db, "SELECT count(*) FROM predictions WHERE prediction_id = $1", prediction.prediction_id
    )
    assert await eventually(recorded, 1) == 1
    row = await db.fetchrow(STORED, prediction.prediction_id)
    assert row is not None
    history = await stub.ListStudentPredictions(
        api.ListStudentPredictionsRequest(student_id=student_id), timeout=10
    )
    [entry] = history.predictions
    assert entry.prediction.prediction_id == prediction.prediction_id
    assert entry.student.profile.parental_education == SOME_HIGH_SCHOOL
    return prediction, row


async def test_a_predict_with_the_new_level_is_answered_stored_and_read_back(
    stub: api_grpc.PredictionServiceAsyncStub, db: asyncpg.Pool
) -> None:
    prediction, row = await predict_store_and_read_back(stub, db, "shs-current")
    print(
        f"current model {prediction.model_version}: score {prediction.predicted_final_score:.2f}, "
        f"P(pass) {prediction.pass_probability:.3f}; stored {dict(row)}"
    )
    assert (row["student"], row["profile"]) == ("some_high_school", "some_high_school")
    assert row["model_version"] == prediction.model_version


async def test_a_model_from_before_the_level_serves_it(
    stack: Stack, db: asyncpg.Pool, tmp_path: Path
) -> None:
    old = save_old_model(tmp_path / "models")
    settings = inference_settings(stack, tmp_path / "spool", models_dir=str(tmp_path / "models"))
    async for running in serving(settings):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = api_grpc.PredictionServiceStub(channel)
            prediction, row = await predict_store_and_read_back(stub, db, "shs-old-model")
            info = await stub.GetModelInfo(api.GetModelInfoRequest(), timeout=10)
    print(
        f"old model {prediction.model_version}: score {prediction.predicted_final_score:.2f}, "
        f"P(pass) {prediction.pass_probability:.3f}; stored {dict(row)}"
    )
    assert prediction.model_version == info.model_version == old.name
    assert 0 <= prediction.predicted_final_score <= 100
    assert 0 < prediction.pass_probability < 1
    assert (row["student"], row["profile"], row["model_version"]) == (
        "some_high_school",
        "some_high_school",
        old.name,
    )


async def test_a_kaggle_row_with_some_high_school_imports_with_that_level(
    tmp_path: Path, stack: Stack, db: asyncpg.Pool
) -> None:
    rows = [
        ["male", "group A", "some high school", "free/reduced", "completed", "47", "57", "44"],
        ["female", "group B", "high school", "standard", "none", "61", "60", "65"],
        ["female", "group C", "", "standard", "none", "70", "72", "71"],
    ]
    csv = write(tmp_path / "exams.csv", rows)
    report = await import_file(csv, shared=stack.shared_as(DatabaseRole.IMPORTER), term="2024-fall")
    assert (report.published, report.stored) == (3, 3)
    found = kaggle.read(csv)
    stored = await db.fetch(
        "SELECT student_id, parental_education FROM students WHERE student_id LIKE $1"
        " ORDER BY student_id",
        f"csv-{found.sha256[:12]}-%",
    )
    print("imported:", [(r["student_id"], r["parental_education"]) for r in stored])
    assert [r["parental_education"] for r in stored] == ["some_high_school", "high_school", None]
