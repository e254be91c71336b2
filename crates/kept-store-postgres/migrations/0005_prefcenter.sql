-- The preference center: ids of single-use links already spent (kept until they expire, so a
-- link opens a session once), and erasure requests with the deadline the law sets.
CREATE TABLE spent_tokens (
    id         TEXT   PRIMARY KEY,
    expires_at BIGINT NOT NULL,
    spent_at   BIGINT NOT NULL
);
CREATE INDEX spent_tokens_expiry ON spent_tokens (expires_at);

CREATE TABLE erasure_requests (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject_id   BIGINT NOT NULL REFERENCES subjects (id),
    regime       TEXT   NOT NULL,
    source       TEXT   NOT NULL,
    state        TEXT   NOT NULL CHECK (state IN ('received', 'completed', 'refused')),
    requested_at BIGINT NOT NULL,
    due_at       BIGINT NOT NULL
);
CREATE INDEX erasure_requests_subject ON erasure_requests (subject_id, id);
-- At most one open request per subject.
CREATE UNIQUE INDEX erasure_requests_open ON erasure_requests (subject_id) WHERE state = 'received';
