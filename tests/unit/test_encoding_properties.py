"""Property-based: students whose verdict is known before validation runs.

A valid student is built field by field within the documented rules (README, "The contract";
studentperf.features); an invalid one is a valid one with exactly one field breaking exactly one
rule. The validator must encode the first to the row its fields spell out, and refuse the second
naming that field and no other: a validator that refused everything, accepted everything, or
blamed the wrong field fails here. The integration test of hostile input sends the same students
through a real server (tests/integration/test_hostile_input.py).
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass

from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_service.encoding import InvalidInput, encode_student
from studentperf.enums import CATEGORY_BY_NUMBER
from studentperf.features import FEATURE_COLUMNS, FEATURE_PARTS, NUMERIC_RANGES
from studentperf.v1.student_pb2 import AcademicRecord, Student, StudentProfile

INT32 = (-(2**31), 2**31 - 1)
ID_CHARACTERS = string.ascii_letters + string.digits + "-_"
ENUMS = tuple(CATEGORY_BY_NUMBER)
RANGED = ("attendance_percentage", "study_hours_per_week", "previous_gpa")
# Every field a student can break, as its path inside Student.
BREAKABLE = (
    "profile.student_id",
    "profile.age",
    *(f"profile.{name}" for name in ENUMS),
    *(f"academic_record.{name}" for name in RANGED),
)


@dataclass(frozen=True)
class Case:
    """A student and its verdict: None when valid, else the one field (its path inside
    Student, e.g. "profile.age") that breaks its rule."""

    student: Student
    broken: str | None


def valid_ids() -> st.SearchStrategy[str]:
    return st.text(ID_CHARACTERS, min_size=1, max_size=64)


@st.composite
def valid_students(draw: st.DrawFn) -> Student:
    """Every field left out or within its rule; each boundary value reachable."""
    profile = StudentProfile(student_id=draw(valid_ids()))
    if draw(st.booleans()):
        profile.age = draw(st.integers(10, 100))
    for name in ENUMS:
        setattr(profile, name, draw(st.sampled_from([0, *CATEGORY_BY_NUMBER[name]])))
    record = AcademicRecord()
    for name in RANGED:
        if draw(st.booleans()):
            low, high = NUMERIC_RANGES[name]
            setattr(record, name, draw(st.floats(low, high)))
    if draw(st.booleans()):
        record.assignments_completed = draw(st.booleans())
    return Student(profile=profile, academic_record=record)


def _outside_id_characters() -> st.SearchStrategy[str]:
    # Surrogates cannot be sent at all (protobuf refuses to serialize them).
    return st.characters(blacklist_characters=ID_CHARACTERS, blacklist_categories=["Cs"])


@st.composite
def bad_ids(draw: st.DrawFn) -> str:
    """A student_id breaking one part of its rule: empty, too long, or a foreign character."""
    kind = draw(st.sampled_from(["empty", "too long", "foreign character"]))
    if kind == "empty":
        return ""
    if kind == "too long":
        return draw(st.text(ID_CHARACTERS, min_size=65, max_size=200))
    valid = draw(st.text(ID_CHARACTERS, min_size=0, max_size=63))
    at = draw(st.integers(0, len(valid)))
    return valid[:at] + draw(_outside_id_characters()) + valid[at:]


def outside_range(low: float, high: float) -> st.SearchStrategy[float]:
    # Hypothesis counts -0.0 below 0.0; the rule does not.
    return st.one_of(
        st.floats(max_value=low, exclude_max=True).filter(lambda v: v < low),
        st.floats(min_value=high, exclude_min=True),
        st.just(math.nan),
        st.just(math.inf),
        st.just(-math.inf),
    )


def _unknown_enum_numbers(name: str) -> st.SearchStrategy[int]:
    known = CATEGORY_BY_NUMBER[name]
    return st.one_of(st.integers(INT32[0], -1), st.integers(max(known) + 1, INT32[1])).filter(
        lambda n: n not in known
    )


@st.composite
def invalid_students(draw: st.DrawFn) -> Case:
    """A valid student with exactly one field breaking exactly one rule."""
    student = draw(valid_students())
    broken = draw(st.sampled_from(BREAKABLE))
    name = broken.rsplit(".", 1)[1]
    if name == "student_id":
        student.profile.student_id = draw(bad_ids())
    elif name == "age":
        student.profile.age = draw(st.one_of(st.integers(INT32[0], 9), st.integers(101, INT32[1])))
    elif name in ENUMS:
        setattr(student.profile, name, draw(_unknown_enum_numbers(name)))
    else:
        setattr(student.academic_record, name, draw(outside_range(*NUMERIC_RANGES[name])))
    return Case(student, broken)


def cases() -> st.SearchStrategy[Case]:
    """Valid and invalid students about evenly."""
    return st.one_of(valid_students().map(lambda s: Case(s, None)), invalid_students())


def rule_words(case: Case) -> list[str]:
    """What the description of the broken field's violation must mention of its rule."""
    assert case.broken is not None
    name = case.broken.rsplit(".", 1)[1]
    if name == "student_id":
        return ["1-64"]
    if name in ENUMS:
        return [str(getattr(case.student.profile, name)), "known"]
    low, high = NUMERIC_RANGES[name]
    return [f"{low:g}", f"{high:g}"]


def given_fields(student: Student) -> set[str]:
    """The paths of the fields the client set (an enum's 0 means not given)."""
    profile, record = student.profile, student.academic_record
    found = {f"profile.{name}" for name in ENUMS if getattr(profile, name) != 0}
    if profile.HasField("age"):
        found.add("profile.age")
    generic: Message = record  # the field's name is data: the stubs' HasField takes literals
    for name in (*RANGED, "assignments_completed"):
        if generic.HasField(name):
            found.add(f"academic_record.{name}")
    return found


def imputed_fields(student: Student) -> list[str]:
    """What the model imputes for a valid student: every feature not given, in schema order."""
    given = given_fields(student)
    return [path for name, part in FEATURE_PARTS.items() if (path := f"{part}.{name}") not in given]


def _expected_row(student: Student) -> dict[str, float | str | None]:
    """The feature row a valid student spells out, from its fields alone."""
    profile, record = student.profile, student.academic_record
    row: dict[str, float | str | None] = {
        "age": float(profile.age) if profile.HasField("age") else math.nan
    }
    for name in ENUMS:
        row[name] = CATEGORY_BY_NUMBER[name].get(getattr(profile, name))
    generic: Message = record  # the field's name is data: the stubs' HasField takes literals
    for name in (*RANGED, "assignments_completed"):
        row[name] = float(getattr(record, name)) if generic.HasField(name) else math.nan
    return row


def _same(found: float | str | None, expected: float | str | None) -> bool:
    if isinstance(found, float) and isinstance(expected, float) and math.isnan(expected):
        return math.isnan(found)
    return found == expected


@settings(max_examples=300, deadline=None)
@given(valid_students())
def test_a_valid_student_encodes_to_the_row_its_fields_spell_out(student: Student) -> None:
    encoded = encode_student(student, "students[7]")
    assert encoded.student_id == student.profile.student_id
    row = dict(zip(FEATURE_COLUMNS, encoded.features, strict=True))
    expected = _expected_row(student)
    assert set(row) == set(expected)
    assert all(_same(row[name], expected[name]) for name in row), (row, expected)
    assert list(encoded.imputed_fields) == imputed_fields(student)


@settings(max_examples=500, deadline=None)
@given(invalid_students())
def test_a_student_broken_in_one_field_is_refused_naming_that_field(case: Case) -> None:
    try:
        encode_student(case.student, "students[7]")
    except InvalidInput as refused:
        [violation] = refused.violations
        assert violation.field == f"students[7].{case.broken}"
        assert all(word in violation.description for word in rule_words(case)), violation
        return
    raise AssertionError(f"accepted a student whose {case.broken} breaks its rule")


def test_a_missing_student_is_refused_by_its_path() -> None:
    try:
        encode_student(None, "student")
    except InvalidInput as refused:
        assert [(v.field, v.description) for v in refused.violations] == [("student", "required")]
        return
    raise AssertionError("accepted a missing student")
