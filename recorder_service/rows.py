"""From a prediction event to its row of the staging table: pure, no database.

A batch is copied into one staging table, one row per event, and spread from there into the
normalized tables by set-based statements (see store.py). Profiles and academic records are
content-addressed: their id is a UUID v5 of the student and the values, so the same inputs
sent again are one row, and a prediction always points at the inputs it was made from.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from google.protobuf.message import Message

from studentperf.enums import CATEGORY_BY_NUMBER
from studentperf.features import ACADEMIC_RECORD_FEATURES, PROFILE_FEATURES
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from studentperf.v1.student_pb2 import AcademicRecord, StudentProfile

# Fixed forever: the ids of stored profiles and records are derived from it.
_NAMESPACE = uuid.UUID("6b0d6a55-58c4-4d7a-9a0b-2f1bb0c2d7e1")

Value = float | bool | str | None
StagingRow = tuple[object, ...]

# The staging table's columns, in the order of `staging_row`'s values.
STAGING_COLUMNS: tuple[str, ...] = (
    "seq",
    "prediction_id",
    "student_id",
    "student_profile_id",
    *PROFILE_FEATURES,
    "academic_record_id",
    *ACADEMIC_RECORD_FEATURES,
    "model_version",
    "predicted_final_score",
    "pass_probability",
    "predicted_pass",
    "pass_mark",
    "imputed_fields",
    "predicted_at",
    "event_schema_version",
)


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


def occurred_at(event: PredictionEvent) -> datetime:
    """The event's time; raises ValueError (or OverflowError) when it is not a real date."""
    return event.occurred_at.ToDatetime(tzinfo=UTC)


def staging_row(event: PredictionEvent, seq: int) -> StagingRow:
    """The event as one staging row; `seq` is its place in the batch (the log's order), which
    decides between two profiles of one student given at the same time: the later one wins.

    Raises ValueError or OverflowError for an event whose time is not a real date.
    """
    sid = event.input.profile.student_id
    profile = profile_values(event.input.profile)
    record = academic_record_values(event.input.academic_record)
    p = event.prediction
    return (
        seq,
        uuid.UUID(p.prediction_id),
        sid,
        content_id("profile", sid, profile),
        *profile,
        content_id("academic_record", sid, record),
        *record,
        p.model_version,
        p.predicted_final_score,
        p.pass_probability,
        p.predicted_pass,
        p.pass_mark,
        list(p.imputed_fields),
        occurred_at(event),
        event.schema_version,
    )
