-- First-party collection: identities (by keyed hash, values sealed per subject), merges,
-- events, and the collection point each write key collects at by default.

-- A subject's data key, wrapped by the server's master key. Deleting the row shreds every value
-- sealed under it (erasure).
CREATE TABLE subject_keys (
    subject_id INTEGER PRIMARY KEY REFERENCES subjects (id),
    wrapped    BLOB    NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

-- Identifiers by keyed hash. `sealed` is the normalised value sealed under the data key of
-- `key_subject_id` (its first holder); a merge moves `subject_id` and leaves the seal as it is.
CREATE TABLE identities (
    hash           BLOB    PRIMARY KEY,
    kind           TEXT    NOT NULL
        CHECK (kind IN ('user_id', 'email', 'phone', 'anonymous_id')),
    subject_id     INTEGER NOT NULL REFERENCES subjects (id),
    key_subject_id INTEGER NOT NULL REFERENCES subjects (id),
    sealed         BLOB    NOT NULL,
    created_at     INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX identities_subject ON identities (subject_id, kind);

-- A subject merged into another. Its id stays (the index is dense); reads of the survivor
-- follow these rows.
CREATE TABLE merges (
    from_subject_id INTEGER PRIMARY KEY REFERENCES subjects (id),
    into_subject_id INTEGER NOT NULL REFERENCES subjects (id),
    reason          TEXT    NOT NULL,
    at              INTEGER NOT NULL,
    CHECK (from_subject_id <> into_subject_id)
) STRICT;
CREATE INDEX merges_into ON merges (into_subject_id);

-- The consent snapshots events carried, each stored once: most events of a site carry one of
-- a handful, and an event row then holds a 16-byte reference instead of the whole snapshot.
CREATE TABLE event_consents (
    hash    BLOB PRIMARY KEY,
    consent TEXT NOT NULL
) STRICT, WITHOUT ROWID;

-- Events. No foreign key to subjects: they are batched through the group committer, like
-- contacts. A client's retry carries the same message id: (source, message_id) is unique.
CREATE TABLE events (
    id           INTEGER PRIMARY KEY,
    source       TEXT    NOT NULL,
    message_id   TEXT    NOT NULL,
    subject_id   INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    name         TEXT,
    at           INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    retain_until INTEGER NOT NULL,
    consent_hash BLOB    NOT NULL,
    properties   TEXT    NOT NULL,
    context      TEXT    NOT NULL,
    UNIQUE (source, message_id)
) STRICT;
CREATE INDEX events_subject ON events (subject_id, id);
CREATE INDEX events_retain ON events (retain_until);
CREATE INDEX events_received ON events (received_at);

CREATE TABLE api_key_collection_points (
    key_id           TEXT PRIMARY KEY REFERENCES api_keys (id),
    collection_point TEXT NOT NULL
) STRICT, WITHOUT ROWID;
