"""Counting duplicates where they can actually appear, for the fault and recorder tests.

`predictions` has the prediction id as its primary key, so counting its rows per id always
gives one. A duplicate can show elsewhere:

- in the child tables: a student's profile and academic record are stored once per distinct
  content (their ids are derived from it, recorder_service.rows.content_id); a recorder that
  wrote one again on a redelivery would leave two rows of one student with the same content;
- in the topic: an event sent twice (a spool replay of a send that landed late, a producer
  retry) is two records with one prediction id; the recorder must store it once;
- as a row of a prediction no caller was answered for: a call that failed after its event was
  published (see tests.integration.processes.tally).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from studentperf import envelope
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from tests.integration.helpers import read_all

# Rows beyond the first of each (student, content) in the child tables, for the given students.
_DUPLICATE_CHILD_ROWS = """
SELECT coalesce(sum(n - 1), 0) FROM (
    SELECT count(*) AS n FROM student_profiles WHERE student_id = ANY($1::text[])
    GROUP BY student_id, age, gender, parental_education, lunch_program, test_preparation
    UNION ALL
    SELECT count(*) FROM academic_records WHERE student_id = ANY($1::text[])
    GROUP BY student_id, attendance_percentage, study_hours_per_week, previous_gpa,
             assignments_completed
) per_content
"""


async def duplicate_child_rows(conn: asyncpg.Connection, students: Sequence[str]) -> int:
    """Profile and academic-record rows that repeat another row of the same student's."""
    return int(await conn.fetchval(_DUPLICATE_CHILD_ROWS, list(students)))


@dataclass
class TopicEvents:
    """The prediction events a topic holds, counted by prediction id."""

    per_id: Counter[uuid.UUID] = field(default_factory=Counter)
    student: dict[uuid.UUID, str] = field(default_factory=dict)
    unreadable: int = 0  # records that are not a prediction event (poison, outcomes)


async def read_prediction_events(bootstrap_servers: str, topic: str) -> TopicEvents:
    """Every record the topic holds now, read from its start and decoded as the recorder does
    (studentperf.envelope)."""
    found = TopicEvents()
    for record in await read_all(bootstrap_servers, topic):
        try:
            event = envelope.decode_any(record.value, record.headers)
        except envelope.UndecodableEvent:
            found.unreadable += 1
            continue
        if not isinstance(event, PredictionEvent):
            found.unreadable += 1
            continue
        pid = uuid.UUID(event.prediction.prediction_id)
        found.per_id[pid] += 1
        found.student[pid] = event.input.profile.student_id
    return found
