"""The served model over gRPC: explanations and model info."""

from __future__ import annotations

import grpc
import pytest

from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from studentperf.v1 import student_pb2 as pb

STUDENT = pb.Student(
    profile=pb.StudentProfile(student_id="explain-1", age=16, gender=pb.GENDER_MALE),
    academic_record=pb.AcademicRecord(
        attendance_percentage=97, previous_gpa=1.2, study_hours_per_week=3
    ),
)


async def test_predictions_explain_themselves_exactly(
    stub: api_grpc.PredictionServiceStub,
) -> None:
    answer = await stub.Predict(api.PredictRequest(student=STUDENT, top_factors=3), timeout=10)
    found = answer.prediction.explanation
    assert [f.feature for f in found.top_factors][:1] == ["academic_record.previous_gpa"]
    assert found.top_factors[0].contribution < 0  # a GPA of 1.2 pulls the score down
    total = found.base_score + sum(f.contribution for f in found.top_factors) + found.other_factors
    assert total == pytest.approx(found.raw_score, abs=1e-9)
    assert answer.prediction.predicted_final_score == pytest.approx(
        min(max(found.raw_score, 0), 100)
    )
    plain = await stub.Predict(api.PredictRequest(student=STUDENT), timeout=10)
    assert not plain.prediction.HasField("explanation")

    too_many = api.BatchPredictRequest(students=[STUDENT] * 1001, top_factors=1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.BatchPredict(too_many, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "top_factors" in (caught.value.details() or "")


async def test_model_info_has_metrics_and_global_importances(
    stub: api_grpc.PredictionServiceStub,
) -> None:
    info = await stub.GetModelInfo(api.GetModelInfoRequest(), timeout=5)
    assert {"score_rmse", "pass_roc_auc", "pass_f1", "pass_brier", "pass_ece"} <= set(info.metrics)
    assert set(info.metrics) == set(info.baseline_metrics)
    ranked = [(i.feature, i.rmse_increase) for i in info.feature_importances]
    assert len(ranked) == 9 and ranked == sorted(ranked, key=lambda p: -p[1])
    assert ranked[0][0].startswith("academic_record.")
    assert info.score_estimator.startswith("ridge") and info.explanation_method == "linear-exact"
    assert info.validation_rows > 0 and len(info.data_sha256) == 64
