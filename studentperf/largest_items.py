"""The largest valid student and outcome, built: what `limits.LARGEST_ITEM_BYTES` measures.

The request-size limit is derived from these; its unit test, the hostile-input test and the
flood benchmark build their largest requests from them, so all three measure one thing.
"""

from __future__ import annotations

from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1.student_pb2 import (
    AcademicRecord,
    Gender,
    LunchProgram,
    ParentalEducation,
    Student,
    StudentProfile,
    TestPreparation,
)

LONGEST_ID = "x" * 64
LONGEST_TERM = "2026-" + "a" * 27
LONGEST_TOP_FACTORS = 2**32 - 1


def largest_student(student_id: str = LONGEST_ID) -> Student:
    """A valid student with every field set at its longest on the wire (give a 64-character
    id to keep it so)."""
    return Student(
        profile=StudentProfile(
            student_id=student_id,
            age=100,
            gender=Gender.GENDER_OTHER,
            parental_education=ParentalEducation.PARENTAL_EDUCATION_DOCTORATE,
            lunch_program=LunchProgram.LUNCH_PROGRAM_FREE_OR_REDUCED,
            test_preparation=TestPreparation.TEST_PREPARATION_COMPLETED,
        ),
        academic_record=AcademicRecord(
            attendance_percentage=99.5,
            study_hours_per_week=99.5,
            previous_gpa=3.9,
            assignments_completed=True,
        ),
    )


def largest_outcome() -> api.Outcome:
    return api.Outcome(student_id=LONGEST_ID, term=LONGEST_TERM, final_score=99.5)
