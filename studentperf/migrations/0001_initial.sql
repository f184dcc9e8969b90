-- The normalized record of every prediction. CHECK constraints mirror the rules documented in
-- proto/studentperf/v1/*.proto, so a row that the API would have refused cannot be stored.
-- Constraint names: <table>_<column>_check / _fkey / _pkey, as PostgreSQL itself names them.

CREATE TABLE model_versions (
    model_version text PRIMARY KEY
        CONSTRAINT model_versions_model_version_check CHECK (length(model_version) BETWEEN 1 AND 128),
    first_seen_at timestamptz NOT NULL DEFAULT now()
);

-- One row per student, holding the latest profile received (profile_as_of says from when).
CREATE TABLE students (
    student_id text PRIMARY KEY
        CONSTRAINT students_student_id_check CHECK (student_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    age smallint
        CONSTRAINT students_age_check CHECK (age BETWEEN 10 AND 100),
    gender text
        CONSTRAINT students_gender_check CHECK (gender IN ('female', 'male', 'other')),
    parental_education text
        CONSTRAINT students_parental_education_check CHECK (parental_education IN (
            'high_school', 'some_college', 'associate', 'bachelor', 'master', 'doctorate')),
    lunch_program text
        CONSTRAINT students_lunch_program_check CHECK (lunch_program IN ('standard', 'free_or_reduced')),
    test_preparation text
        CONSTRAINT students_test_preparation_check CHECK (test_preparation IN ('none', 'completed')),
    profile_as_of timestamptz NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now()
);

-- Every distinct profile a prediction was made from, so a prediction keeps the inputs the model
-- saw even after the student's profile changes. Its id is derived from its content (a UUID v5
-- of the student and the values): the same profile sent again is one row.
CREATE TABLE student_profiles (
    student_profile_id uuid PRIMARY KEY,
    student_id text NOT NULL
        CONSTRAINT student_profiles_student_id_fkey REFERENCES students (student_id),
    age smallint
        CONSTRAINT student_profiles_age_check CHECK (age BETWEEN 10 AND 100),
    gender text
        CONSTRAINT student_profiles_gender_check CHECK (gender IN ('female', 'male', 'other')),
    parental_education text
        CONSTRAINT student_profiles_parental_education_check CHECK (parental_education IN (
            'high_school', 'some_college', 'associate', 'bachelor', 'master', 'doctorate')),
    lunch_program text
        CONSTRAINT student_profiles_lunch_program_check
            CHECK (lunch_program IN ('standard', 'free_or_reduced')),
    test_preparation text
        CONSTRAINT student_profiles_test_preparation_check
            CHECK (test_preparation IN ('none', 'completed')),
    first_seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX student_profiles_student_id_idx ON student_profiles (student_id);

-- A student's academic record as sent with a prediction, content-addressed like profiles.
CREATE TABLE academic_records (
    academic_record_id uuid PRIMARY KEY,
    student_id text NOT NULL
        CONSTRAINT academic_records_student_id_fkey REFERENCES students (student_id),
    attendance_percentage double precision
        CONSTRAINT academic_records_attendance_percentage_check
            CHECK (attendance_percentage BETWEEN 0 AND 100),
    study_hours_per_week double precision
        CONSTRAINT academic_records_study_hours_per_week_check
            CHECK (study_hours_per_week BETWEEN 0 AND 100),
    previous_gpa double precision
        CONSTRAINT academic_records_previous_gpa_check CHECK (previous_gpa BETWEEN 0 AND 4),
    assignments_completed boolean,
    first_seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX academic_records_student_id_idx ON academic_records (student_id);

CREATE TABLE predictions (
    prediction_id uuid PRIMARY KEY,
    student_id text NOT NULL
        CONSTRAINT predictions_student_id_fkey REFERENCES students (student_id),
    student_profile_id uuid NOT NULL
        CONSTRAINT predictions_student_profile_id_fkey
            REFERENCES student_profiles (student_profile_id),
    academic_record_id uuid NOT NULL
        CONSTRAINT predictions_academic_record_id_fkey
            REFERENCES academic_records (academic_record_id),
    model_version text NOT NULL
        CONSTRAINT predictions_model_version_fkey REFERENCES model_versions (model_version),
    predicted_final_score double precision NOT NULL
        CONSTRAINT predictions_predicted_final_score_check
            CHECK (predicted_final_score BETWEEN 0 AND 100),
    pass_probability double precision NOT NULL
        CONSTRAINT predictions_pass_probability_check CHECK (pass_probability BETWEEN 0 AND 1),
    predicted_pass boolean NOT NULL,
    pass_mark double precision NOT NULL
        CONSTRAINT predictions_pass_mark_check CHECK (pass_mark BETWEEN 0 AND 100),
    -- Paths inside the request's Student message, e.g. 'academic_record.previous_gpa'.
    imputed_fields text[] NOT NULL DEFAULT '{}',
    predicted_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    event_schema_version smallint NOT NULL
        CONSTRAINT predictions_event_schema_version_check CHECK (event_schema_version >= 1)
);
CREATE INDEX predictions_student_id_predicted_at_idx ON predictions (student_id, predicted_at);
CREATE INDEX predictions_model_version_predicted_at_idx ON predictions (model_version, predicted_at);
CREATE INDEX predictions_academic_record_id_idx ON predictions (academic_record_id);
CREATE INDEX predictions_student_profile_id_idx ON predictions (student_profile_id);
