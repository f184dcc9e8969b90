-- The recorder's throughput (issue 17): student_profiles loses its unique index on
-- (student_profile_id, student_id).
--
-- 0016 added it as the target of the foreign key that checked a prediction's profile together
-- with its student. 0026 replaced that key by statement triggers, which find each profile by
-- its primary key and compare the student; the pair is unique because student_profile_id is.
-- Nothing else reads it, and every recorded profile still paid for it: about 1.5 us of the
-- database's CPU and 116 bytes of WAL per recorded event (the benchmark's events, each with a
-- profile of its own).
ALTER TABLE student_profiles DROP CONSTRAINT student_profiles_student_profile_id_student_id_key;
