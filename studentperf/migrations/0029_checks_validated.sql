-- The CHECKs 0028 rewrote, validated: a scan of each table under SHARE UPDATE EXCLUSIVE, which
-- lets the recorder write meanwhile (0028's ACCESS EXCLUSIVE lock lasted only for its own
-- transaction, which read no rows).
ALTER TABLE students VALIDATE CONSTRAINT students_student_id_check;
ALTER TABLE predictions VALIDATE CONSTRAINT predictions_trace_id_check;
