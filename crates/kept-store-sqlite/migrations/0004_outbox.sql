-- The webhook outbox: one row per (event, system) to deliver. Rows stay after delivery (with the
-- payload emptied) so that a client's retry of the same event cannot queue it twice.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id      TEXT    NOT NULL UNIQUE,
    event_id        TEXT    NOT NULL,
    system          TEXT    NOT NULL,
    subject_id      INTEGER NOT NULL REFERENCES subjects (id),
    payload         TEXT    NOT NULL,
    state           TEXT    NOT NULL
        CHECK (state IN ('pending', 'delivered', 'dead', 'suppressed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    UNIQUE (event_id, system)
) STRICT;
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX outbox_dead ON outbox (id) WHERE state = 'dead';
CREATE INDEX outbox_subject ON outbox (subject_id);
