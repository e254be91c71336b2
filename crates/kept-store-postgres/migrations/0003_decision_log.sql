-- The decision log: denied decisions and a sample of allowed ones, as they were answered.
-- Written in batches off the request path, read newest first (by id) by the privacy team.
-- `subject_id` is NULL for a subject Kept did not know; no foreign key, as for the ledger: the
-- log outlives the subject's data. `categories`, `evidence` and `obligations` are JSON arrays.
CREATE TABLE decision_log (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT  NOT NULL,
    subject_id  BIGINT,
    purpose     TEXT    NOT NULL,
    channel     TEXT,
    topic       TEXT,
    categories  TEXT    NOT NULL,
    allowed     BOOLEAN NOT NULL,
    reason      TEXT    NOT NULL,
    evidence    TEXT    NOT NULL,
    obligations TEXT    NOT NULL,
    caller      TEXT    NOT NULL
);
CREATE INDEX decision_log_subject ON decision_log (subject_id, id);
CREATE INDEX decision_log_reason ON decision_log (reason, id);
