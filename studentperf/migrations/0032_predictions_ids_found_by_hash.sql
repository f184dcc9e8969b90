-- The recorder's throughput (issue 17): the three indexes of predictions that are only ever
-- asked "which rows hold this id?" become hash indexes.
--
-- - student_profile_id and academic_record_id: whether a prediction still uses a profile or a
--   record (retention's batches, and 0026's check of each statement that deletes them);
-- - trace_id: the row of a caller's trace (README, "Tracing": WHERE trace_id = '...').
-- Each is an equality on a random key, and each B-tree took an entry per recorded prediction at
-- a random leaf, found by comparing keys down the tree (the trace id's as text, under the
-- database's collation). A hash index finds the bucket from the key's hash and stores that hash
-- (4 bytes) in place of the key: the database's CPU per recorded event about 3 us lower in most
-- interleaved runs, 37 bytes per prediction each on disk (docs/recorder.md). Hash indexes are
-- WAL-logged, crash-safe and replicated (PostgreSQL 10 and later); none of these is unique,
-- sorted or range-scanned.
--
-- IF NOT EXISTS: on a large table, build them beforehand without blocking the recorder
-- (CREATE INDEX CONCURRENTLY with the same definitions); the B-trees then go at once.
CREATE INDEX IF NOT EXISTS predictions_student_profile_id_hash_idx
    ON predictions USING hash (student_profile_id);
CREATE INDEX IF NOT EXISTS predictions_academic_record_id_hash_idx
    ON predictions USING hash (academic_record_id);
CREATE INDEX IF NOT EXISTS predictions_trace_id_hash_idx
    ON predictions USING hash (trace_id) WHERE trace_id IS NOT NULL;
DROP INDEX predictions_student_profile_id_idx, predictions_academic_record_id_idx,
    predictions_trace_id_idx;
