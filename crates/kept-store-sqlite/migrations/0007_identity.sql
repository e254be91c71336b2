-- Two kinds of write key, verified identifiers, and the identity log of merges.

-- `collect` keys were the one write key; such a key may sit in a web page, so it becomes a
-- `public` key (fail closed). The shop's servers get a `server` key: `kept keys create --role server`.
UPDATE api_keys SET role = 'public' WHERE role = 'collect';

-- An identifier is verified when it arrived through a server key, an identity token, a
-- confirmed double opt-in or a signed link. What was stored before cannot say: not verified.
ALTER TABLE identities ADD COLUMN verified INTEGER NOT NULL DEFAULT 0 CHECK (verified IN (0, 1));

-- Every merge, and every undo of one: who asked (the API key), when, and both subjects.
CREATE TABLE identity_log (
    id              INTEGER PRIMARY KEY,
    action          TEXT    NOT NULL CHECK (action IN ('merge', 'undo')),
    from_subject_id INTEGER NOT NULL REFERENCES subjects (id),
    into_subject_id INTEGER NOT NULL REFERENCES subjects (id),
    cause           TEXT    NOT NULL,
    key_id          TEXT,
    at              INTEGER NOT NULL,
    undone_at       INTEGER,
    undoes          INTEGER REFERENCES identity_log (id)
) STRICT;
CREATE INDEX identity_log_from ON identity_log (from_subject_id);

-- What a merge moved, so that it can be undone: the identifiers, and the traits the merged
-- subject had (until the merge is undone, or the traits expire, or the subject is deleted).
CREATE TABLE identity_log_identities (
    log_id INTEGER NOT NULL REFERENCES identity_log (id),
    hash   BLOB    NOT NULL,
    PRIMARY KEY (log_id, hash)
) STRICT, WITHOUT ROWID;

CREATE TABLE identity_log_traits (
    log_id           INTEGER NOT NULL REFERENCES identity_log (id),
    subject_id       INTEGER NOT NULL REFERENCES subjects (id) ON DELETE CASCADE,
    key              TEXT    NOT NULL,
    value            TEXT    NOT NULL CHECK (json_valid(value)),
    category         TEXT    NOT NULL,
    collection_point TEXT    NOT NULL,
    notice_id        TEXT    NOT NULL,
    notice_version   INTEGER NOT NULL,
    collected_at     INTEGER NOT NULL,
    source           TEXT    NOT NULL,
    PRIMARY KEY (log_id, key)
) STRICT, WITHOUT ROWID;
CREATE INDEX identity_log_traits_subject ON identity_log_traits (subject_id);
