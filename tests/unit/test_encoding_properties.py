"""Property-based: whatever a client puts in a Student, validation answers cleanly.

Every input either encodes to a finite-or-NaN feature row within the documented ranges, or is
refused with InvalidInput naming fields under the student's path; nothing else escapes.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from inference_service.encoding import InvalidInput, encode_student
from studentperf.features import CATEGORIES, FEATURE_COLUMNS, NUMERIC_RANGES
from studentperf.v1.student_pb2 import AcademicRecord, Student, StudentProfile

any_float = st.floats(allow_nan=True, allow_infinity=True, width=64)
any_int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
any_enum = st.integers(min_value=-(2**31), max_value=2**31 - 1)
any_text = st.text(max_size=200)


@st.composite
def students(draw: st.DrawFn) -> Student:
    profile = StudentProfile(
        student_id=draw(st.one_of(any_text, st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)))
    )
    if draw(st.booleans()):
        profile.age = draw(st.one_of(any_int32, st.integers(10, 100)))
    for name in CATEGORIES:
        setattr(profile, name, draw(st.one_of(st.integers(0, 7), any_enum)))
    record = AcademicRecord()
    for name in ("attendance_percentage", "study_hours_per_week", "previous_gpa"):
        if draw(st.booleans()):
            low, high = NUMERIC_RANGES[name]
            setattr(record, name, draw(st.one_of(any_float, st.floats(low, high))))
    if draw(st.booleans()):
        record.assignments_completed = draw(st.booleans())
    return Student(profile=profile, academic_record=record)


@settings(max_examples=500, deadline=None)
@given(students())
def test_every_student_is_encoded_within_range_or_refused_by_field(student: Student) -> None:
    try:
        encoded = encode_student(student, "students[7]")
    except InvalidInput as refused:
        assert refused.violations
        for violation in refused.violations:
            assert violation.field.startswith("students[7].")
            assert violation.description
        return
    row = dict(zip(FEATURE_COLUMNS, encoded.features, strict=True))
    for name, (low, high) in NUMERIC_RANGES.items():
        value = row[name]
        assert isinstance(value, float)
        assert math.isnan(value) or low <= value <= high
    for name, categories in CATEGORIES.items():
        assert row[name] is None or row[name] in categories
    assert len(encoded.imputed_fields) == sum(
        1 for v in encoded.features if v is None or (isinstance(v, float) and math.isnan(v))
    )
