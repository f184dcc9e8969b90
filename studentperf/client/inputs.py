"""Typed helpers that build the request messages, so callers need not touch the proto classes.

Enum fields take the category name the rest of the project uses (`"female"`,
`"some_college"`, `"free_or_reduced"`), the proto value name (`"GENDER_FEMALE"`) or its number;
None (or "") means "not given". Values are checked by the server, which names the bad field;
here only what cannot be put in the message at all (an unknown category) is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.descriptor import EnumDescriptor

from studentperf.enums import CATEGORY_BY_NUMBER
from studentperf.v1 import student_pb2
from studentperf.v1.prediction_service_pb2 import Outcome
from studentperf.v1.student_pb2 import AcademicRecord, Student, StudentProfile

EnumInput = str | int | None
T = TypeVar("T")

_ENUMS: dict[str, EnumDescriptor] = {
    "gender": student_pb2.Gender.DESCRIPTOR,
    "parental_education": student_pb2.ParentalEducation.DESCRIPTOR,
    "lunch_program": student_pb2.LunchProgram.DESCRIPTOR,
    "test_preparation": student_pb2.TestPreparation.DESCRIPTOR,
}


def enum_number(field: str, value: EnumInput) -> int:
    """The proto number of `value` for the enum field `field` (0 when not given)."""
    if value is None or value == "":
        return 0
    if isinstance(value, int):
        return value  # an unknown number is the server's to refuse, by field name
    by_category = {name: number for number, name in CATEGORY_BY_NUMBER[field].items()}
    text = value.strip()
    if text.lower() in by_category:
        return by_category[text.lower()]
    named = _ENUMS[field].values_by_name.get(text.upper())
    if named is not None:
        return named.number
    raise ValueError(
        f"{field}: unknown value {value!r}; expected one of {', '.join(sorted(by_category))}"
    )


@dataclass(frozen=True, slots=True)
class StudentInput:
    """One student; every field but `student_id` may be left out (the model imputes it)."""

    student_id: str
    age: int | None = None
    gender: EnumInput = None
    parental_education: EnumInput = None
    lunch_program: EnumInput = None
    test_preparation: EnumInput = None
    attendance_percentage: float | None = None
    study_hours_per_week: float | None = None
    previous_gpa: float | None = None
    assignments_completed: bool | None = None

    def to_proto(self) -> Student:
        profile = StudentProfile(
            student_id=self.student_id,
            gender=student_pb2.Gender.ValueType(enum_number("gender", self.gender)),
            parental_education=student_pb2.ParentalEducation.ValueType(
                enum_number("parental_education", self.parental_education)
            ),
            lunch_program=student_pb2.LunchProgram.ValueType(
                enum_number("lunch_program", self.lunch_program)
            ),
            test_preparation=student_pb2.TestPreparation.ValueType(
                enum_number("test_preparation", self.test_preparation)
            ),
        )
        if self.age is not None:
            profile.age = self.age
        record = AcademicRecord()
        for name in (
            "attendance_percentage",
            "study_hours_per_week",
            "previous_gpa",
            "assignments_completed",
        ):
            value = getattr(self, name)
            if value is not None:
                setattr(record, name, value)
        return Student(profile=profile, academic_record=record)

    @classmethod
    def from_row(cls, row: Mapping[str, str]) -> StudentInput:
        """From a CSV row (csv.DictReader) with these field names as columns; empty cells and
        missing columns are "not given". Raises ValueError naming a cell that is not a number."""
        return cls(
            student_id=row.get("student_id", "").strip(),
            age=_parse(row, "age", int),
            gender=row.get("gender") or None,
            parental_education=row.get("parental_education") or None,
            lunch_program=row.get("lunch_program") or None,
            test_preparation=row.get("test_preparation") or None,
            attendance_percentage=_parse(row, "attendance_percentage", float),
            study_hours_per_week=_parse(row, "study_hours_per_week", float),
            previous_gpa=_parse(row, "previous_gpa", float),
            assignments_completed=_parse(row, "assignments_completed", _boolean),
        )


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _parse(row: Mapping[str, str], column: str, kind: Callable[[str], T]) -> T | None:
    text = (row.get(column) or "").strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{column}: not a valid value: {text!r}") from None


def outcome(student_id: str, term: str, final_score: float) -> Outcome:
    """One RecordOutcomes entry: the student's actual final score in `term` (e.g. 2026-spring)."""
    return Outcome(student_id=student_id, term=term, final_score=final_score)


StudentLike = Student | StudentInput


def as_student(student: StudentLike) -> Student:
    return student if isinstance(student, Student) else student.to_proto()
