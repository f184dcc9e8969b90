import math

import pytest

from inference_service.encoding import InvalidInput, encode_student
from studentperf.features import FEATURE_COLUMNS
from studentperf.v1 import student_pb2 as pb


def full_student(**profile_overrides: object) -> pb.Student:
    student = pb.Student(
        profile=pb.StudentProfile(
            student_id="s-1_A",
            age=16,
            gender=pb.GENDER_FEMALE,
            parental_education=pb.PARENTAL_EDUCATION_SOME_COLLEGE,
            lunch_program=pb.LUNCH_PROGRAM_FREE_OR_REDUCED,
            test_preparation=pb.TEST_PREPARATION_COMPLETED,
        ),
        academic_record=pb.AcademicRecord(
            attendance_percentage=92.5,
            study_hours_per_week=7,
            previous_gpa=3.1,
            assignments_completed=True,
        ),
    )
    for name, value in profile_overrides.items():
        setattr(student.profile, name, value)
    return student


def violations(student: pb.Student | None) -> dict[str, str]:
    with pytest.raises(InvalidInput) as caught:
        encode_student(student, "student")
    return {v.field: v.description for v in caught.value.violations}


def test_full_student_encodes_every_feature_in_schema_order() -> None:
    encoded = encode_student(full_student(), "student")
    row = dict(zip(FEATURE_COLUMNS, encoded.features, strict=True))
    assert encoded.student_id == "s-1_A"
    assert row == {
        "age": 16.0,
        "attendance_percentage": 92.5,
        "study_hours_per_week": 7.0,
        "previous_gpa": pytest.approx(3.1),
        "assignments_completed": 1.0,
        "gender": "female",
        "parental_education": "some_college",
        "lunch_program": "free_or_reduced",
        "test_preparation": "completed",
    }
    assert encoded.imputed_fields == ()


def test_missing_fields_are_imputed_and_named() -> None:
    encoded = encode_student(pb.Student(profile=pb.StudentProfile(student_id="x")), "student")
    row = dict(zip(FEATURE_COLUMNS, encoded.features, strict=True))
    assert math.isnan(row["age"]) and math.isnan(row["previous_gpa"])  # type: ignore[arg-type]
    assert row["gender"] is None
    assert set(encoded.imputed_fields) == {
        "profile.age",
        "profile.gender",
        "profile.parental_education",
        "profile.lunch_program",
        "profile.test_preparation",
        "academic_record.attendance_percentage",
        "academic_record.study_hours_per_week",
        "academic_record.previous_gpa",
        "academic_record.assignments_completed",
    }


def test_false_and_zero_are_values_not_missing() -> None:
    student = full_student()
    student.academic_record.assignments_completed = False
    student.academic_record.study_hours_per_week = 0
    encoded = encode_student(student, "student")
    row = dict(zip(FEATURE_COLUMNS, encoded.features, strict=True))
    assert row["assignments_completed"] == 0.0 and row["study_hours_per_week"] == 0.0
    assert encoded.imputed_fields == ()


@pytest.mark.parametrize(
    ("student_id", "ok"),
    [("a", True), ("A" * 64, True), ("", False), ("A" * 65, False), ("a b", False), ("é", False)],
)
def test_student_id_rule(student_id: str, ok: bool) -> None:
    student = full_student(student_id=student_id)
    if ok:
        assert encode_student(student, "student").student_id == student_id
    else:
        assert "1-64 characters" in violations(student)["student.profile.student_id"]


def test_each_rule_names_its_field() -> None:
    student = full_student(age=5, gender=99)
    student.academic_record.attendance_percentage = 150
    student.academic_record.previous_gpa = math.nan
    student.academic_record.study_hours_per_week = math.inf
    found = violations(student)
    assert found == {
        "student.profile.age": "must be a number from 10 to 100",
        "student.profile.gender": "unknown enum number 99; known: 1, 2, 3, or 0 when not given",
        "student.academic_record.attendance_percentage": "must be a number from 0 to 100",
        "student.academic_record.previous_gpa": "must be a number from 0 to 4",
        "student.academic_record.study_hours_per_week": "must be a number from 0 to 100",
    }


def test_missing_student_is_refused() -> None:
    assert violations(None) == {"student": "required"}


def test_range_edges_are_inclusive() -> None:
    student = full_student(age=100)
    student.academic_record.previous_gpa = 4.0
    student.academic_record.attendance_percentage = 0.0
    encode_student(student, "student")
