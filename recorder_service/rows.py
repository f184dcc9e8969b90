"""From prediction events to the rows of the normalized tables: pure, no database.

Columns are gathered per table, ready to be passed as arrays to one `INSERT ... SELECT FROM
unnest(...)` per table, so a batch costs four statements whatever its size.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from studentperf.enums import CATEGORY_BY_NUMBER
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from studentperf.v1.student_pb2 import AcademicRecord

# Fixed forever: academic record ids are derived from it, so changing it would split records.
_ACADEMIC_RECORD_NAMESPACE = uuid.UUID("6b0d6a55-58c4-4d7a-9a0b-2f1bb0c2d7e1")


@dataclass(slots=True)
class StudentRows:
    student_id: list[str] = field(default_factory=list)
    age: list[int | None] = field(default_factory=list)
    gender: list[str | None] = field(default_factory=list)
    parental_education: list[str | None] = field(default_factory=list)
    lunch_program: list[str | None] = field(default_factory=list)
    test_preparation: list[str | None] = field(default_factory=list)
    profile_as_of: list[datetime] = field(default_factory=list)


@dataclass(slots=True)
class AcademicRecordRows:
    academic_record_id: list[uuid.UUID] = field(default_factory=list)
    student_id: list[str] = field(default_factory=list)
    attendance_percentage: list[float | None] = field(default_factory=list)
    study_hours_per_week: list[float | None] = field(default_factory=list)
    previous_gpa: list[float | None] = field(default_factory=list)
    assignments_completed: list[bool | None] = field(default_factory=list)


@dataclass(slots=True)
class PredictionRows:
    prediction_id: list[uuid.UUID] = field(default_factory=list)
    student_id: list[str] = field(default_factory=list)
    academic_record_id: list[uuid.UUID] = field(default_factory=list)
    model_version: list[str] = field(default_factory=list)
    predicted_final_score: list[float] = field(default_factory=list)
    pass_probability: list[float] = field(default_factory=list)
    predicted_pass: list[bool] = field(default_factory=list)
    pass_mark: list[float] = field(default_factory=list)
    # Comma-joined paths: arrays of arrays do not unnest row by row in PostgreSQL.
    imputed_fields: list[str] = field(default_factory=list)
    predicted_at: list[datetime] = field(default_factory=list)
    event_schema_version: list[int] = field(default_factory=list)


@dataclass(slots=True)
class BatchRows:
    model_versions: list[str]
    students: StudentRows
    academic_records: AcademicRecordRows
    predictions: PredictionRows


_RECORD_FIELDS = (
    "attendance_percentage",
    "study_hours_per_week",
    "previous_gpa",
    "assignments_completed",
)


def _number(record: AcademicRecord, name: str) -> float | None:
    return float(getattr(record, name)) if record.HasField(name) else None


def _category(field_name: str, number: int) -> str | None:
    if number == 0:
        return None
    # An unknown number is kept visible rather than dropped; the CHECK constraint refuses it.
    return CATEGORY_BY_NUMBER[field_name].get(number, f"unknown enum number {number}")


def academic_record_id(student_id: str, record: AcademicRecord) -> uuid.UUID:
    """The same student and values give the same id, so a repeated record is one row."""
    values = [
        repr(getattr(record, name)) if record.HasField(name) else "None" for name in _RECORD_FIELDS
    ]
    return uuid.uuid5(_ACADEMIC_RECORD_NAMESPACE, "\x1f".join([student_id, *values]))


def rows_for(events: Sequence[PredictionEvent]) -> BatchRows:
    students = StudentRows()
    records = AcademicRecordRows()
    predictions = PredictionRows()
    # One statement may not update a row twice: keep each student's latest profile only.
    latest: dict[str, PredictionEvent] = {}
    for event in events:
        sid = event.input.profile.student_id
        if sid not in latest or _when(latest[sid]) <= _when(event):
            latest[sid] = event

    for sid, event in latest.items():
        profile = event.input.profile
        students.student_id.append(sid)
        students.age.append(profile.age if profile.HasField("age") else None)
        students.gender.append(_category("gender", profile.gender))
        students.parental_education.append(
            _category("parental_education", profile.parental_education)
        )
        students.lunch_program.append(_category("lunch_program", profile.lunch_program))
        students.test_preparation.append(_category("test_preparation", profile.test_preparation))
        students.profile_as_of.append(_when(event))

    for event in events:
        sid = event.input.profile.student_id
        record = event.input.academic_record
        record_id = academic_record_id(sid, record)
        records.academic_record_id.append(record_id)
        records.student_id.append(sid)
        records.attendance_percentage.append(_number(record, "attendance_percentage"))
        records.study_hours_per_week.append(_number(record, "study_hours_per_week"))
        records.previous_gpa.append(_number(record, "previous_gpa"))
        records.assignments_completed.append(
            record.assignments_completed if record.HasField("assignments_completed") else None
        )

        p = event.prediction
        predictions.prediction_id.append(uuid.UUID(p.prediction_id))
        predictions.student_id.append(sid)
        predictions.academic_record_id.append(record_id)
        predictions.model_version.append(p.model_version)
        predictions.predicted_final_score.append(p.predicted_final_score)
        predictions.pass_probability.append(p.pass_probability)
        predictions.predicted_pass.append(p.predicted_pass)
        predictions.pass_mark.append(p.pass_mark)
        predictions.imputed_fields.append(",".join(p.imputed_fields))
        predictions.predicted_at.append(_when(event))
        predictions.event_schema_version.append(event.schema_version)

    return BatchRows(
        model_versions=sorted({e.prediction.model_version for e in events}),
        students=students,
        academic_records=records,
        predictions=predictions,
    )


def _when(event: PredictionEvent) -> datetime:
    return event.occurred_at.ToDatetime(tzinfo=UTC)
