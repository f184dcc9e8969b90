-- The recorder's throughput (issue 17): the four foreign keys a recorded prediction's rows
-- check are checked once per statement instead of once per row, as 0022 did for its model
-- version. Each checked and locked one parent per inserted row, by a query of its own: about
-- 20 us of the database's 66 us of CPU per recorded event, the largest share left.
--
-- The same guarantees, set by set:
-- - a statement that inserts profiles, academic records or predictions fails unless it could
--   lock FOR KEY SHARE every parent its rows name, with the error the foreign key raised
--   (SQLSTATE 23503, the constraint's name), which the recorder's store handles as before (it
--   retries, then splits the batch and dead-letters the row); the locks last until commit, as
--   the foreign key's did: a concurrent delete of one waits, and then fails (below), or it came
--   first and the insert fails;
-- - a statement that deletes students, profiles or academic records fails when a row still
--   refers to one of them, seen with a snapshot taken after its delete (a reference committed
--   meanwhile is seen), which holds only under READ COMMITTED: any other isolation is refused
--   for such a delete (the recorder's erasure and retention run under READ COMMITTED);
-- - TRUNCATE of a parent fails while a row of the table that refers to it is left (and under
--   any isolation but READ COMMITTED, for the same reason as a delete);
-- - the columns that refer, and the keys referred to, never change (the foreign keys allowed
--   a change that kept the reference; nothing changes them: the ids are content-derived).
-- Tables are named with the schema of the table the trigger is on, as the foreign keys named
-- them by oid: unqualified, a session's temporary table of the name would be looked up first.
-- The checks run with their owner's rights, as a foreign key's did: the roles that write these
-- tables may read only some of their columns (0004, 0007, 0010).

ALTER TABLE student_profiles DROP CONSTRAINT student_profiles_student_id_fkey;
ALTER TABLE academic_records DROP CONSTRAINT academic_records_student_id_fkey;
ALTER TABLE predictions
    DROP CONSTRAINT predictions_student_profile_id_student_id_fkey,
    DROP CONSTRAINT predictions_academic_record_id_fkey;

-- AFTER INSERT, FOR EACH STATEMENT, REFERENCING NEW TABLE AS inserted_rows.
-- TG_ARGV: the constraint's name, the referring columns, the parent table, its key columns
-- (column lists comma-separated, in the same order).
CREATE FUNCTION recorded_rows_have_parents() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    constraint_name text := TG_ARGV[0];
    columns text[] := string_to_array(TG_ARGV[1], ',');
    parent text := TG_ARGV[2];
    keys text[] := string_to_array(TG_ARGV[3], ',');
    listed text := (SELECT string_agg(format('n.%I', col), ', ') FROM unnest(columns) AS col);
    matched text := (
        SELECT string_agg(format('p.%I = n.%I', key, col), ' AND ')
        FROM unnest(keys, columns) AS pair (key, col)
    );
    named bigint;
    locked bigint;
BEGIN
    -- One statement locks the parents and counts those it locked: a parent passes only when
    -- this statement holds its lock (a parent missing from its snapshot, or whose delete
    -- committed while the lock waited, is not counted). Parent keys are unique: each named
    -- key locks at most one row. Locked in key order, as retention deletes them.
    EXECUTE format(
        'SELECT (SELECT count(*) FROM (SELECT DISTINCT %1$s FROM inserted_rows n) d), '
        '(SELECT count(*) FROM (SELECT FROM (SELECT DISTINCT %1$s FROM inserted_rows n) n '
        'JOIN %2$I.%3$I p ON %4$s ORDER BY %1$s FOR KEY SHARE OF p) l)',
        listed, TG_TABLE_SCHEMA, parent, matched
    ) INTO named, locked;
    IF locked < named THEN
        RAISE EXCEPTION 'a row of % refers to a row that % does not hold', TG_TABLE_NAME, parent
            USING ERRCODE = 'foreign_key_violation', TABLE = TG_TABLE_NAME,
                  CONSTRAINT = constraint_name;
    END IF;
    RETURN NULL;
END
$$;

-- AFTER DELETE, FOR EACH STATEMENT, REFERENCING OLD TABLE AS deleted_rows.
-- TG_ARGV: the constraint's name, the referring table, its referring columns, this table's
-- key columns.
CREATE FUNCTION recorded_rows_keep_their_parents() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    constraint_name text := TG_ARGV[0];
    child text := TG_ARGV[1];
    columns text[] := string_to_array(TG_ARGV[2], ',');
    keys text[] := string_to_array(TG_ARGV[3], ',');
    matched text := (
        SELECT string_agg(format('c.%I = o.%I', col, key), ' AND ')
        FROM unnest(columns, keys) AS pair (col, key)
    );
    referred boolean;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'rows of % are deleted under READ COMMITTED only (%), where a row '
            'referring to them committed meanwhile is seen', TG_TABLE_NAME,
            current_setting('transaction_isolation')
            USING ERRCODE = 'feature_not_supported', TABLE = TG_TABLE_NAME,
                  CONSTRAINT = constraint_name;
    END IF;
    EXECUTE format(
        'SELECT EXISTS (SELECT FROM deleted_rows o WHERE EXISTS '
        '(SELECT FROM %I.%I c WHERE %s))',
        TG_TABLE_SCHEMA, child, matched
    ) INTO referred;
    IF referred THEN
        RAISE EXCEPTION 'a deleted row of % is still referred to by %', TG_TABLE_NAME, child
            USING ERRCODE = 'foreign_key_violation', TABLE = child,
                  CONSTRAINT = constraint_name;
    END IF;
    RETURN NULL;
END
$$;

-- AFTER TRUNCATE, FOR EACH STATEMENT (after every table of the statement is emptied).
-- TG_ARGV: the constraint's name, the referring table.
CREATE FUNCTION recorded_rows_truncate_with_their_children() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    referred boolean;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION '% is truncated under READ COMMITTED only (%), where a row referring '
            'to it committed meanwhile is seen', TG_TABLE_NAME,
            current_setting('transaction_isolation')
            USING ERRCODE = 'feature_not_supported', TABLE = TG_TABLE_NAME,
                  CONSTRAINT = TG_ARGV[0];
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT FROM %I.%I)', TG_TABLE_SCHEMA, TG_ARGV[1])
        INTO referred;
    IF referred THEN
        RAISE EXCEPTION 'cannot truncate % while % has rows: truncate both', TG_TABLE_NAME,
            TG_ARGV[1]
            USING ERRCODE = 'foreign_key_violation', TABLE = TG_ARGV[1],
                  CONSTRAINT = TG_ARGV[0];
    END IF;
    RETURN NULL;
END
$$;

-- They run as their owner: nobody else may make a trigger of them (on a temporary table of
-- their own, say, with arguments naming a view of their own).
REVOKE EXECUTE ON FUNCTION recorded_rows_have_parents(), recorded_rows_keep_their_parents(),
    recorded_rows_truncate_with_their_children() FROM PUBLIC;

-- BEFORE UPDATE OF the columns, FOR EACH ROW, WHEN they change. TG_ARGV: the constraint's name.
CREATE FUNCTION recorded_rows_references_stay() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the columns of % that % checks never change', TG_TABLE_NAME, TG_ARGV[0]
        USING ERRCODE = 'foreign_key_violation', TABLE = TG_TABLE_NAME, CONSTRAINT = TG_ARGV[0];
END
$$;

-- student_profiles (student_id) -> students (student_id)
CREATE TRIGGER student_profiles_student_id_fkey_insert
    AFTER INSERT ON student_profiles REFERENCING NEW TABLE AS inserted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION recorded_rows_have_parents(
        'student_profiles_student_id_fkey', 'student_id', 'students', 'student_id');
CREATE TRIGGER student_profiles_student_id_fkey_delete
    AFTER DELETE ON students REFERENCING OLD TABLE AS deleted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION recorded_rows_keep_their_parents(
        'student_profiles_student_id_fkey', 'student_profiles', 'student_id', 'student_id');
CREATE TRIGGER student_profiles_student_id_fkey_truncate
    AFTER TRUNCATE ON students
    FOR EACH STATEMENT EXECUTE FUNCTION recorded_rows_truncate_with_their_children(
        'student_profiles_student_id_fkey', 'student_profiles');
CREATE TRIGGER student_profiles_student_id_fkey_update
    BEFORE UPDATE OF student_id ON student_profiles
    FOR EACH ROW WHEN (NEW.student_id IS DISTINCT FROM OLD.student_id)
    EXECUTE FUNCTION recorded_rows_references_stay('student_profiles_student_id_fkey');

-- academic_records (student_id) -> students (student_id)
CREATE TRIGGER academic_records_student_id_fkey_insert
    AFTER INSERT ON academic_records REFERENCING NEW TABLE AS inserted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION recorded_rows_have_parents(
        'academic_records_student_id_fkey', 'student_id', 'students', 'student_id');
CREATE TRIGGER academic_records_student_id_fkey_delete
    AFTER DELETE ON students REFERENCING OLD TABLE AS deleted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION recorded_rows_keep_their_parents(
        'academic_records_student_id_fkey', 'academic_records', 'student_id', 'student_id');
CREATE TRIGGER academic_records_student_id_fkey_truncate
    AFTER TRUNCATE ON students
    FOR EACH STATEMENT EXECUTE FUNCTION recorded_rows_truncate_with_their_children(
        'academic_records_student_id_fkey', 'academic_records');
CREATE TRIGGER academic_records_student_id_fkey_update
    BEFORE UPDATE OF student_id ON academic_records
    FOR EACH ROW WHEN (NEW.student_id IS DISTINCT FROM OLD.student_id)
    EXECUTE FUNCTION recorded_rows_references_stay('academic_records_student_id_fkey');

-- predictions (student_profile_id, student_id) -> student_profiles (the same)
CREATE TRIGGER predictions_student_profile_id_student_id_fkey_insert
    AFTER INSERT ON predictions REFERENCING NEW TABLE AS inserted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION recorded_rows_have_parents(
        'predictions_student_profile_id_student_id_fkey', 'student_profile_id,student_id',
        'student_profiles', 'student_profile_id,student_id');
CREATE TRIGGER predictions_student_profile_id_student_id_fkey_delete
    AFTER DELETE ON student_profiles REFERENCING OLD TABLE AS deleted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION recorded_rows_keep_their_parents(
        'predictions_student_profile_id_student_id_fkey', 'predictions',
        'student_profile_id,student_id', 'student_profile_id,student_id');
CREATE TRIGGER predictions_student_profile_id_student_id_fkey_truncate
    AFTER TRUNCATE ON student_profiles
    FOR EACH STATEMENT EXECUTE FUNCTION recorded_rows_truncate_with_their_children(
        'predictions_student_profile_id_student_id_fkey', 'predictions');
CREATE TRIGGER predictions_student_profile_id_student_id_fkey_update
    BEFORE UPDATE OF student_profile_id, student_id ON predictions
    FOR EACH ROW WHEN ((NEW.student_profile_id, NEW.student_id)
                       IS DISTINCT FROM (OLD.student_profile_id, OLD.student_id))
    EXECUTE FUNCTION recorded_rows_references_stay(
        'predictions_student_profile_id_student_id_fkey');
CREATE TRIGGER student_profiles_keys_stay
    BEFORE UPDATE OF student_profile_id, student_id ON student_profiles
    FOR EACH ROW WHEN ((NEW.student_profile_id, NEW.student_id)
                       IS DISTINCT FROM (OLD.student_profile_id, OLD.student_id))
    EXECUTE FUNCTION recorded_rows_references_stay(
        'predictions_student_profile_id_student_id_fkey');

-- predictions (academic_record_id) -> academic_records (academic_record_id)
CREATE TRIGGER predictions_academic_record_id_fkey_insert
    AFTER INSERT ON predictions REFERENCING NEW TABLE AS inserted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION recorded_rows_have_parents(
        'predictions_academic_record_id_fkey', 'academic_record_id', 'academic_records',
        'academic_record_id');
CREATE TRIGGER predictions_academic_record_id_fkey_delete
    AFTER DELETE ON academic_records REFERENCING OLD TABLE AS deleted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION recorded_rows_keep_their_parents(
        'predictions_academic_record_id_fkey', 'predictions', 'academic_record_id',
        'academic_record_id');
CREATE TRIGGER predictions_academic_record_id_fkey_truncate
    AFTER TRUNCATE ON academic_records
    FOR EACH STATEMENT EXECUTE FUNCTION recorded_rows_truncate_with_their_children(
        'predictions_academic_record_id_fkey', 'predictions');
CREATE TRIGGER predictions_academic_record_id_fkey_update
    BEFORE UPDATE OF academic_record_id ON predictions
    FOR EACH ROW WHEN (NEW.academic_record_id IS DISTINCT FROM OLD.academic_record_id)
    EXECUTE FUNCTION recorded_rows_references_stay('predictions_academic_record_id_fkey');
CREATE TRIGGER academic_records_keys_stay
    BEFORE UPDATE OF academic_record_id ON academic_records
    FOR EACH ROW WHEN (NEW.academic_record_id IS DISTINCT FROM OLD.academic_record_id)
    EXECUTE FUNCTION recorded_rows_references_stay('predictions_academic_record_id_fkey');
CREATE TRIGGER students_keys_stay
    BEFORE UPDATE OF student_id ON students
    FOR EACH ROW WHEN (NEW.student_id IS DISTINCT FROM OLD.student_id)
    EXECUTE FUNCTION recorded_rows_references_stay('student_profiles_student_id_fkey');
