-- The explanation a prediction was answered with (Prediction.explanation), kept so that
-- ListStudentPredictions returns it as it was answered: the serialized ScoreExplanation
-- message, which the service hands back without taking it apart. NULL: none was asked for (or
-- the prediction was recorded before this migration). Nullable without a default: adding it
-- rewrites nothing. The recorder's INSERT on predictions (0004) is table-wide; the history is
-- read as studentperf_analyst (read-only, SELECT on every table), so no role needs a new grant.
ALTER TABLE predictions ADD COLUMN explanation bytea;
