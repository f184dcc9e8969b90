import uuid
from datetime import UTC, datetime

from recorder_service.rows import academic_record_id, rows_for
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from studentperf.v1.prediction_service_pb2 import Prediction
from studentperf.v1.student_pb2 import (
    GENDER_MALE,
    AcademicRecord,
    Student,
    StudentProfile,
)


def event(sid: str, seconds: int, gpa: float | None = 3.0, age: int | None = 16) -> PredictionEvent:
    pid = str(uuid.uuid4())
    made = PredictionEvent(
        schema_version=1,
        event_id=pid,
        input=Student(profile=StudentProfile(student_id=sid, gender=GENDER_MALE)),
        prediction=Prediction(
            prediction_id=pid,
            model_version="v1",
            predicted_final_score=55.5,
            pass_probability=0.7,
            predicted_pass=True,
            pass_mark=50,
            imputed_fields=["profile.age", "academic_record.previous_gpa"],
        ),
    )
    made.occurred_at.seconds = seconds
    if age is not None:
        made.input.profile.age = age
    if gpa is not None:
        made.input.academic_record.previous_gpa = gpa
    return made


def test_one_prediction_and_record_per_event_but_one_student_row_each() -> None:
    events = [event("a", 10, age=15), event("b", 11), event("a", 12, age=16), event("a", 5, age=14)]
    rows = rows_for(events)
    assert rows.model_versions == ["v1"]
    assert len(rows.predictions.prediction_id) == 4
    assert len(rows.academic_records.academic_record_id) == 4
    students = dict(zip(rows.students.student_id, rows.students.age, strict=True))
    assert students == {"a": 16, "b": 16}  # the latest profile of "a"
    assert rows.students.gender == ["male", "male"]
    assert rows.students.profile_as_of[0] == datetime.fromtimestamp(12, UTC)


def test_prediction_columns() -> None:
    e = event("a", 10)
    p = rows_for([e]).predictions
    assert p.prediction_id == [uuid.UUID(e.event_id)]
    assert p.imputed_fields == ["profile.age,academic_record.previous_gpa"]
    assert p.predicted_final_score == [55.5] and p.predicted_pass == [True]
    assert p.event_schema_version == [1]


def test_missing_values_stay_missing() -> None:
    rows = rows_for([event("a", 10, gpa=None, age=None)])
    assert rows.students.age == [None]
    assert rows.students.parental_education == [None]
    assert rows.academic_records.previous_gpa == [None]
    assert rows.academic_records.assignments_completed == [None]


def test_academic_record_id_depends_on_content_only() -> None:
    same = academic_record_id("a", AcademicRecord(previous_gpa=3.0))
    assert same == academic_record_id("a", AcademicRecord(previous_gpa=3.0))
    assert same != academic_record_id("b", AcademicRecord(previous_gpa=3.0))
    assert same != academic_record_id("a", AcademicRecord(previous_gpa=3.5))
    # "not given" differs from a given zero or false
    assert academic_record_id("a", AcademicRecord()) != academic_record_id(
        "a", AcademicRecord(assignments_completed=False)
    )
