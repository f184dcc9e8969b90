"""From a `Student` message to the model's feature row, checking every rule on the way.

The row follows `studentperf.features.FEATURE_COLUMNS`: floats (NaN when missing) for numbers
and booleans, category names (None when missing) for enums. Missing fields are recorded by
their path inside `Student`, so the answer can say what the model imputed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from google.protobuf.message import Message

from studentperf.enums import CATEGORY_BY_NUMBER
from studentperf.features import FEATURE_COLUMNS, FEATURE_PARTS, NUMERIC_RANGES, FeatureValue
from studentperf.student_id import STUDENT_ID_RULE, student_id_is_valid
from studentperf.v1.student_pb2 import Student


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


class InvalidInput(ValueError):
    """The request breaks the API's rules; `violations` names each bad field and its rule."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = violations
        super().__init__(self.describe())

    def describe(self, limit: int | None = None) -> str:
        """Each bad field and its rule, the first `limit` of them (None: all)."""
        return "; ".join(f"{v.field}: {v.description}" for v in self.violations[:limit])


@dataclass(frozen=True, slots=True)
class EncodedStudent:
    student_id: str
    features: tuple[FeatureValue, ...]
    imputed_fields: tuple[str, ...]


_COLUMN_INDEX = {name: index for index, name in enumerate(FEATURE_COLUMNS)}


@dataclass(frozen=True, slots=True)
class _Field:
    """What encoding one feature needs, looked up once rather than per student."""

    name: str
    in_profile: bool
    column: int
    path: str  # inside Student: "profile.age"
    categories: dict[int, str] | None
    low: float
    high: float


_FIELDS = tuple(
    _Field(
        name=name,
        in_profile=part == "profile",
        column=_COLUMN_INDEX[name],
        path=f"{part}.{name}",
        categories=CATEGORY_BY_NUMBER.get(name),
        low=NUMERIC_RANGES.get(name, (0.0, 0.0))[0],
        high=NUMERIC_RANGES.get(name, (0.0, 0.0))[1],
    )
    for name, part in FEATURE_PARTS.items()
)


def _range_rule(low: float, high: float) -> str:
    return f"must be a number from {low:g} to {high:g}"


def encode_student(student: Student | None, path: str) -> EncodedStudent:
    """Checks one student and encodes it; raises InvalidInput naming every bad field.

    `path` is where the student sits in the request ("student", "students[3]"), so that
    violations and imputed fields are named the way the caller wrote them.
    """
    if student is None:
        raise InvalidInput([FieldViolation(path, "required")])
    violations: list[FieldViolation] = []
    profile, record = student.profile, student.academic_record

    student_id = profile.student_id
    if not student_id_is_valid(student_id):
        violations.append(FieldViolation(f"{path}.profile.student_id", STUDENT_ID_RULE))

    features: list[FeatureValue] = [None] * len(FEATURE_COLUMNS)
    imputed: list[str] = []
    for field in _FIELDS:
        # The generic Message: the field's name is data here, not a literal the stubs know.
        message: Message = profile if field.in_profile else record
        categories = field.categories
        if categories is not None:
            number = getattr(message, field.name)
            if number == 0:
                imputed.append(field.path)
            elif number in categories:
                features[field.column] = categories[number]
            else:
                known = ", ".join(str(n) for n in sorted(categories))
                violations.append(
                    FieldViolation(
                        f"{path}.{field.path}",
                        f"unknown enum number {number}; known: {known}, or 0 when not given",
                    )
                )
        elif not message.HasField(field.name):
            features[field.column] = math.nan
            imputed.append(field.path)
        else:
            value = float(getattr(message, field.name))
            if not (math.isfinite(value) and field.low <= value <= field.high):
                violations.append(
                    FieldViolation(f"{path}.{field.path}", _range_rule(field.low, field.high))
                )
            features[field.column] = value

    if violations:
        raise InvalidInput(violations)
    return EncodedStudent(
        student_id=student_id,
        features=tuple(features),
        imputed_fields=tuple(imputed),
    )
