"""The school's id of a student: the one rule the API, the events and the `students` table
share (the CHECK on students.student_id says the same, without a counted repetition since
migration 0028: PostgreSQL's regular expressions unroll one, at a cost per row)."""

from __future__ import annotations

import re
from typing import Final

STUDENT_ID_PATTERN: Final = r"[A-Za-z0-9_-]{1,64}"
STUDENT_ID_RULE: Final = "required: 1-64 characters, each an ASCII letter, digit, '-' or '_'"
_STUDENT_ID: Final = re.compile(STUDENT_ID_PATTERN)


def student_id_is_valid(student_id: str) -> bool:
    return _STUDENT_ID.fullmatch(student_id) is not None
