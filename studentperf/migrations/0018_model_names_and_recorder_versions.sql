-- Review findings on the model's way to the replicas (issue 17).
--
-- A version may not be named `current`: that is the name of the link every models folder keeps
-- to the version it serves, so a version of that name would make each replica's link point at
-- itself (studentperf/model_store.py refuses the name too).
ALTER TABLE model_artifacts
    DROP CONSTRAINT model_artifacts_model_version_check,
    ADD CONSTRAINT model_artifacts_model_version_check
        CHECK (model_version ~ '^[0-9A-Za-z][0-9A-Za-z._-]*$' AND model_version <> 'current');

-- The recorder adds a bare model_versions row for a version it meets in an event (0004 let it
-- insert any column). A row it inserted with a promoted_at of its choosing would be kept by the
-- trainer's later upsert and steer which version a rollback picks: it may now name the version
-- only.
REVOKE INSERT ON model_versions FROM studentperf_recorder;
GRANT INSERT (model_version) ON model_versions TO studentperf_recorder;
