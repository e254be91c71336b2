-- The gates data subject requests put on a subject's data: a restriction (GDPR Art. 18), an
-- objection (Art. 21), an opt-out of sale or sharing and a limit on the use of sensitive data
-- (Cal. Civ. Code 1798.120, 1798.121). One row per request, written when it enters
-- `in_progress`; `purposes` and `categories` are the request's scope (JSON arrays of keys).
-- Only a restriction is lifted (`lifted_at`); the others stand.
CREATE TABLE subject_restrictions (
    request_id BIGINT PRIMARY KEY REFERENCES requests (id),
    subject_id BIGINT NOT NULL REFERENCES subjects (id),
    kind       TEXT   NOT NULL CHECK (kind IN ('restriction', 'objection', 'opt_out_of_sale',
                                               'limit_sensitive')),
    purposes   TEXT   NOT NULL,
    categories TEXT   NOT NULL,
    since      BIGINT NOT NULL,
    lifted_at  BIGINT
);
CREATE INDEX subject_restrictions_in_force ON subject_restrictions (subject_id)
    WHERE lifted_at IS NULL;

-- The corrections a rectification request carries (GDPR Art. 16, Cal. Civ. Code 1798.106):
-- the trait or identifier each sets (`trait:<key>`, `identifier:<kind>`) and its new value,
-- sealed with the subject's data key, so an erasure shreds it with everything else. The
-- request's intake record holds a keyed digest of them, not the values.
CREATE TABLE request_corrections (
    request_id BIGINT NOT NULL REFERENCES requests (id),
    target     TEXT   NOT NULL,
    sealed     BYTEA  NOT NULL,
    PRIMARY KEY (request_id, target)
);
