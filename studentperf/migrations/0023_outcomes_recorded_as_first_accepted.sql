-- An outcome's recorded_at is when an outcome of its student and term was first accepted
-- (studentperf/persistence/outcomes.py). It was the time of whichever event first reached the
-- recorder in a batch of its own, so it depended on how the log fell into batches: two outcomes
-- in one batch kept the later's time, in two batches the earlier's, and an older outcome a
-- spool replayed late was not seen. The recorder now lowers it to the earliest time offered.
-- Rows stored before keep what they have: the events that would correct them may be gone.
GRANT UPDATE (recorded_at) ON outcomes TO studentperf_recorder;
