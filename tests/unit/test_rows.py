import uuid
from datetime import UTC, datetime

import pytest

from recorder_service.rows import (
    STAGING_COLUMNS,
    academic_record_values,
    content_id,
    profile_values,
    staging_row,
)
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


def as_dict(e: PredictionEvent, log_offset: int = 0) -> dict[str, object]:
    row = staging_row(e, log_offset)
    assert len(row) == len(STAGING_COLUMNS)
    return dict(zip(STAGING_COLUMNS, row, strict=True))


def test_a_row_holds_the_prediction_and_the_inputs_it_was_made_from() -> None:
    e = event("a", 10)
    row = as_dict(e, log_offset=7)
    assert row["log_offset"] == 7
    assert row["prediction_id"] == e.event_id
    assert row["student_id"] == "a"
    assert (row["age"], row["gender"], row["previous_gpa"]) == (16, "male", 3.0)
    assert row["imputed_fields"] == ["profile.age", "academic_record.previous_gpa"]
    assert row["predicted_final_score"] == 55.5
    assert row["predicted_pass"] is True
    assert row["event_schema_version"] == 1
    assert row["predicted_at"] == datetime.fromtimestamp(10, UTC)


def test_a_row_carries_the_predicted_term_and_none_for_no_term() -> None:
    e = event("a", 10)
    assert as_dict(e)["term"] is None  # an event from before terms, or one that names none
    e.prediction.term = "2026-spring"
    assert as_dict(e)["term"] == "2026-spring"


def test_profiles_and_records_are_addressed_by_their_content() -> None:
    first, again, older = (
        as_dict(event("a", 10)),
        as_dict(event("a", 11)),
        as_dict(event("a", 12, age=15)),
    )
    assert first["student_profile_id"] == again["student_profile_id"] != older["student_profile_id"]
    assert first["academic_record_id"] == again["academic_record_id"] == older["academic_record_id"]


def test_missing_values_stay_missing() -> None:
    row = as_dict(event("a", 10, gpa=None, age=None))
    assert row["age"] is None
    assert row["parental_education"] is None
    assert row["previous_gpa"] is None
    assert row["assignments_completed"] is None


@pytest.mark.parametrize(
    "seconds, nanos", [(10**13, 0), (-(10**12), 0), (10, -1), (10, 1_000_000_000)]
)
def test_a_time_that_is_no_date_is_refused(seconds: int, nanos: int) -> None:
    e = event("a", 10)
    e.occurred_at.seconds, e.occurred_at.nanos = seconds, nanos
    with pytest.raises((ValueError, OverflowError)):
        staging_row(e, 0)


def test_ids_in_other_forms_are_written_in_the_canonical_one() -> None:
    e = event("a", 10)
    braced = "{" + e.event_id.upper() + "}"
    e.event_id = e.prediction.prediction_id = braced
    assert as_dict(e)["prediction_id"] == str(uuid.UUID(braced))


def test_content_ids_depend_on_content_only() -> None:
    def record_id(sid: str, record: AcademicRecord) -> uuid.UUID:
        return content_id("academic_record", sid, academic_record_values(record))

    same = record_id("a", AcademicRecord(previous_gpa=3.0))
    assert same == record_id("a", AcademicRecord(previous_gpa=3.0))
    assert same != record_id("b", AcademicRecord(previous_gpa=3.0))
    assert same != record_id("a", AcademicRecord(previous_gpa=3.5))
    assert same == uuid.UUID(as_dict(event("a", 10, gpa=3.0))["academic_record_id"])  # type: ignore[arg-type]
    # "not given" differs from a given zero or false
    assert record_id("a", AcademicRecord()) != record_id(
        "a", AcademicRecord(assignments_completed=False)
    )
    profile = profile_values(StudentProfile(student_id="a", age=16))
    assert content_id("profile", "a", profile) != content_id("academic_record", "a", profile)


def test_content_ids_are_the_ones_already_stored() -> None:
    # Stored rows are keyed by these ids: the derivation must never change. Several students,
    # for one id can hold the UUID's version and variant bits by chance.
    values = profile_values(StudentProfile(age=16, gender=GENDER_MALE))
    for sid in [f"s-{i}" for i in range(8)]:
        assert content_id("profile", sid, values) == uuid.uuid5(
            uuid.UUID("6b0d6a55-58c4-4d7a-9a0b-2f1bb0c2d7e1"),
            "\x1f".join(["profile", sid, "16", "'male'", "None", "None", "None"]),
        )


def test_a_given_zero_is_kept_and_an_unknown_enum_number_shown() -> None:
    assert academic_record_values(AcademicRecord(previous_gpa=0.0)) == [None, None, 0.0, None]
    assert profile_values(StudentProfile(age=0, gender=99)) == [  # type: ignore[arg-type]
        0,
        "unknown enum number 99",
        None,
        None,
        None,
    ]
