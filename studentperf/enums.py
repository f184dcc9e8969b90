"""Proto enum numbers to the category names used by the model and the database.

GENDER_FEMALE -> "female", PARENTAL_EDUCATION_SOME_COLLEGE -> "some_college": the name less its
prefix, lower-cased. 0 (UNSPECIFIED) means "not given" and has no category.
"""

from __future__ import annotations

from typing import Final

from google.protobuf.descriptor import EnumDescriptor

from studentperf.features import CATEGORIES
from studentperf.v1 import student_pb2


def _categories_by_number(enum: EnumDescriptor, prefix: str) -> dict[int, str]:
    return {
        value.number: value.name.removeprefix(prefix).lower()
        for value in enum.values
        if value.number != 0
    }


# Per categorical feature, named as its field in StudentProfile.
CATEGORY_BY_NUMBER: Final[dict[str, dict[int, str]]] = {
    "gender": _categories_by_number(student_pb2.Gender.DESCRIPTOR, "GENDER_"),
    "parental_education": _categories_by_number(
        student_pb2.ParentalEducation.DESCRIPTOR, "PARENTAL_EDUCATION_"
    ),
    "lunch_program": _categories_by_number(student_pb2.LunchProgram.DESCRIPTOR, "LUNCH_PROGRAM_"),
    "test_preparation": _categories_by_number(
        student_pb2.TestPreparation.DESCRIPTOR, "TEST_PREPARATION_"
    ),
}

if {f: set(c.values()) for f, c in CATEGORY_BY_NUMBER.items()} != {
    f: set(c) for f, c in CATEGORIES.items()
}:
    raise ImportError("proto enums and studentperf.features.CATEGORIES name different categories")
