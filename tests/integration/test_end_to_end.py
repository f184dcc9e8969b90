"""The whole path: gRPC call -> model -> Kafka -> recorder -> normalized rows in PostgreSQL."""

from __future__ import annotations

import math
import uuid

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from studentperf.v1 import student_pb2 as pb
from tests.integration.conftest import RecorderProcess, Stack
from tests.integration.helpers import count_rows, eventually, group_lag, student, topic_size

pytestmark = pytest.mark.usefixtures("recorder")

JOINED_ROW = """
SELECT p.predicted_final_score, p.pass_probability, p.predicted_pass, p.imputed_fields,
       s.student_id, sp.age, sp.gender, a.attendance_percentage, a.previous_gpa, m.model_version
FROM predictions p
JOIN students s USING (student_id)
JOIN student_profiles sp USING (student_profile_id)
JOIN academic_records a USING (academic_record_id)
JOIN model_versions m USING (model_version)
WHERE p.prediction_id = $1
"""


async def test_predict_answers_and_one_joined_row_lands(
    stub: api_grpc.PredictionServiceAsyncStub, db: asyncpg.Pool
) -> None:
    request = api.PredictRequest(
        student=pb.Student(
            profile=pb.StudentProfile(student_id="e2e-1", age=17, gender=pb.GENDER_FEMALE),
            academic_record=pb.AcademicRecord(
                attendance_percentage=95, previous_gpa=3.6, study_hours_per_week=12
            ),
        )
    )
    prediction = (await stub.Predict(request, timeout=10)).prediction

    assert uuid.UUID(prediction.prediction_id)
    assert 0 <= prediction.predicted_final_score <= 100
    assert 0 <= prediction.pass_probability <= 1
    assert prediction.predicted_pass == (prediction.pass_probability >= 0.5)
    # A diligent student with a good GPA should be predicted to pass comfortably.
    assert prediction.predicted_final_score > 50 and prediction.predicted_pass
    assert prediction.model_version and prediction.pass_mark == 50
    assert set(prediction.imputed_fields) == {
        "profile.parental_education",
        "profile.lunch_program",
        "profile.test_preparation",
        "academic_record.assignments_completed",
    }

    pid = uuid.UUID(prediction.prediction_id)
    probe = count_rows(db, "SELECT count(*) FROM predictions WHERE prediction_id = $1", pid)
    assert await eventually(probe, 1, timeout=10) == 1
    row = await db.fetchrow(JOINED_ROW, pid)
    assert row["predicted_final_score"] == pytest.approx(prediction.predicted_final_score)
    assert row["pass_probability"] == pytest.approx(prediction.pass_probability)
    assert row["predicted_pass"] == prediction.predicted_pass
    assert sorted(row["imputed_fields"]) == sorted(prediction.imputed_fields)
    assert (row["student_id"], row["age"], row["gender"]) == ("e2e-1", 17, "female")
    assert (row["attendance_percentage"], row["previous_gpa"]) == (95, 3.6)
    assert row["model_version"] == prediction.model_version


async def test_each_prediction_keeps_the_profile_it_was_made_from(
    stub: api_grpc.PredictionServiceAsyncStub, db: asyncpg.Pool
) -> None:
    ids = []
    for age in (15, 16):
        request = api.PredictRequest(
            student=pb.Student(profile=pb.StudentProfile(student_id="history-1", age=age))
        )
        ids.append(uuid.UUID((await stub.Predict(request, timeout=10)).prediction.prediction_id))
    ids.append(
        uuid.UUID(
            (
                await stub.Predict(
                    api.PredictRequest(
                        student=pb.Student(profile=pb.StudentProfile(student_id="history-1"))
                    ),
                    timeout=10,
                )
            ).prediction.prediction_id
        )
    )
    probe = count_rows(db, "SELECT count(*) FROM predictions WHERE prediction_id = ANY($1)", ids)
    assert await eventually(probe, 3, timeout=10) == 3
    seen = await db.fetch(
        "SELECT p.prediction_id, sp.age FROM predictions p"
        " JOIN student_profiles sp USING (student_profile_id) WHERE p.prediction_id = ANY($1)",
        ids,
    )
    assert [{r["prediction_id"]: r["age"] for r in seen}[i] for i in ids] == [15, 16, None]
    # The student's own row holds the latest age given: the last call left age out, which
    # erases nothing (issue 15).
    assert await db.fetchval("SELECT age FROM students WHERE student_id = 'history-1'") == 16


async def test_batch_of_1000_answers_in_order_and_lands_1000_rows(
    stub: api_grpc.PredictionServiceAsyncStub, db: asyncpg.Pool
) -> None:
    # GPA rises with the index, so the answers' order shows in their scores.
    students = [student(f"batch-{i:04d}", previous_gpa=4.0 * i / 999) for i in range(1000)]
    response = await stub.BatchPredict(api.BatchPredictRequest(students=students), timeout=60)

    assert len(response.results) == 1000
    predictions = [r.prediction for r in response.results]
    assert all(r.WhichOneof("result") == "prediction" for r in response.results)
    scores = [p.predicted_final_score for p in predictions]
    assert scores[-1] > scores[0]
    assert len({p.prediction_id for p in predictions}) == 1000

    ids = [uuid.UUID(p.prediction_id) for p in predictions]
    probe = count_rows(db, "SELECT count(*) FROM predictions WHERE prediction_id = ANY($1)", ids)
    assert await eventually(probe, 1000, timeout=30) == 1000
    stored = await db.fetch(
        "SELECT prediction_id, student_id FROM predictions WHERE prediction_id = ANY($1)", ids
    )
    by_id = {r["prediction_id"]: r["student_id"] for r in stored}
    assert [by_id[i] for i in ids] == [s.profile.student_id for s in students]


async def test_batch_refuses_bad_items_alone(
    stub: api_grpc.PredictionServiceAsyncStub, stack: Stack
) -> None:
    before = await topic_size(stack.shared.kafka_bootstrap_servers, stack.topic)
    students = [student("ok-1"), student("bad id!"), student("ok-2", previous_gpa=9)]
    response = await stub.BatchPredict(api.BatchPredictRequest(students=students), timeout=10)

    kinds = [r.WhichOneof("result") for r in response.results]
    assert kinds == ["prediction", "error", "error"]
    assert response.results[1].error.bad_request.field_violations[0].field == (
        "students[1].profile.student_id"
    )
    assert response.results[2].error.bad_request.field_violations[0].field == (
        "students[2].academic_record.previous_gpa"
    )
    assert await topic_size(stack.shared.kafka_bootstrap_servers, stack.topic) == before + 1


def _bad(**changes: object) -> api.PredictRequest:
    request = api.PredictRequest(student=student("valid-id", previous_gpa=3.0))
    for path, value in changes.items():
        part, name = path.split("__")
        setattr(getattr(request.student, part), name, value)
    return request


INVALID = {
    "missing id": (_bad(profile__student_id=""), "student.profile.student_id"),
    "age 5": (_bad(profile__age=5), "student.profile.age"),
    "attendance 150": (
        _bad(academic_record__attendance_percentage=150),
        "student.academic_record.attendance_percentage",
    ),
    "NaN GPA": (
        _bad(academic_record__previous_gpa=math.nan),
        "student.academic_record.previous_gpa",
    ),
    "unknown enum": (_bad(profile__parental_education=42), "student.profile.parental_education"),
    "no student": (api.PredictRequest(), "student"),
}


@pytest.mark.parametrize("case", INVALID, ids=list(INVALID))
async def test_invalid_input_is_refused_naming_the_field_and_publishes_nothing(
    stub: api_grpc.PredictionServiceAsyncStub, stack: Stack, case: str
) -> None:
    request, field = INVALID[case]
    before = await topic_size(stack.shared.kafka_bootstrap_servers, stack.topic)
    call = stub.Predict(request, timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (caught.value.details() or "")
    status = await rpc_status.aio.from_call(call)
    assert status is not None
    violations = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(violations)
    assert [v.field for v in violations.field_violations] == [field]
    assert await topic_size(stack.shared.kafka_bootstrap_servers, stack.topic) == before


async def test_model_info_describes_the_served_model(
    stub: api_grpc.PredictionServiceAsyncStub,
) -> None:
    info = await stub.GetModelInfo(api.GetModelInfoRequest(), timeout=5)
    assert info.model_version and info.trained_at.seconds > 0
    assert info.pass_mark == 50 and info.training_rows > 0 and info.test_rows > 0
    assert info.metrics and info.baseline_metrics
    assert info.data_source


async def test_replaying_the_topic_adds_no_rows(
    stub: api_grpc.PredictionServiceAsyncStub,
    db: asyncpg.Pool,
    stack: Stack,
    recorder: RecorderProcess,
) -> None:
    await stub.BatchPredict(
        api.BatchPredictRequest(students=[student(f"replay-{i}") for i in range(50)]), timeout=10
    )
    published = await topic_size(stack.shared.kafka_bootstrap_servers, stack.topic)
    everything = count_rows(db, "SELECT count(*) FROM predictions")
    assert await eventually(everything, published, timeout=20) == published
    await recorder.stop()

    # A new consumer group starts from the beginning of the topic: every event comes again.
    group = f"replay-{uuid.uuid4().hex[:8]}"
    recorder.start(consumer_group=group)
    lag = lambda: group_lag(stack.shared.kafka_bootstrap_servers, group, stack.topic)  # noqa: E731
    assert await eventually(lag, 0, timeout=30) == 0
    replayed = await recorder.stop()
    assert replayed.already_stored == published and replayed.stored == 0
    assert await everything() == published
    for table, expected in [("students", "count(DISTINCT student_id)")]:
        distinct = await db.fetchval(f"SELECT {expected} FROM predictions")
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == distinct
    recorder.start()  # leave the module's recorder running for later tests
