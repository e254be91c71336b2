-- Kept's schema on PostgreSQL. Times are milliseconds since the Unix epoch, UTC (BIGINT), so
-- both backends store the same values.

-- The consent ledger. `bytes` is the canonical encoding exactly as written and `hash` its chain
-- hash; `subject_id` and `at` are derived from the bytes for lookups (verify cross-checks them).
-- No foreign key to subjects: one bad record must not fail the other writers of its batch, and
-- the ledger outlives everything else a subject has.
CREATE TABLE ledger (
    seq        BIGINT PRIMARY KEY,
    subject_id BIGINT NOT NULL,
    at         BIGINT NOT NULL,
    bytes      BYTEA  NOT NULL,
    hash       BYTEA  NOT NULL
);
CREATE INDEX ledger_subject ON ledger (subject_id, seq);

-- The chain's tip. Every append locks this one row (`FOR UPDATE`) before reading it, so several
-- Kept servers on one database extend the chain one after the other.
CREATE TABLE ledger_tip (
    id   SMALLINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash BYTEA  NOT NULL
);
INSERT INTO ledger_tip (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));

-- Append-only: a change or removal needs this trigger dropped first, which `kept ledger verify`
-- still catches, but which no honest code path does by accident.
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the consent ledger is append-only';
END;
$$;
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

CREATE TABLE ledger_checkpoints (
    seq       BIGINT PRIMARY KEY,
    hash      BYTEA  NOT NULL,
    at        BIGINT NOT NULL,
    key_id    TEXT   NOT NULL,
    signature BYTEA  NOT NULL
);

CREATE TABLE notice_hashes (
    notice_id   TEXT   NOT NULL,
    version     BIGINT NOT NULL,
    hash        TEXT   NOT NULL,
    recorded_at BIGINT NOT NULL,
    PRIMARY KEY (notice_id, version)
);

CREATE TABLE api_keys (
    id         TEXT   PRIMARY KEY,
    hash       BYTEA  NOT NULL UNIQUE,
    role       TEXT   NOT NULL,
    name       TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE settings (
    key   TEXT  PRIMARY KEY,
    value BYTEA NOT NULL
);

-- Dense ids from 0 in insert order. A sequence would leave holes after a rollback, so the next
-- id lives in a one-row table whose update is rolled back with the insert.
CREATE TABLE subject_next_id (
    id   SMALLINT PRIMARY KEY CHECK (id = 1),
    next BIGINT NOT NULL
);
INSERT INTO subject_next_id (id, next) VALUES (1, 0);

CREATE TABLE subjects (
    id                   BIGINT PRIMARY KEY,
    user_id              TEXT UNIQUE,
    country              TEXT,
    region               TEXT,
    time_zone            TEXT,
    created_at           BIGINT  NOT NULL,
    erasure_requested_at BIGINT,
    suppressed           BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE traits (
    subject_id       BIGINT NOT NULL REFERENCES subjects (id) ON DELETE CASCADE,
    key              TEXT   NOT NULL,
    value            JSONB  NOT NULL,
    category         TEXT   NOT NULL,
    collection_point TEXT   NOT NULL,
    notice_id        TEXT   NOT NULL,
    notice_version   BIGINT NOT NULL,
    collected_at     BIGINT NOT NULL,
    source           TEXT   NOT NULL,
    PRIMARY KEY (subject_id, key)
);

CREATE TABLE channel_preferences (
    subject_id       BIGINT NOT NULL REFERENCES subjects (id) ON DELETE CASCADE,
    channel          TEXT   NOT NULL,
    frequency_max    BIGINT,
    frequency_period TEXT,
    quiet_start      BIGINT,
    quiet_end        BIGINT,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (subject_id, channel)
);

-- Messages sent, for frequency caps. No foreign key for the same reason as the ledger: contacts
-- are batched through the group committer.
CREATE TABLE contacts (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject_id BIGINT NOT NULL,
    channel    TEXT   NOT NULL,
    purpose    TEXT   NOT NULL,
    topic      TEXT,
    at         BIGINT NOT NULL
);
CREATE INDEX contacts_at ON contacts (at);
CREATE INDEX contacts_subject ON contacts (subject_id, at);
