-- The record of uses: every webhook forward, audience export, recorded contact and profile
-- read, with the decision it went ahead under. Never sampled, never dropped, not pruned: like the ledger it
-- is evidence, and names the subject by its dense id only (no foreign key, it outlives the
-- subject's data). A use names one subject (`subject_id`) or, for an export, a set of them
-- (`subjects`, a portable roaring bitmap holding `subject_count` ids). `categories` is a JSON
-- array, `evidence` the decision's evidence as the API answers it (for a set, a summary).
CREATE TABLE uses (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            BIGINT  NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('forward', 'export', 'contact', 'profile')),
    subject_id    BIGINT,
    subjects      BYTEA,
    subject_count BIGINT  NOT NULL,
    purpose       TEXT    NOT NULL,
    channel       TEXT,
    topic         TEXT,
    categories    TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    evidence      TEXT    NOT NULL,
    actor         TEXT    NOT NULL,
    reference     TEXT,
    CHECK ((subject_id IS NULL) <> (subjects IS NULL))
);
CREATE INDEX uses_subject ON uses (subject_id, id);
-- Sets are few (one per export and reason); the read of a subject's uses scans them all.
CREATE INDEX uses_sets ON uses (id) WHERE subjects IS NOT NULL;
-- A retried webhook delivery is one use.
CREATE UNIQUE INDEX uses_forward ON uses (reference, purpose) WHERE kind = 'forward';
