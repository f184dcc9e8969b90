"""From prediction events to the rows of the normalized tables: pure, no database.

Columns are gathered per table, ready to be passed as arrays to one `INSERT ... SELECT FROM
unnest(...)` per table, so a batch costs the same few statements whatever its size.
Profiles and academic records are content-addressed: their id is a UUID v5 of the student and
the values, so the same inputs sent again are one row, and a prediction always points at the
inputs it was made from.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.message import Message

from studentperf.enums import CATEGORY_BY_NUMBER
from studentperf.features import ACADEMIC_RECORD_FEATURES, PROFILE_FEATURES
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from studentperf.v1.student_pb2 import AcademicRecord, StudentProfile

# Fixed forever: the ids of stored profiles and records are derived from it.
_NAMESPACE = uuid.UUID("6b0d6a55-58c4-4d7a-9a0b-2f1bb0c2d7e1")

Value = float | bool | str | None


class Columns:
    """One list per column, in the order of the table's INSERT statement."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.values: list[list[object]] = [[] for _ in names]

    def add(self, *row: object) -> None:
        for column, value in zip(self.values, row, strict=True):
            column.append(value)

    def column(self, name: str) -> list[object]:
        return self.values[self.names.index(name)]

    def __len__(self) -> int:
        return len(self.values[0])


@dataclass(slots=True)
class BatchRows:
    model_versions: list[str]
    students: Columns
    student_profiles: Columns
    academic_records: Columns
    predictions: Columns


def _value(message: Message, name: str) -> Value:
    """A field as stored: None when not given, enum numbers as their category names."""
    categories = CATEGORY_BY_NUMBER.get(name)
    if categories is not None:
        number = getattr(message, name)
        if number == 0:
            return None
        # An unknown number stays visible rather than dropped; the CHECK constraint refuses it.
        return categories.get(number, f"unknown enum number {number}")
    if not message.HasField(name):
        return None
    value: Value = getattr(message, name)
    return value


def profile_values(profile: StudentProfile) -> list[Value]:
    return [_value(profile, name) for name in PROFILE_FEATURES]


def academic_record_values(record: AcademicRecord) -> list[Value]:
    return [_value(record, name) for name in ACADEMIC_RECORD_FEATURES]


def content_id(kind: str, student_id: str, values: Sequence[Value]) -> uuid.UUID:
    """The same kind, student and values give the same id; "not given" differs from 0."""
    return uuid.uuid5(_NAMESPACE, "\x1f".join([kind, student_id, *map(repr, values)]))


def rows_for(events: Sequence[PredictionEvent]) -> BatchRows:
    students = Columns(("student_id", *PROFILE_FEATURES, "profile_as_of"))
    profiles = Columns(("student_profile_id", "student_id", *PROFILE_FEATURES))
    records = Columns(("academic_record_id", "student_id", *ACADEMIC_RECORD_FEATURES))
    predictions = Columns(PREDICTION_COLUMNS)
    # One statement may not update a row twice: keep each student's latest profile only. Of
    # two events at the same time, the later in the batch (the log) wins.
    latest: dict[str, PredictionEvent] = {}
    for event in events:
        sid = event.input.profile.student_id
        if sid not in latest or _when(latest[sid]) <= _when(event):
            latest[sid] = event
    for sid, event in latest.items():
        students.add(sid, *profile_values(event.input.profile), _when(event))

    for event in events:
        sid = event.input.profile.student_id
        profile = profile_values(event.input.profile)
        profile_id = content_id("profile", sid, profile)
        profiles.add(profile_id, sid, *profile)
        record = academic_record_values(event.input.academic_record)
        record_id = content_id("academic_record", sid, record)
        records.add(record_id, sid, *record)
        p = event.prediction
        predictions.add(
            uuid.UUID(p.prediction_id),
            sid,
            profile_id,
            record_id,
            p.model_version,
            p.predicted_final_score,
            p.pass_probability,
            p.predicted_pass,
            p.pass_mark,
            # Comma-joined: arrays of arrays do not unnest row by row in PostgreSQL.
            ",".join(p.imputed_fields),
            _when(event),
            event.schema_version,
        )

    return BatchRows(
        model_versions=sorted({e.prediction.model_version for e in events}),
        students=students,
        student_profiles=profiles,
        academic_records=records,
        predictions=predictions,
    )


PREDICTION_COLUMNS = (
    "prediction_id",
    "student_id",
    "student_profile_id",
    "academic_record_id",
    "model_version",
    "predicted_final_score",
    "pass_probability",
    "predicted_pass",
    "pass_mark",
    "imputed_fields",
    "predicted_at",
    "event_schema_version",
)


def _when(event: PredictionEvent) -> datetime:
    return event.occurred_at.ToDatetime(tzinfo=UTC)
