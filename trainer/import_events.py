"""From a good row of a Kaggle file to the ImportEvent that carries it to the recorder: pure.

The event id is a UUID v5 of (the file's SHA-256, the row's line, the term), so the same row of
the same file imported for the same term has the same id however often it is imported, and
the recorder stores it once (migration 0011). The student id is derived from the file and the
line too (trainer.kaggle), so the event's key, and with it its partition, is the same as well.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Final

from studentperf import envelope
from studentperf.enums import CATEGORY_BY_NUMBER
from studentperf.v1.import_event_pb2 import ImportEvent, ImportSource
from studentperf.v1.prediction_service_pb2 import Outcome
from studentperf.v1.student_pb2 import StudentProfile
from trainer.kaggle import KaggleRow

# Fixed forever: the ids of every import event ever published are derived from it.
_NAMESPACE: Final = uuid.UUID("3f0c2b8e-4a55-4d1e-9d6f-6a0e1c7b2d94")
_NUMBER_BY_CATEGORY: Final = {
    field: {name: number for number, name in names.items()}
    for field, names in CATEGORY_BY_NUMBER.items()
}


def import_event_id(file_sha256: str, line: int, term: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{file_sha256}:{line}:{term}"))


def _profile(row: KaggleRow) -> StudentProfile:
    profile = StudentProfile(student_id=row.student_id)
    for field, numbers in _NUMBER_BY_CATEGORY.items():
        category: str | None = getattr(row, field)
        if category is not None:  # not given: 0, the field's default
            setattr(profile, field, numbers[category])
    return profile


def import_event(
    row: KaggleRow, *, file_sha256: str, term: str, occurred_at: datetime
) -> ImportEvent:
    """The event of one good row: the profile the file gives (no age: the file has none) and the
    row's final score for `term`, given as of `occurred_at` (the import's time)."""
    event = ImportEvent(
        schema_version=envelope.SCHEMA_VERSION,
        event_id=import_event_id(file_sha256, row.line, term),
        profile=_profile(row),
        outcome=Outcome(student_id=row.student_id, term=term, final_score=row.final_score),
        source=ImportSource(file_sha256=file_sha256, line=row.line),
    )
    event.occurred_at.FromDatetime(occurred_at)
    return event
