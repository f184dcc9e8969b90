-- Per-group quality (issue 16): how well a version serves each group of students (gender,
-- lunch program, parental education; never race or ethnicity) on its test split, and the gaps
-- between groups with their bootstrap intervals, as in its metadata.json's `group_quality`
-- (trainer/group_quality.py GroupQuality.as_dict). A column of its own, beside `metrics`, so
-- that the promotion history can be queried per group without digging into `metadata`.
-- NULL: a bare row of the recorder's, or a version trained before the figures existed. The
-- trainer's INSERT and UPDATE on model_versions (0004) cover the new column.
ALTER TABLE model_versions ADD COLUMN group_quality jsonb;
