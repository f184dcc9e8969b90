-- A stored version never changes: the trainer only inserts (0015), and a replica checks each
-- file's bytes against the SHA-256 beside them in the same row, so a statement that rewrote
-- both (the owner's, or anyone's it was granted to) would hand every replica that downloads the
-- version a pickle the trainer never recorded, and unpickling is code execution. So the
-- artifact tables are append-only for everyone, owner included, as model_pointer_moves is
-- (0017): changing or removing a stored version takes a deliberate DDL step (dropping these
-- triggers), not a stray or forged statement. A clean-up of old versions, when one comes,
-- takes that step in its own migration.
CREATE FUNCTION stored_versions_never_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: a stored model version never changes (% refused)',
        TG_TABLE_NAME, TG_OP;
END
$$;

CREATE TRIGGER model_artifacts_no_update_or_delete
    BEFORE UPDATE OR DELETE ON model_artifacts
    FOR EACH ROW EXECUTE FUNCTION stored_versions_never_change();
CREATE TRIGGER model_artifacts_no_truncate
    BEFORE TRUNCATE ON model_artifacts
    FOR EACH STATEMENT EXECUTE FUNCTION stored_versions_never_change();
CREATE TRIGGER model_artifact_files_no_update_or_delete
    BEFORE UPDATE OR DELETE ON model_artifact_files
    FOR EACH ROW EXECUTE FUNCTION stored_versions_never_change();
CREATE TRIGGER model_artifact_files_no_truncate
    BEFORE TRUNCATE ON model_artifact_files
    FOR EACH STATEMENT EXECUTE FUNCTION stored_versions_never_change();
