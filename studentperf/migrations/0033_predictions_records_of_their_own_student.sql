-- Student records that are correct: a prediction's academic record is its own student's, as its
-- profile already is (0016). 0026's check of the record compared the id only, so a row written
-- past the recorder (the owner's, or the recorder's credentials used by hand) could name another
-- student's record: that student's erasure would then be refused for a row it does not own, and
-- the prediction would show another student's attendance and grades as its inputs. The recorder
-- never writes such a row (a record's id is derived from its student, recorder_service/rows.py),
-- so the check of the pair refuses nothing it writes. The record is found by its primary key and
-- the student compared, as the profile's is (0027): no index is added. Same events, five
-- alternating runs: the predictions' insert 19.9 us of the database's CPU per event against
-- 19.2 us with the id-only check (medians), the whole spread 50.1 us in both.

DROP TRIGGER predictions_academic_record_id_fkey_insert ON predictions;
DROP TRIGGER predictions_academic_record_id_fkey_delete ON academic_records;
DROP TRIGGER predictions_academic_record_id_fkey_truncate ON academic_records;
DROP TRIGGER predictions_academic_record_id_fkey_update ON predictions;
DROP TRIGGER academic_records_keys_stay ON academic_records;

-- Taken after the triggers' locks, so no row can come in unchecked between the two.
DO $$
DECLARE
    crossed bigint := (
        SELECT count(*) FROM predictions p JOIN academic_records r USING (academic_record_id)
        WHERE r.student_id <> p.student_id
    );
BEGIN
    IF crossed > 0 THEN
        RAISE EXCEPTION 'predictions naming an academic record of another student: %', crossed
            USING ERRCODE = 'foreign_key_violation', TABLE = 'predictions',
                  CONSTRAINT = 'predictions_academic_record_id_student_id_fkey',
                  HINT = 'Find them with: SELECT p.prediction_id FROM predictions p JOIN '
                         'academic_records r USING (academic_record_id) WHERE r.student_id '
                         '<> p.student_id; correct or delete them, then migrate again.';
    END IF;
END
$$;

-- predictions (academic_record_id, student_id) -> academic_records (the same)
CREATE TRIGGER predictions_academic_record_id_student_id_fkey_insert
    AFTER INSERT ON predictions REFERENCING NEW TABLE AS inserted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION recorded_rows_have_parents(
        'predictions_academic_record_id_student_id_fkey', 'academic_record_id,student_id',
        'academic_records', 'academic_record_id,student_id');
CREATE TRIGGER predictions_academic_record_id_student_id_fkey_delete
    AFTER DELETE ON academic_records REFERENCING OLD TABLE AS deleted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION recorded_rows_keep_their_parents(
        'predictions_academic_record_id_student_id_fkey', 'predictions',
        'academic_record_id,student_id', 'academic_record_id,student_id');
CREATE TRIGGER predictions_academic_record_id_student_id_fkey_truncate
    AFTER TRUNCATE ON academic_records
    FOR EACH STATEMENT EXECUTE FUNCTION recorded_rows_truncate_with_their_children(
        'predictions_academic_record_id_student_id_fkey', 'predictions');

-- A change of either column was refused already and still is: a prediction's student_id by the
-- profile's pair (0026), a record's by academic_records_student_id_fkey; these keep the id.
CREATE TRIGGER predictions_academic_record_id_student_id_fkey_update
    BEFORE UPDATE OF academic_record_id ON predictions
    FOR EACH ROW WHEN (NEW.academic_record_id IS DISTINCT FROM OLD.academic_record_id)
    EXECUTE FUNCTION recorded_rows_references_stay(
        'predictions_academic_record_id_student_id_fkey');
CREATE TRIGGER academic_records_keys_stay
    BEFORE UPDATE OF academic_record_id ON academic_records
    FOR EACH ROW WHEN (NEW.academic_record_id IS DISTINCT FROM OLD.academic_record_id)
    EXECUTE FUNCTION recorded_rows_references_stay(
        'predictions_academic_record_id_student_id_fkey');
