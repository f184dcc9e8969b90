"""What the benchmarks (infra/bench) run against their own throw-away databases: the seeds of
a synthetic database of many students, its size, and the end-to-end benchmark's watch on the
predictions being recorded. No process of the service runs these.

The seeds are templates for `str.format` (sizes are numbers the benchmark chooses, never
input), split on ";\n" into statements by the caller.
"""

from __future__ import annotations

from typing import Final

# infra/bench/history.py: {students} students, {rows} predictions spread over them, every
# third with an explanation ($1).
HISTORY_SEED: Final = """
INSERT INTO model_versions (model_version) VALUES ('m');
INSERT INTO students (student_id, profile_as_of)
    SELECT 's' || i, now() FROM generate_series(0, {students} - 1) i;
INSERT INTO student_profiles (student_profile_id, student_id, age)
    SELECT md5('p' || i)::uuid, 's' || i, 15 FROM generate_series(0, {students} - 1) i;
INSERT INTO academic_records (academic_record_id, student_id, previous_gpa)
    SELECT md5('a' || i)::uuid, 's' || i, 3 FROM generate_series(0, {students} - 1) i;
INSERT INTO outcomes (student_id, term, final_score, source)
    SELECT 's' || i, '2026-spring', 60, 'bench' FROM generate_series(0, {students} - 1) i;
INSERT INTO predictions (prediction_id, student_id, student_profile_id, academic_record_id,
    model_version, predicted_final_score, pass_probability, predicted_pass, pass_mark,
    predicted_at, event_schema_version, term, explanation)
SELECT md5('x' || i)::uuid, 's' || (i % {students}), md5('p' || (i % {students}))::uuid,
       md5('a' || (i % {students}))::uuid, 'm', 60, 0.6, true, 50,
       timestamptz '2026-01-01' + (i / {students}) * interval '1 hour', 1, '2026-spring',
       CASE WHEN i % 3 = 0 THEN $1::bytea END
FROM generate_series(0, {rows} - 1) i;
ANALYZE;
"""

# infra/bench/erasure.py: {heavy} students of {per_student} predictions each, the rest
# ({rows} predictions) {others_per_student} per student; 100 academic records and 4 outcomes each.
ERASURE_SEED: Final = """
INSERT INTO model_versions (model_version) VALUES ('m');
INSERT INTO students (student_id, profile_as_of)
    SELECT 's' || i, now() FROM generate_series(0, {students} - 1) i;
INSERT INTO student_profiles (student_profile_id, student_id, age)
    SELECT md5('p' || i)::uuid, 's' || i, 15 FROM generate_series(0, {students} - 1) i;
INSERT INTO academic_records (academic_record_id, student_id, previous_gpa)
    SELECT md5('a' || i || '-' || r)::uuid, 's' || i, r / 25.0
    FROM generate_series(0, {students} - 1) i, generate_series(0, 99) r;
INSERT INTO outcomes (student_id, term, final_score, source)
    SELECT 's' || i, t, 60, 'bench'
    FROM generate_series(0, {students} - 1) i,
         unnest(ARRAY['2025-spring', '2025-fall', '2026-spring', '2026-fall']) t;
INSERT INTO predictions (prediction_id, student_id, student_profile_id, academic_record_id,
    model_version, predicted_final_score, pass_probability, predicted_pass, pass_mark,
    predicted_at, event_schema_version, term)
SELECT md5('x' || i)::uuid, 's' || s, md5('p' || s)::uuid,
       md5('a' || s || '-' || (i % 100))::uuid, 'm', 60, 0.6, true, 50,
       timestamptz '2026-01-01' + (i % 10000) * interval '1 minute', 1, '2026-spring'
FROM (SELECT i, CASE WHEN i < {heavy_rows} THEN i / {per_student}
                     ELSE {heavy} + (i - {heavy_rows}) / {others_per_student} END AS s
      FROM generate_series(0, {rows} + {heavy_rows} - 1) i) g;
ANALYZE;
"""

# "<size> (<n> rows)" of the predictions table.
PREDICTIONS_SIZE: Final = (
    "SELECT pg_size_pretty(pg_total_relation_size('predictions'))"
    " || ' (' || to_char(count(*), 'FM9,999,999,999') || ' rows)' FROM predictions"
)

# infra/bench/end_to_end.py: the predictions recorded since $1 (Unix time), with when each was
# predicted and recorded.
RECORDED_SINCE: Final = (
    "SELECT prediction_id::text AS id, extract(epoch FROM predicted_at) AS p, "
    "extract(epoch FROM recorded_at) AS r FROM predictions "
    "WHERE recorded_at > to_timestamp($1)"
)

COUNT_PREDICTIONS: Final = "SELECT count(*) FROM predictions"

# infra/bench/retention.py: {old} predictions in January 2025 and a fifth as many recent ones in
# {table}, two per profile and academic record ({shared} of each) over {students} students.
RETENTION_SEED: Final = """
INSERT INTO model_versions (model_version) VALUES ('m');
INSERT INTO students (student_id, profile_as_of)
    SELECT 's' || i, now() FROM generate_series(0, {students} - 1) i;
INSERT INTO student_profiles (student_profile_id, student_id, age)
    SELECT md5('p' || i)::uuid, 's' || (i % {students}), 15 FROM generate_series(0, {shared} - 1) i;
INSERT INTO academic_records (academic_record_id, student_id, previous_gpa)
    SELECT md5('a' || i)::uuid, 's' || (i % {students}), 3 FROM generate_series(0, {shared} - 1) i;
INSERT INTO {table} (prediction_id, student_id, student_profile_id, academic_record_id,
    model_version, predicted_final_score, pass_probability, predicted_pass, pass_mark,
    predicted_at, event_schema_version)
SELECT gen_random_uuid(), 's' || ((i / 2) % {students}), md5('p' || (i / 2))::uuid,
       md5('a' || (i / 2))::uuid, 'm', 60, 0.6, true, 50,
       CASE WHEN i < {old} THEN timestamptz '2025-01-01' + i * (interval '31 days' / {old})
            ELSE now() - (i % 1000) * interval '1 minute' END,
       1
FROM generate_series(0, {total} - 1) i;
ANALYZE;
"""

# The same predictions table partitioned by month: the old month, and everything after it. Its
# references are checked by the foreign keys predictions had before migration 0026 (which
# checks them per statement), with the unique index the one on the profile and its student
# refers to (migration 0027 dropped it), and the reverse lookups hashed as 0032 hashes them: the
# comparison is of deleting rows against dropping a month.
PARTITIONED_PREDICTIONS: Final = """
ALTER TABLE student_profiles ADD UNIQUE (student_profile_id, student_id);
CREATE TABLE predictions_by_month (LIKE predictions INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (predicted_at);
ALTER TABLE predictions_by_month ADD PRIMARY KEY (prediction_id, predicted_at),
    ADD FOREIGN KEY (student_profile_id, student_id)
        REFERENCES student_profiles (student_profile_id, student_id),
    ADD FOREIGN KEY (academic_record_id) REFERENCES academic_records,
    ADD FOREIGN KEY (model_version) REFERENCES model_versions;
CREATE INDEX ON predictions_by_month (student_id, predicted_at);
CREATE INDEX ON predictions_by_month (model_version, predicted_at);
CREATE INDEX ON predictions_by_month USING hash (academic_record_id);
CREATE INDEX ON predictions_by_month USING hash (student_profile_id);
CREATE TABLE predictions_2025_01 PARTITION OF predictions_by_month
    FOR VALUES FROM ('2025-01-01') TO ('2025-02-01');
CREATE TABLE predictions_recent PARTITION OF predictions_by_month
    FOR VALUES FROM ('2025-02-01') TO (MAXVALUE);
"""

# After the old month's partition is dropped: the profiles and records nothing refers to.
PARTITION_ORPHANS: Final = """
DELETE FROM student_profiles sp
WHERE NOT EXISTS (SELECT FROM predictions_by_month p
                  WHERE p.student_profile_id = sp.student_profile_id);
DELETE FROM academic_records ar
WHERE NOT EXISTS (SELECT FROM predictions_by_month p
                  WHERE p.academic_record_id = ar.academic_record_id);
"""

DETACH_OLD_MONTH: Final = "ALTER TABLE predictions_by_month DETACH PARTITION predictions_2025_01"
DROP_OLD_MONTH: Final = "DROP TABLE predictions_2025_01"
COUNT_PARTITIONED: Final = "SELECT count(*) FROM predictions_by_month"
