"""Writing batches of staging rows into PostgreSQL, idempotently, in one transaction each.

A batch is COPYed into a temporary staging table and spread from there by one
`INSERT ... SELECT ... ON CONFLICT` per table, sent as one round trip. Each is keyed so that
writing the same events again changes nothing: predictions by prediction id, profiles and
academic records by their content-derived ids (DO NOTHING), each student's current facts
merged fact by fact, a fact replaced only by one given later (studentperf.student_facts), and
outcomes by (student_id, term), a score replaced only by one recorded later: ordered by the
event's time, then its offset, as the facts are (an outcome event gives no fact, so its
student gets a bare row when unknown, as migration 0002 describes). An imported CSV row is
both: its profile facts merge and its outcome is upserted by those same rules, and its event
id is noted, so the same row imported again is skipped. A new outcome's
recorded_at is its event's time, when RecordOutcomes accepted it, not when the recorder got to
it: the monitor pairs a prediction that names no term with the first outcome recorded after
it (trainer/monitor/data.py), by the service's clock on both sides.

COPY cannot do ON CONFLICT, and one bad row aborts a statement (MagicStack/asyncpg#749), so
a batch the database refuses (or the driver cannot encode) is split in halves until the
refused events stand alone; every other event is still written. A refusal is described by
the rule it broke (SQLSTATE, constraint, table, column), never by PostgreSQL's message or
detail: they quote the row ("Failing row contains (...)"), a student's data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import asyncpg

from recorder_service.erasure import (
    Applied,
    Erasure,
    StudentHasher,
    apply_erasures,
    erased_as_of,
    students_of,
    unerased,
)
from recorder_service.rows import STAGING_COLUMNS, StagingRow
from recorder_service.settings import DEV_ERASURE_KEY
from recorder_service.triage import Reason
from studentperf.database_errors import database_unavailable
from studentperf.student_facts import FACTS, merge_statement

log = logging.getLogger(__name__)

STAGING_TABLE = "recorder_batch"
# outcomes.source of an outcome recorded through RecordOutcomes (and so its event).
OUTCOME_SOURCE = "rpc"

# Types are as wide as the event's: an out-of-range age is then refused by PostgreSQL as data
# (and dead-lettered), rather than by the driver's encoder.
_CREATE_STAGING = f"""
CREATE TEMPORARY TABLE {STAGING_TABLE} (
    log_offset bigint NOT NULL,
    prediction_id uuid,
    student_id text,
    student_profile_id uuid,
    age integer,
    gender text,
    parental_education text,
    lunch_program text,
    test_preparation text,
    academic_record_id uuid,
    attendance_percentage double precision,
    study_hours_per_week double precision,
    previous_gpa double precision,
    assignments_completed boolean,
    model_version text,
    predicted_final_score double precision,
    pass_probability double precision,
    predicted_pass boolean,
    pass_mark double precision,
    imputed_fields text[],
    score_interval_low double precision,
    score_interval_high double precision,
    interval_coverage double precision,
    predicted_at timestamptz,
    event_schema_version bigint,
    trace_id text,
    term text,
    final_score double precision,
    explanation bytea,
    import_event_id uuid,
    outcome_source text
) ON COMMIT DROP
"""

# Each event gives the facts its request carried, as of the event's time and offset.
_GIVEN_FACTS = f"""(SELECT student_id, {", ".join(FACTS)}, predicted_at AS given_at, log_offset
      FROM {STAGING_TABLE}) AS given"""

# An imported CSV row is stored once per event id (migration 0011): a row imported before is
# dropped from the batch before anything is spread, so importing a file again stores nothing.
_SKIP_IMPORTED = f"""
DELETE FROM {STAGING_TABLE} b USING imported_rows i WHERE b.import_event_id = i.event_id"""
_NOTE_IMPORTED = f"""
INSERT INTO imported_rows (event_id, student_id)
SELECT DISTINCT import_event_id, student_id FROM {STAGING_TABLE}
WHERE import_event_id IS NOT NULL
ON CONFLICT (event_id) DO NOTHING"""

# One simple-protocol round trip; its status is the last statement's, the predictions insert.
_SPREAD = f"""{_SKIP_IMPORTED};

INSERT INTO model_versions (model_version)
SELECT DISTINCT model_version FROM {STAGING_TABLE} WHERE prediction_id IS NOT NULL
ON CONFLICT (model_version) DO NOTHING;

{merge_statement(_GIVEN_FACTS)};

INSERT INTO student_profiles (student_profile_id, student_id, age, gender, parental_education,
                              lunch_program, test_preparation)
SELECT DISTINCT ON (student_profile_id) student_profile_id, student_id, age, gender,
       parental_education, lunch_program, test_preparation
FROM {STAGING_TABLE} WHERE prediction_id IS NOT NULL
ON CONFLICT (student_profile_id) DO NOTHING;

INSERT INTO academic_records (academic_record_id, student_id, attendance_percentage,
                              study_hours_per_week, previous_gpa, assignments_completed)
SELECT DISTINCT ON (academic_record_id) academic_record_id, student_id, attendance_percentage,
       study_hours_per_week, previous_gpa, assignments_completed
FROM {STAGING_TABLE} WHERE prediction_id IS NOT NULL
ON CONFLICT (academic_record_id) DO NOTHING;

INSERT INTO outcomes AS o (student_id, term, final_score, source, recorded_at, recorded_as_of,
                          log_offset)
SELECT DISTINCT ON (student_id, term) student_id, term, final_score,
       COALESCE(outcome_source, '{OUTCOME_SOURCE}'), predicted_at, predicted_at, log_offset
FROM {STAGING_TABLE} WHERE prediction_id IS NULL
ORDER BY student_id, term, predicted_at DESC, log_offset DESC
ON CONFLICT (student_id, term) DO UPDATE SET
    final_score = EXCLUDED.final_score,
    source = EXCLUDED.source,
    -- When the score last changed: an event that repeats it (a duplicate a spool replay may
    -- publish, at a later offset) moves only its order.
    updated_at = CASE WHEN o.final_score = EXCLUDED.final_score AND o.source = EXCLUDED.source
                      THEN o.updated_at ELSE now() END,
    recorded_as_of = EXCLUDED.recorded_as_of,
    log_offset = EXCLUDED.log_offset
WHERE (EXCLUDED.recorded_as_of, EXCLUDED.log_offset)
    > (COALESCE(o.recorded_as_of, '-infinity'), COALESCE(o.log_offset, -1));
{_NOTE_IMPORTED};

INSERT INTO predictions (prediction_id, student_id, student_profile_id, academic_record_id,
                         model_version, predicted_final_score, pass_probability,
                         predicted_pass, pass_mark, imputed_fields, predicted_at,
                         event_schema_version, trace_id, term, explanation,
                         score_interval_low, score_interval_high, interval_coverage)
SELECT prediction_id, student_id, student_profile_id, academic_record_id, model_version,
       predicted_final_score, pass_probability, predicted_pass, pass_mark, imputed_fields,
       predicted_at, event_schema_version, trace_id, term, explanation,
       score_interval_low, score_interval_high, interval_coverage
FROM {STAGING_TABLE} WHERE prediction_id IS NOT NULL
ON CONFLICT (prediction_id) DO NOTHING;
"""


class DatabaseUnusable(RuntimeError):
    """The database refuses even an empty batch (a missing table, a revoked privilege): the
    fault is the database's, not any record's, so the batch waits for it like an outage."""


@dataclass(frozen=True, slots=True)
class Refusal:
    index: int  # the row's place in the written sequence
    error: str  # the rule it broke (see `describe`), never its values
    attempts: int  # transactions that included it
    reason: Reason = Reason.CONSTRAINT_VIOLATION


@dataclass(slots=True)
class WriteResult:
    stored: int = 0  # predictions newly written
    already_stored: int = 0  # predictions that were there before: a re-delivery
    refused: list[Refusal] = field(default_factory=list)  # rows the database refused, and why
    transactions: int = 0
    # Events skipped as of an erased student (recorder_service/erasure.py), and the erasures
    # this write applied.
    erased: int = 0
    erasures: list[Applied] = field(default_factory=list)

    def add(self, other: WriteResult) -> None:
        self.stored += other.stored
        self.already_stored += other.already_stored
        self.refused += other.refused
        self.transactions += other.transactions
        self.erased += other.erased
        self.erasures += other.erasures


def is_transient(error: BaseException) -> bool:
    """Whether waiting and trying again may succeed: the database is away, or the transaction
    lost a serialization failure or deadlock (SQLSTATE class 40); not the data bad."""
    if isinstance(error, asyncpg.PostgresError) and str(error.sqlstate).startswith("40"):
        return True
    return database_unavailable(error)


def refusal_reason(error: BaseException) -> Reason:
    """Why a row that fails on its own is refused: the reason of its dead letter."""
    if isinstance(error, asyncpg.PostgresError):
        sqlstate = str(error.sqlstate)
        if sqlstate.startswith("23"):  # integrity: CHECK, NOT NULL, foreign key
            return Reason.CONSTRAINT_VIOLATION
        if sqlstate[:2] in {"22", "54"}:  # data exception; program limit (a row too large)
            return Reason.INVALID_DATA
        return Reason.UNEXPECTED_ERROR
    # What asyncpg's encoders raise for a value its column cannot hold, before sending it: an
    # int out of the column's range (OverflowError), a bad uuid or text (ValueError).
    if isinstance(error, (ValueError, TypeError, OverflowError)):
        return Reason.INVALID_DATA
    return Reason.UNEXPECTED_ERROR


def describe(error: BaseException) -> str:
    """The error as logs and dead-letter headers may show it: its class and the rule it names
    (SQLSTATE, constraint, table, column), never the values of the row it is about."""
    parts = [type(error).__name__]
    if isinstance(error, asyncpg.PostgresError):
        parts.append(f"sqlstate {error.sqlstate}")
        for label, attribute in (
            ("constraint", "constraint_name"),
            ("table", "table_name"),
            ("column", "column_name"),
        ):
            name = getattr(error, attribute, None)
            if name:
                parts.append(f"{label} {name}")
    elif is_transient(error):
        return f"{type(error).__name__}: {error}"  # about the connection, not the data
    return ", ".join(parts)


async def _write_once(conn: asyncpg.Connection, rows: Sequence[StagingRow]) -> int:
    async with conn.transaction():
        await conn.execute(_CREATE_STAGING)
        await conn.copy_records_to_table(STAGING_TABLE, records=rows, columns=STAGING_COLUMNS)
        status: str = await conn.execute(_SPREAD)
    return int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <rows>"


async def _write_splitting(
    conn: asyncpg.Connection, rows: Sequence[StagingRow], first: int, attempts: int
) -> WriteResult:
    try:
        stored = await _write_once(conn, rows)
    except Exception as error:
        if is_transient(error):
            raise
        if refusal_reason(error) is Reason.UNEXPECTED_ERROR:
            await _check_usable(conn)
        if len(rows) == 1:
            refusal = Refusal(first, describe(error), attempts, refusal_reason(error))
            return WriteResult(refused=[refusal], transactions=1)
        log.info("batch of %d refused (%s); splitting it", len(rows), describe(error))
        result = WriteResult(transactions=1)
        half = len(rows) // 2
        result.add(await _write_splitting(conn, rows[:half], first, attempts + 1))
        result.add(await _write_splitting(conn, rows[half:], first + half, attempts + 1))
        return result
    predictions = sum(1 for row in rows if row[1] is not None)  # row[1]: prediction_id
    return WriteResult(stored, predictions - stored, transactions=1)


async def _check_usable(conn: asyncpg.Connection) -> None:
    """Raises DatabaseUnusable when an empty batch fails too: then the error that led here
    was the database's, and no row may be dead-lettered for it."""
    try:
        await _write_once(conn, ())
    except Exception as error:
        if is_transient(error):
            raise
        raise DatabaseUnusable(describe(error)) from error


class PostgresStore:
    """Writes staging rows through a connection pool; `erasure_key` names erased students in
    the `erasures` table (recorder_service/erasure.py)."""

    def __init__(self, pool: asyncpg.Pool, *, erasure_key: bytes = DEV_ERASURE_KEY) -> None:
        self._pool = pool
        self._erasure_key = erasure_key
        self._hasher = StudentHasher(erasure_key)

    async def write(
        self, rows: Sequence[StagingRow], erasures: Sequence[Erasure] = ()
    ) -> WriteResult:
        """Applies the batch's erasures (one transaction), then writes the rows, but those of
        erased students that occurred at or before their erasure, each batch in one
        transaction; rows refused on their own (as data, or by any error only they cause) are
        reported by index, and every other row is written.

        Transient errors (see `is_transient`) and DatabaseUnusable propagate: what was
        committed before them is committed for good, and writing the rows again adds nothing
        (an erasure is applied once, by its event id), so the caller retries.
        """
        if not rows and not erasures:
            return WriteResult()
        async with self._pool.acquire() as conn:
            try:
                applied = (
                    await apply_erasures(conn, erasures, self._erasure_key) if erasures else []
                )
                erased = await erased_as_of(conn, students_of(rows), self._hasher)
            except Exception as error:
                # No record is at fault: an erasure event that reached here breaks no rule the
                # table checks (envelope.decode_erasure checked them), and a lookup reads only.
                if is_transient(error):
                    raise
                raise DatabaseUnusable(describe(error)) from error
            keep = unerased(rows, erased, erasures)
            result = WriteResult(erased=len(rows) - len(keep), erasures=applied)
            if len(keep) < len(rows):
                kept = [rows[i] for i in keep]
                written = await _write_splitting(conn, kept, 0, 1) if kept else WriteResult()
                # Refusals name rows by their place in what was given.
                written.refused = [replace(r, index=keep[r.index]) for r in written.refused]
            else:
                written = await _write_splitting(conn, rows, 0, 1) if rows else WriteResult()
            result.add(written)
            return result


# Retention (recorder_service/retention.py). Each batch is one short transaction under the
# role that may delete (migration 0007); its statements run one after another, each seeing
# what the ones before it deleted, which one statement of data-modifying CTEs would not.
RETENTION_ROLE = "studentperf_retention"

# The oldest first, by predictions_predicted_at_idx, then each by its primary key: a batch
# touches only the rows it deletes. (With `IN (SELECT ...)` the planner may hash-join against
# a scan of the whole table; `= ANY(ARRAY(...))` is an index condition.)
_REMOVE_PREDICTIONS = """
DELETE FROM predictions
WHERE prediction_id = ANY(ARRAY(
    SELECT prediction_id FROM predictions
    WHERE predicted_at < $1
    ORDER BY predicted_at
    LIMIT $2))
RETURNING student_id, student_profile_id, academic_record_id
"""

# Of the profiles and records the batch's predictions used, those no prediction uses any more.
_REMOVE_PROFILES = """
DELETE FROM student_profiles sp
WHERE sp.student_profile_id = ANY($1::uuid[])
  AND NOT EXISTS (SELECT FROM predictions p WHERE p.student_profile_id = sp.student_profile_id)
"""

_REMOVE_RECORDS = """
DELETE FROM academic_records ar
WHERE ar.academic_record_id = ANY($1::uuid[])
  AND NOT EXISTS (SELECT FROM predictions p WHERE p.academic_record_id = ar.academic_record_id)
"""

# A student's current facts go only when nothing refers to the student any more and none of
# the facts was given since the cutoff: a student with outcomes, or newer predictions, stays.
_REMOVE_STUDENTS = """
DELETE FROM students s
WHERE s.student_id = ANY($1::text[])
  AND s.profile_as_of < $2
  AND NOT EXISTS (SELECT FROM predictions p WHERE p.student_id = s.student_id)
  AND NOT EXISTS (SELECT FROM student_profiles sp WHERE sp.student_id = s.student_id)
  AND NOT EXISTS (SELECT FROM academic_records ar WHERE ar.student_id = s.student_id)
  AND NOT EXISTS (SELECT FROM outcomes o WHERE o.student_id = s.student_id)
"""


@dataclass(slots=True)
class Removed:
    """Rows one retention run deleted, by table."""

    predictions: int = 0
    student_profiles: int = 0
    academic_records: int = 0
    students: int = 0

    def add(self, other: Removed) -> None:
        self.predictions += other.predictions
        self.student_profiles += other.student_profiles
        self.academic_records += other.academic_records
        self.students += other.students


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])  # "DELETE <rows>"


async def remove_batch(conn: asyncpg.Connection, cutoff: datetime, limit: int) -> Removed:
    """Deletes at most `limit` predictions made before `cutoff`, the oldest first, and what
    only they referred to, in one transaction."""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL ROLE {RETENTION_ROLE}")
        gone = await conn.fetch(_REMOVE_PREDICTIONS, cutoff, limit)
        if not gone:
            return Removed()
        profiles = list({r["student_profile_id"] for r in gone})
        records = list({r["academic_record_id"] for r in gone})
        students = list({r["student_id"] for r in gone})
        return Removed(
            predictions=len(gone),
            student_profiles=_count(await conn.execute(_REMOVE_PROFILES, profiles)),
            academic_records=_count(await conn.execute(_REMOVE_RECORDS, records)),
            students=_count(await conn.execute(_REMOVE_STUDENTS, students, cutoff)),
        )
