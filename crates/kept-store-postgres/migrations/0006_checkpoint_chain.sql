-- Checkpoints chained to one another: a version 2 checkpoint signs the digest of the checkpoint
-- before it, kept here; NULL marks a version 1 checkpoint, written before this migration.
ALTER TABLE ledger_checkpoints ADD COLUMN prev BYTEA;

-- Append-only like the ledger: no honest code path changes or removes a checkpoint.
CREATE FUNCTION ledger_checkpoints_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger checkpoints are append-only';
END;
$$;
CREATE TRIGGER ledger_checkpoints_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_checkpoints_append_only();
