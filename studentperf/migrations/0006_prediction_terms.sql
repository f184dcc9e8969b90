-- The term whose final score a prediction predicts (Prediction.term), so that monitoring pairs a
-- prediction with the outcome of its student and term, rather than guessing by time. NULL: the
-- prediction named no term (recorded before this migration, or by a service with no current
-- term configured); monitoring pairs those by time, as before (docs/monitoring.md).
-- The same rule as outcomes.term (0002; studentperf/outcomes.py holds it for the code).
-- Adding a nullable column without a default rewrites nothing; the recorder's INSERT privilege
-- on predictions (0004) is table-wide, so no role needs a new grant.
ALTER TABLE predictions
    ADD COLUMN term text
        CONSTRAINT predictions_term_check
            CHECK (length(term) <= 32 AND term ~ '^[0-9]{4}(-[a-z0-9]+)+$');

-- Predictions meet outcomes by (student_id, term), the outcomes' primary key.
CREATE INDEX predictions_student_id_term_idx ON predictions (student_id, term);
