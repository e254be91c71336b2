-- Data subject requests as first-class records: what was asked, by which channel, how identity
-- was verified, the deadline fixed at intake from the law's rows, and where it stands. Every
-- change of a request is also a record of the requests log, written in the same transaction.
-- The preference center's older `erasure_requests` table stays as it is.
CREATE TABLE requests (
    id              INTEGER PRIMARY KEY,
    subject_id      INTEGER NOT NULL REFERENCES subjects (id),
    kind            TEXT    NOT NULL,
    scope           TEXT    NOT NULL CHECK (json_valid(scope)),
    channel         TEXT    NOT NULL,
    verification    TEXT    CHECK (verification IS NULL OR json_valid(verification)),
    regime          TEXT    NOT NULL,
    region          TEXT,
    rule            TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('received', 'verified', 'in_progress',
                                                       'completed', 'rejected', 'extended')),
    resume          TEXT,
    received_at     INTEGER NOT NULL,
    due_at          INTEGER NOT NULL,
    acknowledge_by  INTEGER,
    extension_until INTEGER,
    extended_at     INTEGER,
    reason          TEXT,
    updated_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX requests_subject ON requests (subject_id, id);
CREATE INDEX requests_open_due ON requests (due_at) WHERE state NOT IN ('completed', 'rejected');

-- The requests log: the canonical bytes of each step (`kept_core::requests`) and their chain
-- hash under the domain `kept-requests-v1`; `request_id`, `subject_id` and `at` are read from
-- the bytes for lookups, and `kept dsr verify` checks them against the bytes.
CREATE TABLE request_log (
    seq        INTEGER PRIMARY KEY,
    request_id INTEGER NOT NULL,
    subject_id INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    bytes      BLOB    NOT NULL,
    hash       BLOB    NOT NULL
) STRICT;
CREATE INDEX request_log_request ON request_log (request_id);

CREATE TRIGGER request_log_no_update BEFORE UPDATE ON request_log
BEGIN
    SELECT RAISE(ABORT, 'the requests log is append-only');
END;
CREATE TRIGGER request_log_no_delete BEFORE DELETE ON request_log
BEGIN
    SELECT RAISE(ABORT, 'the requests log is append-only');
END;

-- Checkpoints of the requests log, signed with the ledger key and chained like the ledger's.
CREATE TABLE request_log_checkpoints (
    seq       INTEGER PRIMARY KEY,
    hash      BLOB    NOT NULL,
    at        INTEGER NOT NULL,
    key_id    TEXT    NOT NULL,
    signature BLOB    NOT NULL,
    prev      BLOB
) STRICT;

CREATE TRIGGER request_log_checkpoints_no_update BEFORE UPDATE ON request_log_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'request log checkpoints are append-only');
END;
CREATE TRIGGER request_log_checkpoints_no_delete BEFORE DELETE ON request_log_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'request log checkpoints are append-only');
END;
