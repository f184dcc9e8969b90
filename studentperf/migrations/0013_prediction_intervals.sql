-- The range a prediction's final score was answered with (Prediction.score_interval_low and
-- _high: the predicted score minus and plus the model's split-conformal half-width, clipped to
-- 0-100) and the share of final scores that range is made to hold (interval_coverage, e.g.
-- 0.8), kept so that ListStudentPredictions returns them as answered and monitoring can measure
-- the coverage reached from outcomes. NULL: the model was trained before intervals (or the
-- prediction was recorded before this migration). Nullable without a default: adding them
-- rewrites nothing. The recorder's INSERT on predictions (0004) is table-wide and the history
-- and the trainer read every column, so no role needs a new grant.
ALTER TABLE predictions
    ADD COLUMN score_interval_low double precision,
    ADD COLUMN score_interval_high double precision,
    ADD COLUMN interval_coverage double precision,
    ADD CONSTRAINT predictions_interval_ordered CHECK (score_interval_low <= score_interval_high),
    ADD CONSTRAINT predictions_interval_coverage_share
        CHECK (interval_coverage > 0 AND interval_coverage < 1);
