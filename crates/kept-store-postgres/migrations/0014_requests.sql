-- Data subject requests as first-class records: what was asked, by which channel, how identity
-- was verified, the deadline fixed at intake from the law's rows, and where it stands. Every
-- change of a request is also a record of the requests log, written in the same transaction.
-- The preference center's older `erasure_requests` table stays as it is.
CREATE TABLE requests (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject_id      BIGINT NOT NULL REFERENCES subjects (id),
    kind            TEXT   NOT NULL,
    scope           TEXT   NOT NULL,
    channel         TEXT   NOT NULL,
    verification    TEXT,
    regime          TEXT   NOT NULL,
    region          TEXT,
    rule            TEXT   NOT NULL,
    state           TEXT   NOT NULL CHECK (state IN ('received', 'verified', 'in_progress',
                                                     'completed', 'rejected', 'extended')),
    resume          TEXT,
    received_at     BIGINT NOT NULL,
    due_at          BIGINT NOT NULL,
    acknowledge_by  BIGINT,
    extension_until BIGINT,
    extended_at     BIGINT,
    reason          TEXT,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX requests_subject ON requests (subject_id, id);
CREATE INDEX requests_open_due ON requests (due_at) WHERE state NOT IN ('completed', 'rejected');

-- The requests log: the canonical bytes of each step (`kept_core::requests`) and their chain
-- hash under the domain `kept-requests-v1`; `request_id`, `subject_id` and `at` are read from
-- the bytes for lookups, and `kept dsr verify` checks them against the bytes. Writers take
-- the table's lock for the transaction, so several servers extend one chain.
CREATE TABLE request_log (
    seq        BIGINT PRIMARY KEY,
    request_id BIGINT NOT NULL,
    subject_id BIGINT NOT NULL,
    at         BIGINT NOT NULL,
    bytes      BYTEA  NOT NULL,
    hash       BYTEA  NOT NULL
);
CREATE INDEX request_log_request ON request_log (request_id);

CREATE FUNCTION request_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the requests log is append-only';
END;
$$;
CREATE TRIGGER request_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON request_log
    FOR EACH STATEMENT EXECUTE FUNCTION request_log_append_only();

-- Checkpoints of the requests log, signed with the ledger key and chained like the ledger's.
CREATE TABLE request_log_checkpoints (
    seq       BIGINT PRIMARY KEY,
    hash      BYTEA  NOT NULL,
    at        BIGINT NOT NULL,
    key_id    TEXT   NOT NULL,
    signature BYTEA  NOT NULL,
    prev      BYTEA
);
CREATE TRIGGER request_log_checkpoints_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON request_log_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION request_log_append_only();
