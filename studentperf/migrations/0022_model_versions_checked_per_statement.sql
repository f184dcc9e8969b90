-- The recorder's throughput (issue 17): a recorded prediction's model version is checked once
-- per statement instead of once per row.
--
-- predictions_model_version_fkey checked every prediction on its own, and took the one
-- model_versions row of the version in use FOR KEY SHARE each time: every event of every shard
-- (and every recorder) locked the same row, and two transactions holding it at once turn each
-- further lock into a MultiXact lookup. The same guarantee, cheaper: a statement that inserts
-- predictions (or changes their version) fails when any of them names a version model_versions
-- does not hold, with the error the foreign key raised (SQLSTATE 23503, the constraint's name);
-- and a model_versions row, once there, is never removed and its name never changes (the
-- foreign key's other half, which also needed the lock: nothing can remove it meanwhile).
ALTER TABLE predictions DROP CONSTRAINT predictions_model_version_fkey;

-- model_versions is named with the schema of the table the trigger is on, as the foreign key
-- named it by its oid: unqualified, the inserting session's temporary table of that name (the
-- recorder may create temporary tables) would be looked up first.
CREATE FUNCTION predictions_name_known_versions() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    unknown boolean;
BEGIN
    EXECUTE format(
        'SELECT EXISTS (SELECT FROM changed_predictions p WHERE NOT EXISTS ('
        'SELECT FROM %I.model_versions v WHERE v.model_version = p.model_version))',
        TG_TABLE_SCHEMA
    ) INTO unknown;
    IF unknown THEN
        RAISE EXCEPTION 'a prediction names a model version that model_versions does not hold'
            USING ERRCODE = 'foreign_key_violation', TABLE = 'predictions',
                  COLUMN = 'model_version', CONSTRAINT = 'predictions_model_version_fkey';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER predictions_model_version_known_on_insert
    AFTER INSERT ON predictions REFERENCING NEW TABLE AS changed_predictions
    FOR EACH STATEMENT EXECUTE FUNCTION predictions_name_known_versions();
CREATE TRIGGER predictions_model_version_known_on_update
    AFTER UPDATE ON predictions REFERENCING NEW TABLE AS changed_predictions
    FOR EACH STATEMENT EXECUTE FUNCTION predictions_name_known_versions();

CREATE FUNCTION model_versions_stay() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a model_versions row is never removed and its name never changes (% refused)',
        TG_OP USING ERRCODE = 'foreign_key_violation', TABLE = 'model_versions',
        CONSTRAINT = 'predictions_model_version_fkey';
END
$$;

CREATE TRIGGER model_versions_never_removed
    BEFORE DELETE ON model_versions
    FOR EACH ROW EXECUTE FUNCTION model_versions_stay();
CREATE TRIGGER model_versions_never_renamed
    BEFORE UPDATE OF model_version ON model_versions
    FOR EACH ROW WHEN (NEW.model_version IS DISTINCT FROM OLD.model_version)
    EXECUTE FUNCTION model_versions_stay();
CREATE TRIGGER model_versions_never_truncated
    BEFORE TRUNCATE ON model_versions
    FOR EACH STATEMENT EXECUTE FUNCTION model_versions_stay();
