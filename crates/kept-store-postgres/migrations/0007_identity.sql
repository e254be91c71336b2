-- Two kinds of write key, verified identifiers, and the identity log of merges.

-- `collect` keys were the one write key; such a key may sit in a web page, so it becomes a
-- `public` key (fail closed). The shop's servers get a `server` key: `kept keys create --role server`.
UPDATE api_keys SET role = 'public' WHERE role = 'collect';

-- An identifier is verified when it arrived through a server key, an identity token, a
-- confirmed double opt-in or a signed link. What was stored before cannot say: not verified.
ALTER TABLE identities ADD COLUMN verified BOOLEAN NOT NULL DEFAULT FALSE;

-- Every merge, and every undo of one: who asked (the API key), when, and both subjects.
CREATE TABLE identity_log (
    id              BIGSERIAL PRIMARY KEY,
    action          TEXT   NOT NULL CHECK (action IN ('merge', 'undo')),
    from_subject_id BIGINT NOT NULL REFERENCES subjects (id),
    into_subject_id BIGINT NOT NULL REFERENCES subjects (id),
    cause           TEXT   NOT NULL,
    key_id          TEXT,
    at              BIGINT NOT NULL,
    undone_at       BIGINT,
    undoes          BIGINT REFERENCES identity_log (id)
);
CREATE INDEX identity_log_from ON identity_log (from_subject_id);

-- What a merge moved, so that it can be undone: the identifiers, and the traits the merged
-- subject had (until the merge is undone, or the traits expire, or the subject is deleted).
CREATE TABLE identity_log_identities (
    log_id BIGINT NOT NULL REFERENCES identity_log (id),
    hash   BYTEA  NOT NULL,
    PRIMARY KEY (log_id, hash)
);

CREATE TABLE identity_log_traits (
    log_id           BIGINT NOT NULL REFERENCES identity_log (id),
    subject_id       BIGINT NOT NULL REFERENCES subjects (id) ON DELETE CASCADE,
    key              TEXT   NOT NULL,
    value            JSONB  NOT NULL,
    category         TEXT   NOT NULL,
    collection_point TEXT   NOT NULL,
    notice_id        TEXT   NOT NULL,
    notice_version   BIGINT NOT NULL,
    collected_at     BIGINT NOT NULL,
    source           TEXT   NOT NULL,
    PRIMARY KEY (log_id, key)
);
CREATE INDEX identity_log_traits_subject ON identity_log_traits (subject_id);
