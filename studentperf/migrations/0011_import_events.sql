-- CSV imports through Kafka (issue 15): `make import` publishes an ImportEvent per good row and
-- the recorder writes it (recorder_service/store.py), so the importer writes nothing any more.

-- The import events the recorder has stored, by their id (derived from the file, the line and
-- the term: trainer/import_events.py): an event seen before is skipped, so importing the same
-- file again stores nothing new, and `make import --wait` counts its rows here. The student's
-- rows go with the student (an erasure).
CREATE TABLE imported_rows (
    event_id uuid PRIMARY KEY,
    student_id text NOT NULL REFERENCES students (student_id) ON DELETE CASCADE,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
-- The cascade's access path: without it, deleting a student scans the whole table.
CREATE INDEX imported_rows_student_id_idx ON imported_rows (student_id);

-- The recorder skips the rows it stored before (reading their ids) and notes the new ones.
GRANT SELECT (event_id), INSERT (event_id, student_id) ON imported_rows TO studentperf_recorder;

-- The importer keeps only what every process has (0004: CONNECT, USAGE, SELECT on
-- schema_migrations) and reads which of its rows the recorder has stored (--wait): it can no
-- longer read or write students or outcomes.
REVOKE ALL ON students FROM studentperf_importer;
REVOKE ALL ON outcomes FROM studentperf_importer;
GRANT SELECT (event_id) ON imported_rows TO studentperf_importer;
