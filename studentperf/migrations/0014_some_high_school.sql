-- The parental education level below high school (issue 16): 'some_high_school', proto number
-- PARENTAL_EDUCATION_SOME_HIGH_SCHOOL = 7, which the exam CSV calls "some high school". The two
-- CHECK constraints of 0001 list the stored names; each is replaced by the same list with the new
-- name, and every row stored before still passes it. Apply this before running a recorder that
-- knows the level: an older schema refuses such a row (a CHECK violation, so a dead letter).
ALTER TABLE students
    DROP CONSTRAINT students_parental_education_check,
    ADD CONSTRAINT students_parental_education_check CHECK (parental_education IN (
        'some_high_school', 'high_school', 'some_college', 'associate', 'bachelor', 'master',
        'doctorate'));

ALTER TABLE student_profiles
    DROP CONSTRAINT student_profiles_parental_education_check,
    ADD CONSTRAINT student_profiles_parental_education_check CHECK (parental_education IN (
        'some_high_school', 'high_school', 'some_college', 'associate', 'bachelor', 'master',
        'doctorate'));
