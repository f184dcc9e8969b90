-- A student's current facts, merged fact by fact (studentperf/student_facts.py holds the rule):
-- a fact given replaces the stored one only if given later, by (event time, log offset); a
-- fact not given keeps the stored value. So `students` holds the academic record's facts too,
-- and each fact says when it was given: <fact>_as_of, the event's time, and <fact>_log_offset,
-- its offset in its partition (-1: not from the log, e.g. a CSV import or this backfill).
-- NULL as-of: never given. profile_as_of is now the newest time any fact was given.
ALTER TABLE students
    ADD COLUMN attendance_percentage double precision
        CONSTRAINT students_attendance_percentage_check CHECK (attendance_percentage BETWEEN 0 AND 100),
    ADD COLUMN study_hours_per_week double precision
        CONSTRAINT students_study_hours_per_week_check CHECK (study_hours_per_week BETWEEN 0 AND 100),
    ADD COLUMN previous_gpa double precision
        CONSTRAINT students_previous_gpa_check CHECK (previous_gpa BETWEEN 0 AND 4),
    ADD COLUMN assignments_completed boolean,
    ADD COLUMN age_as_of timestamptz,
    ADD COLUMN age_log_offset bigint,
    ADD COLUMN gender_as_of timestamptz,
    ADD COLUMN gender_log_offset bigint,
    ADD COLUMN parental_education_as_of timestamptz,
    ADD COLUMN parental_education_log_offset bigint,
    ADD COLUMN lunch_program_as_of timestamptz,
    ADD COLUMN lunch_program_log_offset bigint,
    ADD COLUMN test_preparation_as_of timestamptz,
    ADD COLUMN test_preparation_log_offset bigint,
    ADD COLUMN attendance_percentage_as_of timestamptz,
    ADD COLUMN attendance_percentage_log_offset bigint,
    ADD COLUMN study_hours_per_week_as_of timestamptz,
    ADD COLUMN study_hours_per_week_log_offset bigint,
    ADD COLUMN previous_gpa_as_of timestamptz,
    ADD COLUMN previous_gpa_log_offset bigint,
    ADD COLUMN assignments_completed_as_of timestamptz,
    ADD COLUMN assignments_completed_log_offset bigint;

-- The profile facts already stored were given as of profile_as_of. A time after this migration
-- ran cannot be real (the old rule let a far-future event pin a profile): it counts as now.
UPDATE students SET
    profile_as_of = LEAST(profile_as_of, now()),
    age_as_of = CASE WHEN age IS NOT NULL THEN LEAST(profile_as_of, now()) END,
    age_log_offset = CASE WHEN age IS NOT NULL THEN -1 END,
    gender_as_of = CASE WHEN gender IS NOT NULL THEN LEAST(profile_as_of, now()) END,
    gender_log_offset = CASE WHEN gender IS NOT NULL THEN -1 END,
    parental_education_as_of = CASE WHEN parental_education IS NOT NULL THEN LEAST(profile_as_of, now()) END,
    parental_education_log_offset = CASE WHEN parental_education IS NOT NULL THEN -1 END,
    lunch_program_as_of = CASE WHEN lunch_program IS NOT NULL THEN LEAST(profile_as_of, now()) END,
    lunch_program_log_offset = CASE WHEN lunch_program IS NOT NULL THEN -1 END,
    test_preparation_as_of = CASE WHEN test_preparation IS NOT NULL THEN LEAST(profile_as_of, now()) END,
    test_preparation_log_offset = CASE WHEN test_preparation IS NOT NULL THEN -1 END;

-- Then the recorded history, by the time each prediction's event happened: it restores facts an
-- earlier sparse event erased, and gives the academic facts their first stored values.
WITH history AS (
    SELECT p.student_id, p.predicted_at, p.recorded_at, p.prediction_id,
           sp.age, sp.gender, sp.parental_education, sp.lunch_program, sp.test_preparation,
           ar.attendance_percentage, ar.study_hours_per_week, ar.previous_gpa, ar.assignments_completed
    FROM predictions p
    JOIN student_profiles sp USING (student_profile_id)
    JOIN academic_records ar USING (academic_record_id)
), latest AS (
    SELECT student_id,
        (array_agg(age ORDER BY predicted_at DESC, recorded_at DESC, prediction_id DESC)
            FILTER (WHERE age IS NOT NULL))[1] AS age,
        LEAST(max(predicted_at) FILTER (WHERE age IS NOT NULL), now()) AS age_as_of,
        (array_agg(gender ORDER BY predicted_at DESC, recorded_at DESC, prediction_id DESC)
            FILTER (WHERE gender IS NOT NULL))[1] AS gender,
        LEAST(max(predicted_at) FILTER (WHERE gender IS NOT NULL), now()) AS gender_as_of,
        (array_agg(parental_education ORDER BY predicted_at DESC, recorded_at DESC, prediction_id DESC)
            FILTER (WHERE parental_education IS NOT NULL))[1] AS parental_education,
        LEAST(max(predicted_at) FILTER (WHERE parental_education IS NOT NULL), now()) AS parental_education_as_of,
        (array_agg(lunch_program ORDER BY predicted_at DESC, recorded_at DESC, prediction_id DESC)
            FILTER (WHERE lunch_program IS NOT NULL))[1] AS lunch_program,
        LEAST(max(predicted_at) FILTER (WHERE lunch_program IS NOT NULL), now()) AS lunch_program_as_of,
        (array_agg(test_preparation ORDER BY predicted_at DESC, recorded_at DESC, prediction_id DESC)
            FILTER (WHERE test_preparation IS NOT NULL))[1] AS test_preparation,
        LEAST(max(predicted_at) FILTER (WHERE test_preparation IS NOT NULL), now()) AS test_preparation_as_of,
        (array_agg(attendance_percentage ORDER BY predicted_at DESC, recorded_at DESC, prediction_id DESC)
            FILTER (WHERE attendance_percentage IS NOT NULL))[1] AS attendance_percentage,
        LEAST(max(predicted_at) FILTER (WHERE attendance_percentage IS NOT NULL), now()) AS attendance_percentage_as_of,
        (array_agg(study_hours_per_week ORDER BY predicted_at DESC, recorded_at DESC, prediction_id DESC)
            FILTER (WHERE study_hours_per_week IS NOT NULL))[1] AS study_hours_per_week,
        LEAST(max(predicted_at) FILTER (WHERE study_hours_per_week IS NOT NULL), now()) AS study_hours_per_week_as_of,
        (array_agg(previous_gpa ORDER BY predicted_at DESC, recorded_at DESC, prediction_id DESC)
            FILTER (WHERE previous_gpa IS NOT NULL))[1] AS previous_gpa,
        LEAST(max(predicted_at) FILTER (WHERE previous_gpa IS NOT NULL), now()) AS previous_gpa_as_of,
        (array_agg(assignments_completed ORDER BY predicted_at DESC, recorded_at DESC, prediction_id DESC)
            FILTER (WHERE assignments_completed IS NOT NULL))[1] AS assignments_completed,
        LEAST(max(predicted_at) FILTER (WHERE assignments_completed IS NOT NULL), now()) AS assignments_completed_as_of
    FROM history
    GROUP BY student_id
)
UPDATE students s SET
    age = CASE WHEN l.age_as_of > COALESCE(s.age_as_of, '-infinity') THEN l.age ELSE s.age END,
    age_as_of = CASE WHEN l.age_as_of > COALESCE(s.age_as_of, '-infinity') THEN l.age_as_of ELSE s.age_as_of END,
    age_log_offset = CASE WHEN l.age_as_of > COALESCE(s.age_as_of, '-infinity') THEN -1 ELSE s.age_log_offset END,
    gender = CASE WHEN l.gender_as_of > COALESCE(s.gender_as_of, '-infinity') THEN l.gender ELSE s.gender END,
    gender_as_of = CASE WHEN l.gender_as_of > COALESCE(s.gender_as_of, '-infinity') THEN l.gender_as_of ELSE s.gender_as_of END,
    gender_log_offset = CASE WHEN l.gender_as_of > COALESCE(s.gender_as_of, '-infinity') THEN -1 ELSE s.gender_log_offset END,
    parental_education = CASE WHEN l.parental_education_as_of > COALESCE(s.parental_education_as_of, '-infinity') THEN l.parental_education ELSE s.parental_education END,
    parental_education_as_of = CASE WHEN l.parental_education_as_of > COALESCE(s.parental_education_as_of, '-infinity') THEN l.parental_education_as_of ELSE s.parental_education_as_of END,
    parental_education_log_offset = CASE WHEN l.parental_education_as_of > COALESCE(s.parental_education_as_of, '-infinity') THEN -1 ELSE s.parental_education_log_offset END,
    lunch_program = CASE WHEN l.lunch_program_as_of > COALESCE(s.lunch_program_as_of, '-infinity') THEN l.lunch_program ELSE s.lunch_program END,
    lunch_program_as_of = CASE WHEN l.lunch_program_as_of > COALESCE(s.lunch_program_as_of, '-infinity') THEN l.lunch_program_as_of ELSE s.lunch_program_as_of END,
    lunch_program_log_offset = CASE WHEN l.lunch_program_as_of > COALESCE(s.lunch_program_as_of, '-infinity') THEN -1 ELSE s.lunch_program_log_offset END,
    test_preparation = CASE WHEN l.test_preparation_as_of > COALESCE(s.test_preparation_as_of, '-infinity') THEN l.test_preparation ELSE s.test_preparation END,
    test_preparation_as_of = CASE WHEN l.test_preparation_as_of > COALESCE(s.test_preparation_as_of, '-infinity') THEN l.test_preparation_as_of ELSE s.test_preparation_as_of END,
    test_preparation_log_offset = CASE WHEN l.test_preparation_as_of > COALESCE(s.test_preparation_as_of, '-infinity') THEN -1 ELSE s.test_preparation_log_offset END,
    attendance_percentage = CASE WHEN l.attendance_percentage_as_of > COALESCE(s.attendance_percentage_as_of, '-infinity') THEN l.attendance_percentage ELSE s.attendance_percentage END,
    attendance_percentage_as_of = CASE WHEN l.attendance_percentage_as_of > COALESCE(s.attendance_percentage_as_of, '-infinity') THEN l.attendance_percentage_as_of ELSE s.attendance_percentage_as_of END,
    attendance_percentage_log_offset = CASE WHEN l.attendance_percentage_as_of > COALESCE(s.attendance_percentage_as_of, '-infinity') THEN -1 ELSE s.attendance_percentage_log_offset END,
    study_hours_per_week = CASE WHEN l.study_hours_per_week_as_of > COALESCE(s.study_hours_per_week_as_of, '-infinity') THEN l.study_hours_per_week ELSE s.study_hours_per_week END,
    study_hours_per_week_as_of = CASE WHEN l.study_hours_per_week_as_of > COALESCE(s.study_hours_per_week_as_of, '-infinity') THEN l.study_hours_per_week_as_of ELSE s.study_hours_per_week_as_of END,
    study_hours_per_week_log_offset = CASE WHEN l.study_hours_per_week_as_of > COALESCE(s.study_hours_per_week_as_of, '-infinity') THEN -1 ELSE s.study_hours_per_week_log_offset END,
    previous_gpa = CASE WHEN l.previous_gpa_as_of > COALESCE(s.previous_gpa_as_of, '-infinity') THEN l.previous_gpa ELSE s.previous_gpa END,
    previous_gpa_as_of = CASE WHEN l.previous_gpa_as_of > COALESCE(s.previous_gpa_as_of, '-infinity') THEN l.previous_gpa_as_of ELSE s.previous_gpa_as_of END,
    previous_gpa_log_offset = CASE WHEN l.previous_gpa_as_of > COALESCE(s.previous_gpa_as_of, '-infinity') THEN -1 ELSE s.previous_gpa_log_offset END,
    assignments_completed = CASE WHEN l.assignments_completed_as_of > COALESCE(s.assignments_completed_as_of, '-infinity') THEN l.assignments_completed ELSE s.assignments_completed END,
    assignments_completed_as_of = CASE WHEN l.assignments_completed_as_of > COALESCE(s.assignments_completed_as_of, '-infinity') THEN l.assignments_completed_as_of ELSE s.assignments_completed_as_of END,
    assignments_completed_log_offset = CASE WHEN l.assignments_completed_as_of > COALESCE(s.assignments_completed_as_of, '-infinity') THEN -1 ELSE s.assignments_completed_log_offset END,
    profile_as_of = GREATEST(s.profile_as_of, l.age_as_of, l.gender_as_of, l.parental_education_as_of, l.lunch_program_as_of, l.test_preparation_as_of, l.attendance_percentage_as_of, l.study_hours_per_week_as_of, l.previous_gpa_as_of, l.assignments_completed_as_of)
FROM latest l
WHERE l.student_id = s.student_id;

COMMENT ON COLUMN students.profile_as_of IS
    'the newest time any of the student''s facts was given; -infinity: none yet';

-- Where the least-privilege roles exist (migration 0004_roles, granted per column), the writers
-- of students (the recorder, the CSV import) may update the new columns too.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'studentperf_recorder')
       AND EXISTS (SELECT FROM pg_roles WHERE rolname = 'studentperf_importer') THEN
        GRANT UPDATE (
            attendance_percentage, study_hours_per_week, previous_gpa, assignments_completed,
            age_as_of, age_log_offset, gender_as_of, gender_log_offset,
            parental_education_as_of, parental_education_log_offset, lunch_program_as_of,
            lunch_program_log_offset, test_preparation_as_of, test_preparation_log_offset,
            attendance_percentage_as_of, attendance_percentage_log_offset,
            study_hours_per_week_as_of, study_hours_per_week_log_offset, previous_gpa_as_of,
            previous_gpa_log_offset, assignments_completed_as_of,
            assignments_completed_log_offset
        ) ON students TO studentperf_recorder, studentperf_importer;
    END IF;
END
$$;
