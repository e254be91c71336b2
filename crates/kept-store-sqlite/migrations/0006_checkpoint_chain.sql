-- Checkpoints chained to one another: a version 2 checkpoint signs the digest of the checkpoint
-- before it, kept here; NULL marks a version 1 checkpoint, written before this migration.
ALTER TABLE ledger_checkpoints ADD COLUMN prev BLOB;

-- Append-only like the ledger: no honest code path changes or removes a checkpoint.
CREATE TRIGGER ledger_checkpoints_no_update BEFORE UPDATE ON ledger_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'ledger checkpoints are append-only');
END;
CREATE TRIGGER ledger_checkpoints_no_delete BEFORE DELETE ON ledger_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'ledger checkpoints are append-only');
END;
