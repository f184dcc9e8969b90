"""The recorder's batch: a temporary staging table, COPYed into, and one round trip that
spreads it into every table (recorder_service/store.py runs them).

Each statement is keyed so that writing the same events again changes nothing: predictions by
prediction id, profiles and academic records by their content-derived ids (DO NOTHING), each
student's current facts by the merge of student_facts, outcomes by the rule of outcomes, and
import events once by their id (imports).
"""

from __future__ import annotations

from typing import Final

from studentperf.persistence.imports import note_imported, skip_imported
from studentperf.persistence.outcomes import upsert_outcomes
from studentperf.persistence.student_facts import FACTS, merge_statement

STAGING_TABLE: Final = "recorder_batch"
# outcomes.source of an outcome recorded through RecordOutcomes (and so its event).
OUTCOME_SOURCE: Final = "rpc"

# Types are as wide as the event's: an out-of-range age is then refused by PostgreSQL as data
# (and dead-lettered), rather than by the driver's encoder. imputed_fields is NULL for a
# prediction that imputed nothing (recorder_service/rows.py), stored as '{}'.
CREATE_STAGING: Final = f"""
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
_GIVEN_FACTS: Final = (
    f"(SELECT student_id, {', '.join(FACTS)}, predicted_at AS given_at, log_offset\n"
    f"      FROM {STAGING_TABLE}) AS given"
)

# Outcome and import events (no prediction id); an outcome's time is its event's, when
# RecordOutcomes accepted it, not when the recorder got to it. The latest of a batch's outcomes
# of a student and term is the one offered, recorded as of the earliest of them.
_GIVEN_OUTCOMES: Final = f"""SELECT DISTINCT ON (student_id, term) student_id, term, final_score,
       COALESCE(outcome_source, '{OUTCOME_SOURCE}'),
       min(predicted_at) OVER (PARTITION BY student_id, term), predicted_at, log_offset
FROM {STAGING_TABLE} WHERE prediction_id IS NULL
ORDER BY student_id, term, predicted_at DESC, log_offset DESC"""

# One simple-protocol round trip; its status is the last statement's, the predictions insert.
# The shards of a batch (recorder_service/sharding.py) run it at once over disjoint students;
# model_versions is the one table they share, so its rows go in a fixed order: a shard may wait
# for another's new version to commit, never both for each other.
SPREAD: Final = f"""{skip_imported(STAGING_TABLE)};

INSERT INTO model_versions (model_version)
SELECT DISTINCT model_version FROM {STAGING_TABLE} WHERE prediction_id IS NOT NULL
ORDER BY model_version
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
{upsert_outcomes(_GIVEN_OUTCOMES)};
{note_imported(STAGING_TABLE)};

INSERT INTO predictions (prediction_id, student_id, student_profile_id, academic_record_id,
                         model_version, predicted_final_score, pass_probability,
                         predicted_pass, pass_mark, imputed_fields, predicted_at,
                         event_schema_version, trace_id, term, explanation,
                         score_interval_low, score_interval_high, interval_coverage)
SELECT prediction_id, student_id, student_profile_id, academic_record_id, model_version,
       predicted_final_score, pass_probability, predicted_pass, pass_mark,
       COALESCE(imputed_fields, '{{}}'),
       predicted_at, event_schema_version, trace_id, term, explanation,
       score_interval_low, score_interval_high, interval_coverage
FROM {STAGING_TABLE} WHERE prediction_id IS NOT NULL
ON CONFLICT (prediction_id) DO NOTHING;
"""
