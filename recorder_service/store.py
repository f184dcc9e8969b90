"""Writing batches of prediction events into PostgreSQL, idempotently.

A batch is one transaction of five set-based statements. Each is keyed so that writing the
same events again changes nothing: predictions by prediction id, profiles and academic records
by their content-derived ids (all DO NOTHING), students upserted only by a profile at least as
new as the one they hold (the later in the log wins a tie).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from recorder_service.rows import BatchRows, rows_for
from studentperf.v1.prediction_event_pb2 import PredictionEvent

log = logging.getLogger(__name__)

_INSERT_MODEL_VERSIONS = """
INSERT INTO model_versions (model_version)
SELECT * FROM unnest($1::text[])
ON CONFLICT (model_version) DO NOTHING
"""

_UPSERT_STUDENTS = """
INSERT INTO students AS s (student_id, age, gender, parental_education, lunch_program,
                           test_preparation, profile_as_of)
SELECT * FROM unnest($1::text[], $2::smallint[], $3::text[], $4::text[], $5::text[],
                     $6::text[], $7::timestamptz[])
ON CONFLICT (student_id) DO UPDATE SET
    age = EXCLUDED.age,
    gender = EXCLUDED.gender,
    parental_education = EXCLUDED.parental_education,
    lunch_program = EXCLUDED.lunch_program,
    test_preparation = EXCLUDED.test_preparation,
    profile_as_of = EXCLUDED.profile_as_of
WHERE s.profile_as_of <= EXCLUDED.profile_as_of
"""

_INSERT_STUDENT_PROFILES = """
INSERT INTO student_profiles (student_profile_id, student_id, age, gender, parental_education,
                              lunch_program, test_preparation)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::smallint[], $4::text[], $5::text[],
                     $6::text[], $7::text[])
ON CONFLICT (student_profile_id) DO NOTHING
"""

_INSERT_ACADEMIC_RECORDS = """
INSERT INTO academic_records (academic_record_id, student_id, attendance_percentage,
                              study_hours_per_week, previous_gpa, assignments_completed)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::float8[], $4::float8[], $5::float8[],
                     $6::bool[])
ON CONFLICT (academic_record_id) DO NOTHING
"""

_INSERT_PREDICTIONS = """
INSERT INTO predictions (prediction_id, student_id, student_profile_id, academic_record_id,
                         model_version, predicted_final_score, pass_probability,
                         predicted_pass, pass_mark, imputed_fields, predicted_at,
                         event_schema_version)
SELECT p.prediction_id, p.student_id, p.student_profile_id, p.academic_record_id,
       p.model_version, p.predicted_final_score, p.pass_probability, p.predicted_pass,
       p.pass_mark, string_to_array(p.imputed_fields, ','), p.predicted_at,
       p.event_schema_version
FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::text[], $6::float8[],
            $7::float8[], $8::bool[], $9::float8[], $10::text[], $11::timestamptz[],
            $12::smallint[])
     AS p(prediction_id, student_id, student_profile_id, academic_record_id, model_version,
          predicted_final_score, pass_probability, predicted_pass, pass_mark, imputed_fields,
          predicted_at, event_schema_version)
ON CONFLICT (prediction_id) DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class WriteResult:
    stored: int  # predictions newly written
    already_stored: int  # predictions that were there before: a re-delivery
    rejected: list[tuple[PredictionEvent, str]]  # events the database refused, and why


def is_transient(error: BaseException) -> bool:
    """Whether waiting and trying again may succeed (the database is away, not the data bad)."""
    if isinstance(error, asyncpg.PostgresError):
        # 08: connection exception, 53: insufficient resources, 57: operator intervention
        # (shutdown, not yet accepting connections), 40: serialization failure / deadlock.
        return str(error.sqlstate)[:2] in {"08", "53", "57", "40"}
    # InternalClientError: a connection the server dropped mid-query, found broken when the
    # pool resets it on release.
    return isinstance(
        error, (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.InternalClientError)
    )


async def _write(conn: asyncpg.Connection, rows: BatchRows) -> int:
    async with conn.transaction():
        await conn.execute(_INSERT_MODEL_VERSIONS, rows.model_versions)
        await conn.execute(_UPSERT_STUDENTS, *rows.students.values)
        await conn.execute(_INSERT_STUDENT_PROFILES, *rows.student_profiles.values)
        await conn.execute(_INSERT_ACADEMIC_RECORDS, *rows.academic_records.values)
        status = await conn.execute(_INSERT_PREDICTIONS, *rows.predictions.values)
    return int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <rows>"


async def write_events(pool: asyncpg.Pool, events: Sequence[PredictionEvent]) -> WriteResult:
    """Writes the events in one transaction; if the data breaks a constraint, one by one.

    Transient errors (see `is_transient`) propagate: nothing was committed, the caller retries.
    """
    async with pool.acquire() as conn:
        try:
            stored = await _write(conn, rows_for(events))
            return WriteResult(stored, len(events) - stored, [])
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as error:
            if len(events) == 1:
                return WriteResult(0, 0, [(events[0], f"{type(error).__name__}: {error}")])
            log.warning("batch of %d refused (%s); writing one by one", len(events), error)
        stored = already = 0
        rejected: list[tuple[PredictionEvent, str]] = []
        for event in events:
            try:
                n = await _write(conn, rows_for([event]))
            except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as error:
                rejected.append((event, f"{type(error).__name__}: {error}"))
            else:
                stored += n
                already += 1 - n
        return WriteResult(stored, already, rejected)
