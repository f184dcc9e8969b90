-- Outcomes through Kafka (issue 15): RecordOutcomes publishes an OutcomeEvent and the recorder
-- writes it (recorder_service/store.py), so the inference service writes nothing any more.

-- When the stored score was recorded, by the event log's order: the event's time and its
-- offset, as a student's facts are ordered (0005). A later event for the same student and term
-- replaces the score, a late replay of an older one does not. A CSV import's scores are as of
-- the import, outside the log (log_offset -1, studentperf/student_facts.py OUTSIDE_THE_LOG).
-- NULL (outcomes stored before this migration): older than any event. (recorded_at of an
-- outcome the recorder adds is its event's time too: when RecordOutcomes accepted it.)
ALTER TABLE outcomes
    ADD COLUMN recorded_as_of timestamptz,
    ADD COLUMN log_offset bigint;

-- The inference service keeps only what every process has (0004: CONNECT, USAGE, SELECT on
-- schema_migrations): it can no longer read or write students or outcomes.
REVOKE ALL ON students FROM studentperf_inference;
REVOKE ALL ON outcomes FROM studentperf_inference;

-- The recorder upserts outcomes (reading the stored row's order to compare), and adds bare
-- students through the facts merge it already had the privileges for.
GRANT SELECT, INSERT,
    UPDATE (final_score, source, updated_at, recorded_as_of, log_offset)
    ON outcomes TO studentperf_recorder;

-- `make import` stamps the scores it writes as of the import.
GRANT UPDATE (recorded_as_of, log_offset) ON outcomes TO studentperf_importer;
