-- The decision log: denied decisions and a sample of allowed ones, as they were answered.
-- Written in batches off the request path, read newest first (by id) by the privacy team.
-- `subject_id` is NULL for a subject Kept did not know; no foreign key, as for the ledger: the
-- log outlives the subject's data. `categories`, `evidence` and `obligations` are JSON arrays.
CREATE TABLE decision_log (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    subject_id  INTEGER,
    purpose     TEXT    NOT NULL,
    channel     TEXT,
    topic       TEXT,
    categories  TEXT    NOT NULL,
    allowed     INTEGER NOT NULL CHECK (allowed IN (0, 1)),
    reason      TEXT    NOT NULL,
    evidence    TEXT    NOT NULL,
    obligations TEXT    NOT NULL,
    caller      TEXT    NOT NULL
) STRICT;
-- The rowid (id) is part of every index entry, so these also read newest first.
CREATE INDEX decision_log_subject ON decision_log (subject_id);
CREATE INDEX decision_log_reason ON decision_log (reason);
