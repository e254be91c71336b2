-- Kept's schema on SQLite. STRICT tables so a column holds only its declared type; times are
-- milliseconds since the Unix epoch, UTC.

-- The consent ledger. `bytes` is the canonical encoding exactly as written and `hash` its chain
-- hash; `subject_id` and `at` are derived from the bytes for lookups (verify cross-checks them).
-- No foreign key to subjects: one bad record must not fail the other writers of its batch, and
-- the ledger outlives everything else a subject has.
CREATE TABLE ledger (
    seq        INTEGER PRIMARY KEY,
    subject_id INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    bytes      BLOB    NOT NULL,
    hash       BLOB    NOT NULL
) STRICT;
-- The rowid (seq) is part of every index entry, so this also orders by seq.
CREATE INDEX ledger_subject ON ledger (subject_id);

-- Append-only: a change or removal needs these triggers dropped first, which `kept ledger
-- verify` still catches, but which no honest code path does by accident.
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'the consent ledger is append-only');
END;
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'the consent ledger is append-only');
END;

CREATE TABLE ledger_checkpoints (
    seq       INTEGER PRIMARY KEY,
    hash      BLOB    NOT NULL,
    at        INTEGER NOT NULL,
    key_id    TEXT    NOT NULL,
    signature BLOB    NOT NULL
) STRICT;

CREATE TABLE notice_hashes (
    notice_id   TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    hash        TEXT    NOT NULL,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (notice_id, version)
) STRICT, WITHOUT ROWID;

CREATE TABLE api_keys (
    id         TEXT    PRIMARY KEY,
    hash       BLOB    NOT NULL UNIQUE,
    role       TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT, WITHOUT ROWID;

-- Dense ids from 0, assigned by the store in insert order; subjects are never deleted (erasure
-- shreds their data and keeps the id, so the index stays dense).
CREATE TABLE subjects (
    id                   INTEGER PRIMARY KEY,
    user_id              TEXT UNIQUE,
    country              TEXT,
    region               TEXT,
    time_zone            TEXT,
    created_at           INTEGER NOT NULL,
    erasure_requested_at INTEGER,
    suppressed           INTEGER NOT NULL DEFAULT 0 CHECK (suppressed IN (0, 1))
) STRICT;

CREATE TABLE traits (
    subject_id       INTEGER NOT NULL REFERENCES subjects (id) ON DELETE CASCADE,
    key              TEXT    NOT NULL,
    value            TEXT    NOT NULL CHECK (json_valid(value)),
    category         TEXT    NOT NULL,
    collection_point TEXT    NOT NULL,
    notice_id        TEXT    NOT NULL,
    notice_version   INTEGER NOT NULL,
    collected_at     INTEGER NOT NULL,
    source           TEXT    NOT NULL,
    PRIMARY KEY (subject_id, key)
) STRICT, WITHOUT ROWID;

CREATE TABLE channel_preferences (
    subject_id       INTEGER NOT NULL REFERENCES subjects (id) ON DELETE CASCADE,
    channel          TEXT    NOT NULL,
    frequency_max    INTEGER,
    frequency_period TEXT,
    quiet_start      INTEGER,
    quiet_end        INTEGER,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (subject_id, channel)
) STRICT, WITHOUT ROWID;

-- Messages sent, for frequency caps. No foreign key for the same reason as the ledger: contacts
-- are batched through the group committer.
CREATE TABLE contacts (
    id         INTEGER PRIMARY KEY,
    subject_id INTEGER NOT NULL,
    channel    TEXT    NOT NULL,
    purpose    TEXT    NOT NULL,
    topic      TEXT,
    at         INTEGER NOT NULL
) STRICT;
CREATE INDEX contacts_at ON contacts (at);
CREATE INDEX contacts_subject ON contacts (subject_id, at);
