-- Retention (recorder_service/retention.py): predictions older than STUDENTPERF_RETENTION_DAYS
-- are deleted in small batches by predicted_at, with the profiles, academic records and bare
-- students nothing references any more. docs/recorder.md ("Retention") has the measurements
-- that chose batched deletes over monthly partitions.

-- The access path by time: the retention job's batches, and `make monitor --since`.
-- IF NOT EXISTS: on a large table, build it beforehand without blocking the recorder
-- (CREATE INDEX CONCURRENTLY predictions_predicted_at_idx ON predictions (predicted_at)).
CREATE INDEX IF NOT EXISTS predictions_predicted_at_idx ON predictions (predicted_at);

-- The one role that may delete, granted what retention deletes and nothing more. It cannot
-- log in: the recorder (and `make retention`, which runs the same code) takes it with
-- SET LOCAL ROLE inside each retention transaction only. The recorder does not inherit it
-- (NOINHERIT), so its ordinary writes still cannot delete anything.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'studentperf_retention') THEN
        BEGIN
            CREATE ROLE studentperf_retention NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created meanwhile by another database's migration
        END;
    END IF;
END
$$;
-- Roles belong to the cluster: changed only when not yet so, as 0004 creates them.
DO $$
BEGIN
    IF (SELECT rolinherit FROM pg_roles WHERE rolname = 'studentperf_recorder') THEN
        ALTER ROLE studentperf_recorder NOINHERIT;
    END IF;
    IF NOT pg_has_role('studentperf_recorder', 'studentperf_retention', 'MEMBER') THEN
        GRANT studentperf_retention TO studentperf_recorder;
    END IF;
END
$$;

-- A DELETE reads the columns its WHERE and RETURNING name; NOT EXISTS reads the referencing
-- columns. Nothing else of these tables, and no UPDATE or INSERT.
GRANT SELECT (prediction_id, predicted_at, student_id, student_profile_id, academic_record_id),
    DELETE ON predictions TO studentperf_retention;
GRANT SELECT (student_profile_id, student_id), DELETE ON student_profiles TO studentperf_retention;
GRANT SELECT (academic_record_id, student_id), DELETE ON academic_records TO studentperf_retention;
GRANT SELECT (student_id, profile_as_of), DELETE ON students TO studentperf_retention;
GRANT SELECT (student_id) ON outcomes TO studentperf_retention;
