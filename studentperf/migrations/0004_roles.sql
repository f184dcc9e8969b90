-- Least privilege: one login role per process, granted what that process's SQL does and
-- nothing more, and a read-only role for analysts. Only the role that runs the migrations (the
-- database owner) does DDL; nobody deletes. studentperf/config.py (DatabaseRole) names the
-- same roles, and tests/integration/test_privileges.py checks what each may and may not do.
--
-- Roles belong to the whole cluster, grants to one database. Several databases of a cluster
-- can be migrated at once (the tests do), so a role is created only when missing, and a
-- concurrent creator winning the race is not an error. No passwords here: the operator sets
-- them (ALTER ROLE ... PASSWORD, see the README); the dev stack trusts local connections.
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['studentperf_recorder', 'studentperf_inference',
                                     'studentperf_trainer', 'studentperf_importer',
                                     'studentperf_analyst']
    LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I LOGIN', role_name);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created meanwhile by another database's migration
            END;
        END IF;
    END LOOP;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO studentperf_recorder, studentperf_inference,'
                   ' studentperf_trainer, studentperf_importer, studentperf_analyst',
                   current_database());
    -- Temporary tables only for the recorder's staging table (recorder_service/store.py).
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO studentperf_recorder', current_database());
END
$$;

-- PostgreSQL before 15 let everyone create tables in `public`; from 15 on this changes nothing.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO studentperf_recorder, studentperf_inference,
    studentperf_trainer, studentperf_importer, studentperf_analyst;

-- Every process may check that its schema is current (studentperf/migrate.py) without DDL.
GRANT SELECT ON schema_migrations TO studentperf_recorder, studentperf_inference,
    studentperf_trainer, studentperf_importer, studentperf_analyst;

-- The recorder (recorder_service/store.py): inserts what each event brings, skipping rows
-- already there (ON CONFLICT reads the key); students are upserted, keeping the newest profile
-- (which reads the stored row and the proposed one, so SELECT on the whole table).
GRANT INSERT, SELECT (model_version) ON model_versions TO studentperf_recorder;
GRANT INSERT, SELECT (student_profile_id) ON student_profiles TO studentperf_recorder;
GRANT INSERT, SELECT (academic_record_id) ON academic_records TO studentperf_recorder;
GRANT INSERT, SELECT (prediction_id) ON predictions TO studentperf_recorder;
GRANT SELECT, INSERT,
    UPDATE (age, gender, parental_education, lunch_program, test_preparation, profile_as_of)
    ON students TO studentperf_recorder;

-- The inference service's RecordOutcomes (studentperf/outcomes.py store_outcomes): adds a bare
-- student when unknown, upserts outcomes. It cannot read or write a profile or a prediction.
GRANT SELECT (student_id), INSERT (student_id, profile_as_of) ON students TO studentperf_inference;
GRANT SELECT, INSERT, UPDATE (final_score, source, updated_at) ON outcomes
    TO studentperf_inference;

-- The trainer: reads its training rows (trainer/db_source.py), and, as `make monitor`, the
-- recorded predictions (trainer/monitor/data.py); upserts its versions' model_versions rows
-- (trainer/registry.py).
GRANT SELECT ON students, academic_records, outcomes, student_profiles, predictions,
    model_versions TO studentperf_trainer;
GRANT INSERT, UPDATE ON model_versions TO studentperf_trainer;

-- `make import` (trainer/import_csv.py): upserts students with their profiles, and outcomes,
-- the same way (studentperf/outcomes.py).
GRANT SELECT, INSERT,
    UPDATE (age, gender, parental_education, lunch_program, test_preparation, profile_as_of)
    ON students TO studentperf_importer;
GRANT SELECT, INSERT, UPDATE (final_score, source, updated_at) ON outcomes
    TO studentperf_importer;

-- Analysts read everything, including tables later migrations add (created by this owner).
GRANT SELECT ON ALL TABLES IN SCHEMA public TO studentperf_analyst;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO studentperf_analyst;
