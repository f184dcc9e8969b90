-- The trace id of the request that made each prediction (the `trace-id` header of its event):
-- with it, a caller's trace leads to the row, and a row to the service's log lines.
-- NULL for rows recorded before trace ids existed, and for events that came without one.
ALTER TABLE predictions
    ADD COLUMN trace_id text
        CONSTRAINT predictions_trace_id_check
            CHECK (trace_id ~ '^[0-9a-f]{32}$' AND trace_id <> repeat('0', 32));

-- Looking a trace up is the reason to store it; rows without one are left out of the index.
CREATE INDEX predictions_trace_id_idx ON predictions (trace_id) WHERE trace_id IS NOT NULL;
