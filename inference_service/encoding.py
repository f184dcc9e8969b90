"""From a `Student` message to the model's feature row, checking every rule on the way.

The row follows `studentperf.features.FEATURE_COLUMNS`: floats (NaN when missing) for numbers
and booleans, category names (None when missing) for enums. Missing fields are recorded by
their path inside `Student`, so the answer can say what the model imputed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from studentperf.enums import CATEGORY_BY_NUMBER
from studentperf.features import FEATURE_COLUMNS, FEATURE_PARTS, NUMERIC_RANGES, FeatureValue
from studentperf.v1.student_pb2 import Student

_STUDENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_STUDENT_ID_RULE = "required: 1-64 characters, each an ASCII letter, digit, '-' or '_'"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


class InvalidInput(ValueError):
    """The request breaks the API's rules; `violations` names each bad field and its rule."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = violations
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))


@dataclass(frozen=True, slots=True)
class EncodedStudent:
    student_id: str
    features: tuple[FeatureValue, ...]
    imputed_fields: tuple[str, ...]


_COLUMN_INDEX = {name: index for index, name in enumerate(FEATURE_COLUMNS)}


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
    parts = {"profile": student.profile, "academic_record": student.academic_record}

    student_id = student.profile.student_id
    if not _STUDENT_ID.fullmatch(student_id):
        violations.append(FieldViolation(f"{path}.profile.student_id", _STUDENT_ID_RULE))

    features: list[FeatureValue] = [None] * len(FEATURE_COLUMNS)
    imputed: list[str] = []
    for name, part in FEATURE_PARTS.items():
        message = parts[part]
        categories = CATEGORY_BY_NUMBER.get(name)
        if categories is not None:
            number = getattr(message, name)
            if number == 0:
                imputed.append(f"{part}.{name}")
            elif number in categories:
                features[_COLUMN_INDEX[name]] = categories[number]
            else:
                known = ", ".join(str(n) for n in sorted(categories))
                violations.append(
                    FieldViolation(
                        f"{path}.{part}.{name}",
                        f"unknown enum number {number}; known: {known}, or 0 when not given",
                    )
                )
        elif not message.HasField(name):
            features[_COLUMN_INDEX[name]] = math.nan
            imputed.append(f"{part}.{name}")
        else:
            value = float(getattr(message, name))
            low, high = NUMERIC_RANGES[name]
            if not (math.isfinite(value) and low <= value <= high):
                violations.append(FieldViolation(f"{path}.{part}.{name}", _range_rule(low, high)))
            features[_COLUMN_INDEX[name]] = value

    if violations:
        raise InvalidInput(violations)
    return EncodedStudent(
        student_id=student_id,
        features=tuple(features),
        imputed_fields=tuple(imputed),
    )
