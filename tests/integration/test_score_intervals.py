"""The score interval through the real inference service, Kafka, recorder and PostgreSQL.

The session's model is trained by the real `python -m trainer`, so it has an interval: each
answer of Predict and BatchPredict carries the range the trainer's own arithmetic gives for that
student (the artifact's pipelines and half-width), the recorder stores it with the prediction,
and ListStudentPredictions gives it back as answered. A model saved without an interval (as
every one trained before intervals) serves without one: the fields unset, the columns NULL.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Literal

import asyncpg
import grpc
import pytest

from inference_service.encoding import encode_student
from inference_service.fast_model import feature_table
from studentperf.config import DatabaseRole
from studentperf.model_artifact import load_artifact, save_artifact
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from studentperf.v1 import student_pb2 as pb
from tests.integration.conftest import Stack, inference_settings, serving
from tests.integration.helpers import count_rows, eventually, run_module
from tests.integration.test_monitoring import as_student
from trainer import synthetic

pytestmark = pytest.mark.usefixtures("recorder")

CALM_ROWS = 400
INTERVAL_FIELDS: tuple[
    Literal["score_interval_low", "score_interval_high", "interval_coverage"], ...
] = (
    "score_interval_low",
    "score_interval_high",
    "interval_coverage",
)


def students(prefix: str, count: int) -> list[pb.Student]:
    """Students from weak to strong, so that some intervals reach the bottom of 0-100."""
    return [
        pb.Student(
            profile=pb.StudentProfile(student_id=f"{prefix}-{i}", age=16),
            academic_record=pb.AcademicRecord(
                previous_gpa=4.0 * i / (count - 1),
                attendance_percentage=100.0 * i / (count - 1),
                study_hours_per_week=float(i % 20),
            ),
        )
        for i in range(count)
    ]


def trainers_intervals(model_path: Path, sent: list[pb.Student]) -> list[tuple[float, float]]:
    """What the trainer computes for these students: the artifact's pipelines, then its
    interval (studentperf.score_interval), with no serving code but the input encoding."""
    model = load_artifact(model_path).model
    assert model.score_interval is not None
    table = feature_table([encode_student(s, "student").features for s in sent])
    low, high = model.score_interval.bounds(model.predict_scores(table))
    return list(zip(low.tolist(), high.tolist(), strict=True))


async def stored(db: asyncpg.Pool, prefix: str, count: int) -> dict[str, asyncpg.Record]:
    probe = count_rows(db, f"SELECT count(*) FROM predictions WHERE student_id LIKE '{prefix}-%'")
    assert await eventually(probe, count, timeout=30) == count
    rows = await db.fetch(
        "SELECT prediction_id::text AS id, predicted_final_score, score_interval_low, "
        "score_interval_high, interval_coverage FROM predictions WHERE student_id LIKE $1",
        f"{prefix}-%",
    )
    return {r["id"]: r for r in rows}


async def test_served_stored_and_listed_intervals_are_the_trainers(
    stub: api_grpc.PredictionServiceAsyncStub, stack: Stack, db: asyncpg.Pool
) -> None:
    sent = students("iv", 12)
    single = [(await stub.Predict(api.PredictRequest(student=s), timeout=10)).prediction
              for s in sent[:4]]  # fmt: skip
    batch = await stub.BatchPredict(api.BatchPredictRequest(students=sent[4:]), timeout=10)
    answered = single + [r.prediction for r in batch.results]
    assert len(answered) == len(sent)

    expected = trainers_intervals(stack.model_path, sent)
    coverage = load_artifact(stack.model_path).model.score_interval.coverage  # type: ignore[union-attr]
    served = [(p.score_interval_low, p.score_interval_high) for p in answered]
    print(f"served intervals: {[(round(a, 2), round(b, 2)) for a, b in served]}")
    flat = [end for pair in served for end in pair]
    assert flat == pytest.approx([end for pair in expected for end in pair], abs=1e-9)
    assert all(p.interval_coverage == coverage == 0.8 for p in answered)
    assert any(low == 0.0 for low, _ in served)  # clipped at the bottom of the range
    assert all(
        low <= p.predicted_final_score <= high
        for p, (low, high) in zip(answered, served, strict=True)
    )

    rows = await stored(db, "iv", len(sent))
    for p in answered:
        row = rows[p.prediction_id]
        assert (row["score_interval_low"], row["score_interval_high"]) == (
            p.score_interval_low,
            p.score_interval_high,
        )
        assert row["interval_coverage"] == p.interval_coverage

    history = await stub.ListStudentPredictions(
        api.ListStudentPredictionsRequest(student_id="iv-11"), timeout=10
    )
    [entry] = history.predictions
    assert entry.prediction == answered[11]  # the interval included, as answered

    info = await stub.GetModelInfo(api.GetModelInfoRequest(), timeout=5)
    kept = load_artifact(stack.model_path).metadata["score_interval"]
    assert info.score_interval.half_width == kept["half_width"]
    assert info.score_interval.coverage == 0.8
    assert info.score_interval.test_coverage == kept["test_coverage"]
    assert info.score_interval.validation_rows == info.validation_rows
    # 300 validation and 600 test rows: about 2.5 points one standard deviation; 8 is three.
    assert abs(info.score_interval.test_coverage - 0.8) <= 0.08
    assert info.HasField("pass_calibration")
    calibration = info.pass_calibration
    assert calibration.applied == (calibration.test_ece_after < calibration.test_ece_before)


@pytest.fixture(scope="module")
async def old_model_stub(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[api_grpc.PredictionServiceAsyncStub]:
    """A service whose model was saved without an interval, as before intervals."""
    loaded = load_artifact(stack.model_path)
    models = tmp_path_factory.mktemp("old-models")
    save_artifact(
        models,
        replace(loaded.model, score_interval=None, pass_calibration=None),
        fingerprint="0ld" * 4,
        details={},
    )
    settings = inference_settings(
        stack, tmp_path_factory.mktemp("old-spool"), models_dir=str(models)
    )
    async for running in serving(settings):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield api_grpc.PredictionServiceStub(channel)


async def test_a_model_without_an_interval_serves_and_stores_none(
    old_model_stub: api_grpc.PredictionServiceAsyncStub, db: asyncpg.Pool
) -> None:
    sent = students("old", 3)
    single = await old_model_stub.Predict(api.PredictRequest(student=sent[0]), timeout=10)
    batch = await old_model_stub.BatchPredict(
        api.BatchPredictRequest(students=sent[1:]), timeout=10
    )
    answered = [single.prediction] + [r.prediction for r in batch.results]
    for p in answered:
        assert 0 <= p.predicted_final_score <= 100
        assert not any(p.HasField(name) for name in INTERVAL_FIELDS)
    rows = await stored(db, "old", len(sent))
    assert all(rows[p.prediction_id][name] is None for p in answered for name in INTERVAL_FIELDS)
    history = await old_model_stub.ListStudentPredictions(
        api.ListStudentPredictionsRequest(student_id="old-0"), timeout=10
    )
    assert history.predictions[0].prediction == answered[0]
    info = await old_model_stub.GetModelInfo(api.GetModelInfoRequest(), timeout=5)
    assert not info.HasField("score_interval") and not info.HasField("pass_calibration")


async def test_monitor_measures_live_coverage_near_the_stated_level_on_calm_outcomes(
    stub: api_grpc.PredictionServiceAsyncStub, stack: Stack, db: asyncpg.Pool, tmp_path: Path
) -> None:
    """Students drawn like the model's training data, with their true final scores recorded as
    outcomes: the monitor, reading what the recorder stored, finds about the stated 80 % and
    raises no coverage alert."""
    frame = synthetic.generate(CALM_ROWS, 303)
    sent = [as_student(row, f"calm-{i}") for i, (_, row) in enumerate(frame.iterrows())]
    answer = await stub.BatchPredict(api.BatchPredictRequest(students=sent), timeout=30)
    assert all(r.HasField("prediction") for r in answer.results)
    await stored(db, "calm", CALM_ROWS)
    outcomes = [
        api.Outcome(student_id=f"calm-{i}", term="2026-fall", final_score=float(score))
        for i, score in enumerate(frame["final_score"])
    ]
    recorded = await stub.RecordOutcomes(api.RecordOutcomesRequest(outcomes=outcomes), timeout=30)
    assert all(r.HasField("stored") for r in recorded.results)
    written = count_rows(db, "SELECT count(*) FROM outcomes WHERE student_id LIKE 'calm-%'")
    assert await eventually(written, CALM_ROWS, timeout=60) == CALM_ROWS

    done = await run_module(
        "trainer.monitor", "--last", str(CALM_ROWS),
        "--database-url", stack.database_url_as(DatabaseRole.TRAINER),
        "--models-dir", str(stack.model_path), "--report", str(tmp_path / "calm.html"),
    )  # fmt: skip
    found = re.search(
        rf"live interval coverage ([0-9.]+)% of {CALM_ROWS} outcomes \(stated 80%", done.stdout
    )
    assert found, done.stdout + done.stderr
    # One standard deviation of the share is 2 points at 400 outcomes, and of the level the
    # model's half-width reaches (300 validation rows) about 2.3: 9 points is three of both.
    assert abs(float(found[1]) - 80.0) <= 9.0
    assert "coverage" not in " ".join(re.findall(r"ALERT: .*", done.stdout))
