-- A stored version never changes (0021), and that includes gaining a file: inserts stayed open
-- to the trainer's role and the owner, so a file of a name the version lacked (a
-- reference_inputs.csv for a version from before them, the files of a version stored empty)
-- could be added later, and replicas would then hold different versions under one name: one
-- that downloaded it before has the old set (a version folder that exists is trusted as
-- complete), one that downloads it after the new one. A version's files are inserted in the
-- transaction that stores the version (studentperf/model_store.py, store_version), at the top
-- level: a file whose version row was not inserted by the current transaction is refused.
CREATE FUNCTION files_only_with_their_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM model_artifacts
        WHERE model_version = NEW.model_version AND xmin = pg_current_xact_id()::xid
    ) THEN
        RAISE EXCEPTION 'model version % is stored already: a stored version gains no file (% refused)',
            NEW.model_version, NEW.file_name;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER model_artifact_files_only_with_their_version
    BEFORE INSERT ON model_artifact_files
    FOR EACH ROW EXECUTE FUNCTION files_only_with_their_version();
