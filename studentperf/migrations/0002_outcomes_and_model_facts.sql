-- Ground truth and model lifecycle: the actual final score of each student per term, and what
-- the trainer knows about each model version.

-- One row per student and term: the score the student actually got. Recording the same student
-- and term again replaces the score (updated_at says when). A student first seen here gets a
-- `students` row with no profile and profile_as_of = '-infinity', so the first real profile a
-- prediction brings replaces it (the recorder keeps the newest profile).
CREATE TABLE outcomes (
    student_id text NOT NULL
        CONSTRAINT outcomes_student_id_fkey REFERENCES students (student_id),
    -- "YYYY-name" in lower case, e.g. '2026-spring' or '2025-term-2'.
    term text NOT NULL
        CONSTRAINT outcomes_term_check
            CHECK (length(term) <= 32 AND term ~ '^[0-9]{4}(-[a-z0-9]+)+$'),
    final_score double precision NOT NULL
        CONSTRAINT outcomes_final_score_check CHECK (final_score BETWEEN 0 AND 100),
    -- Where it came from: 'rpc' (RecordOutcomes) or 'csv:<sha256 of the file>'.
    source text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT outcomes_pkey PRIMARY KEY (student_id, term)
);
CREATE INDEX outcomes_term_idx ON outcomes (term);

-- The trainer's facts about a version, the same as its metadata.json. Nullable: the recorder
-- adds a bare row for every version it sees in an event, and the trainer fills the rest in
-- (ON CONFLICT DO UPDATE), whichever comes first.
ALTER TABLE model_versions
    ADD COLUMN created_at timestamptz,
    ADD COLUMN pass_mark double precision
        CONSTRAINT model_versions_pass_mark_check CHECK (pass_mark BETWEEN 0 AND 100),
    ADD COLUMN data_source text,
    ADD COLUMN data_sha256 text,
    ADD COLUMN train_rows integer,
    ADD COLUMN validation_rows integer,
    ADD COLUMN test_rows integer,
    ADD COLUMN score_estimator text,
    ADD COLUMN pass_estimator text,
    ADD COLUMN feature_columns text[],
    ADD COLUMN libraries jsonb,
    ADD COLUMN metrics jsonb,
    ADD COLUMN baseline_metrics jsonb,
    ADD COLUMN metadata jsonb,
    -- Why the trainer did or did not make it the served version.
    ADD COLUMN promotion_decision text,
    -- When it became `models/current` (NULL: never).
    ADD COLUMN promoted_at timestamptz;
