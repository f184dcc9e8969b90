-- Erasure (issue 15; recorder_service/erasure.py): an ErasureEvent deletes a student's rows from
-- every table that holds them, in one transaction, and leaves one audit row here. The row holds
-- no personal data: the student is named by a keyed hash of the id (HMAC-SHA256 under the
-- recorder's STUDENTPERF_ERASURE_KEY), so the row cannot be turned back into the id without the
-- key, while the recorder, which has the key, can tell that an event it reads is of an erased
-- student: one that occurred at or before erased_as_of is refused, so replaying the topic from
-- its first offset does not bring the student back.
CREATE TABLE erasures (
    -- The ErasureEvent's id: each erasure is applied once (a redelivered event adds nothing).
    event_id uuid PRIMARY KEY,
    student_hash bytea NOT NULL
        CONSTRAINT erasures_student_hash_check CHECK (length(student_hash) = 32),
    -- The event's occurred_at: when EraseStudent accepted it.
    erased_as_of timestamptz NOT NULL,
    -- When the recorder applied it.
    applied_at timestamptz NOT NULL DEFAULT now(),
    -- The client's name from the token table, or 'anonymous' when tokens are off.
    requested_by text NOT NULL
        CONSTRAINT erasures_requested_by_check CHECK (length(requested_by) BETWEEN 1 AND 128),
    -- EraseStudentRequest.reason: a reference such as a ticket number; NULL when none.
    reason text
        CONSTRAINT erasures_reason_check CHECK (reason ~ '^[A-Za-z0-9 _.:#/-]{1,200}$'),
    -- Rows removed per table, e.g. {"predictions": 12, "students": 1}; {} removed nothing.
    removed jsonb NOT NULL
        CONSTRAINT erasures_removed_check CHECK (jsonb_typeof(removed) = 'object')
);
-- The recorder looks up a batch's students here, in one query per batch.
CREATE INDEX erasures_student_hash_idx ON erasures (student_hash, erased_as_of);

-- The role that erases, in the way of retention's (0007): it cannot log in, the recorder takes
-- it with SET LOCAL ROLE inside each erasure transaction only (the recorder is NOINHERIT, so its
-- ordinary writes still cannot delete), and it may delete a student's rows and write the audit
-- row, nothing else.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'studentperf_erasure') THEN
        BEGIN
            CREATE ROLE studentperf_erasure NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created meanwhile by another database's migration
        END;
    END IF;
END
$$;
DO $$
BEGIN
    IF NOT pg_has_role('studentperf_recorder', 'studentperf_erasure', 'MEMBER') THEN
        GRANT studentperf_erasure TO studentperf_recorder;
    END IF;
END
$$;

-- Each DELETE reads only the column its WHERE names (foreign keys are checked as the owner).
GRANT SELECT (student_id), DELETE ON predictions, student_profiles, academic_records, outcomes,
    students TO studentperf_erasure;
-- The audit row, once per event (ON CONFLICT reads the key).
GRANT SELECT (event_id), INSERT ON erasures TO studentperf_erasure;

-- The recorder looks up which of a batch's students were erased, and when.
GRANT SELECT (event_id, student_hash, erased_as_of) ON erasures TO studentperf_recorder;

-- Readers of the record: the analyst role (make demo, people, and the inference service's
-- history DSN, through which EraseStudent reads the audit row back). 0004's default privileges
-- already grant it; said here so this file tells the whole story.
GRANT SELECT ON erasures TO studentperf_analyst;
