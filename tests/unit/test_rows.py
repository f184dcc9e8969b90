import uuid
from datetime import UTC, datetime

from recorder_service.rows import academic_record_values, content_id, profile_values, rows_for
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from studentperf.v1.prediction_service_pb2 import Prediction
from studentperf.v1.student_pb2 import GENDER_MALE, AcademicRecord, Student, StudentProfile


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


def test_students_hold_the_latest_profile_and_predictions_the_one_they_saw() -> None:
    events = [event("a", 10, age=15), event("b", 11), event("a", 12, age=16), event("a", 5, age=14)]
    rows = rows_for(events)
    assert rows.model_versions == ["v1"]
    assert len(rows.predictions) == len(rows.student_profiles) == len(rows.academic_records) == 4
    latest = dict(zip(rows.students.column("student_id"), rows.students.column("age"), strict=True))
    assert latest == {"a": 16, "b": 16}
    assert rows.students.column("gender") == ["male", "male"]
    assert rows.students.column("profile_as_of")[0] == datetime.fromtimestamp(12, UTC)
    profile_age = dict(
        zip(
            rows.student_profiles.column("student_profile_id"),
            rows.student_profiles.column("age"),
            strict=True,
        )
    )
    seen = [profile_age[pid] for pid in rows.predictions.column("student_profile_id")]
    assert seen == [15, 16, 16, 14]


def test_ties_go_to_the_later_event() -> None:
    rows = rows_for([event("a", 10, age=15), event("a", 10, age=17)])
    assert rows.students.column("age") == [17]


def test_prediction_columns() -> None:
    e = event("a", 10)
    p = rows_for([e]).predictions
    assert p.column("prediction_id") == [uuid.UUID(e.event_id)]
    assert p.column("imputed_fields") == ["profile.age,academic_record.previous_gpa"]
    assert p.column("predicted_final_score") == [55.5]
    assert p.column("predicted_pass") == [True]
    assert p.column("event_schema_version") == [1]


def test_missing_values_stay_missing() -> None:
    rows = rows_for([event("a", 10, gpa=None, age=None)])
    assert rows.students.column("age") == [None]
    assert rows.students.column("parental_education") == [None]
    assert rows.academic_records.column("previous_gpa") == [None]
    assert rows.academic_records.column("assignments_completed") == [None]


def test_content_ids_depend_on_content_only() -> None:
    def record_id(sid: str, record: AcademicRecord) -> uuid.UUID:
        return content_id("academic_record", sid, academic_record_values(record))

    same = record_id("a", AcademicRecord(previous_gpa=3.0))
    assert same == record_id("a", AcademicRecord(previous_gpa=3.0))
    assert same != record_id("b", AcademicRecord(previous_gpa=3.0))
    assert same != record_id("a", AcademicRecord(previous_gpa=3.5))
    # "not given" differs from a given zero or false
    assert record_id("a", AcademicRecord()) != record_id(
        "a", AcademicRecord(assignments_completed=False)
    )
    profile = profile_values(StudentProfile(student_id="a", age=16))
    assert content_id("profile", "a", profile) != content_id("academic_record", "a", profile)
