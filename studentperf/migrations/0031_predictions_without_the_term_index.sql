-- The recorder's throughput (issue 17): predictions lose their index on (student_id, term).
--
-- 0006 added it so that predictions would meet outcomes by (student_id, term). Every query
-- goes the other way: the history (studentperf/persistence/history.py) and the monitor
-- (monitor.py) start from predictions and find each one's outcome by the outcomes' primary
-- key; the erasure and retention read a student's predictions by predictions_student_id_
-- predicted_at_idx. Nothing reads this index, and every recorded prediction paid for an entry
-- in it at a random place: about 3.8 us of the database's CPU per recorded event with two
-- write shards (five interleaved rounds, docs/recorder.md), 46 bytes per prediction on disk.
DROP INDEX predictions_student_id_term_idx;
