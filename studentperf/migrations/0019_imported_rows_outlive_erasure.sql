-- An imported row's id outlives its student (review of the student records, issue 17 session).
--
-- Erasing a student deleted its imported_rows with it (0011's cascade), so `make import` of the
-- same file again published the same event ids, now later than the erasure, and nothing was
-- left to say they were stored before: the erased student's profile and scores came back. The
-- id is derived from the file, the line and the term (trainer/import_events.py) and names no
-- student; it now stays, without the student, so the row is skipped as any imported before.
-- Retention's removal of a student keeps them the same way.
ALTER TABLE imported_rows
    ALTER COLUMN student_id DROP NOT NULL,
    DROP CONSTRAINT imported_rows_student_id_fkey,
    ADD CONSTRAINT imported_rows_student_id_fkey
        FOREIGN KEY (student_id) REFERENCES students (student_id) ON DELETE SET NULL;
