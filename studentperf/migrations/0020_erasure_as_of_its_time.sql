-- An erasure removes what the student gave at or before its time, not every row of theirs
-- (studentperf/persistence/erasure.py): a new enrolment's events that reached the log before a
-- spooled erasure stay, as they would after it. The erasure role now reads the times it
-- compares, and the ids that tell a profile or academic record still in use, and clears the
-- facts of `students` given at or before the erasure, keeping the row for a later enrolment
-- (seen anew, as are a profile or academic record it shares with the erased enrolment), a kept
-- outcome's recording times, if they were the erased student's, and the student id of their
-- imported rows (the ids stay).
GRANT SELECT (predicted_at, student_profile_id, academic_record_id) ON predictions
    TO studentperf_erasure;
GRANT SELECT (recorded_at, recorded_as_of), UPDATE (recorded_at, updated_at) ON outcomes
    TO studentperf_erasure;
GRANT SELECT (student_profile_id), UPDATE (first_seen_at) ON student_profiles
    TO studentperf_erasure;
GRANT SELECT (academic_record_id), UPDATE (first_seen_at) ON academic_records
    TO studentperf_erasure;
GRANT SELECT (student_id), UPDATE (student_id) ON imported_rows TO studentperf_erasure;
-- Each fact with its time and log offset, and the row's times: read and written alike.
DO $$
DECLARE
    columns CONSTANT text := '
        age, age_as_of, age_log_offset, gender, gender_as_of, gender_log_offset,
        parental_education, parental_education_as_of, parental_education_log_offset,
        lunch_program, lunch_program_as_of, lunch_program_log_offset, test_preparation,
        test_preparation_as_of, test_preparation_log_offset, attendance_percentage,
        attendance_percentage_as_of, attendance_percentage_log_offset, study_hours_per_week,
        study_hours_per_week_as_of, study_hours_per_week_log_offset, previous_gpa,
        previous_gpa_as_of, previous_gpa_log_offset, assignments_completed,
        assignments_completed_as_of, assignments_completed_log_offset, profile_as_of,
        first_seen_at';
BEGIN
    EXECUTE format(
        'GRANT SELECT (%1$s), UPDATE (%1$s) ON students TO studentperf_erasure', columns);
END
$$;
