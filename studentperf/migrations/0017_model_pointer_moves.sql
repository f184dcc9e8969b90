-- Who moved the served model, from which version to which, and why (migration 0015 kept only
-- model_pointer.moved_at, overwritten by the next move). Every move of `current` in the
-- database, a promotion by the gate (trainer/train.py) or a rollback (trainer/rollback_cli.py),
-- writes one row here in the same statement that moves the pointer
-- (studentperf/persistence/artifacts.py MOVE_POINTER), so there is no move without its row nor
-- a row without its move.
--
-- The versions are plain names, not foreign keys: an audit row must outlive whatever a later
-- clean-up of old versions removes. The pointer's own foreign key already guarantees that
-- to_version was a stored version when it was written.
CREATE TABLE model_pointer_moves (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    moved_at timestamptz NOT NULL DEFAULT now(),
    from_version text,  -- NULL: the first promotion through the database
    to_version text NOT NULL,
    kind text NOT NULL CONSTRAINT model_pointer_moves_kind_check
        CHECK (kind IN ('promotion', 'rollback')),
    reason text NOT NULL CONSTRAINT model_pointer_moves_reason_check CHECK (reason <> ''),
    moved_by text NOT NULL DEFAULT current_user
);

-- Append-only, for everyone: no process role is granted UPDATE, DELETE or TRUNCATE (below), and
-- this trigger refuses them to the owner too, so changing history takes a deliberate DDL step
-- (dropping the trigger) rather than a stray statement.
CREATE FUNCTION model_pointer_moves_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'model_pointer_moves is append-only: % refused', TG_OP;
END
$$;

CREATE TRIGGER model_pointer_moves_no_update_or_delete
    BEFORE UPDATE OR DELETE ON model_pointer_moves
    FOR EACH ROW EXECUTE FUNCTION model_pointer_moves_append_only();
CREATE TRIGGER model_pointer_moves_no_truncate
    BEFORE TRUNCATE ON model_pointer_moves
    FOR EACH STATEMENT EXECUTE FUNCTION model_pointer_moves_append_only();

-- And no move without its row: the trainer's role may UPDATE model_pointer (0015), so a move by
-- hand, outside MOVE_POINTER, is refused at commit unless the same transaction recorded it.
-- now() is the transaction's start time, which moved_at takes by default (and the trainer
-- cannot set).
CREATE FUNCTION model_pointer_move_recorded() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM model_pointer_moves
                   WHERE to_version = NEW.model_version AND moved_at = now()) THEN
        RAISE EXCEPTION 'model_pointer moved to % with no row in model_pointer_moves',
            NEW.model_version;
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER model_pointer_move_recorded
    AFTER INSERT OR UPDATE ON model_pointer
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION model_pointer_move_recorded();

-- The trainer, the one role that moves the pointer (0015), records its moves. It names the
-- versions, the kind and the reason only: id, moved_at and moved_by take their defaults, so a
-- row cannot claim another role or another time. It reads the rows back (the rollback prints
-- the move's number).
GRANT INSERT (from_version, to_version, kind, reason), SELECT ON model_pointer_moves
    TO studentperf_trainer;
-- Analysts read it (0004's default privileges give them this already; said here so the grant
-- does not depend on which role ran this migration). The replicas (studentperf_inference) get
-- nothing: they follow the pointer and need no history.
GRANT SELECT ON model_pointer_moves TO studentperf_analyst;
