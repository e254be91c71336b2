-- Erasure: a subject erased keeps its row as a tombstone (`erased_at`), so that its id is never
-- given to anyone else and the ledger's and the requests log's subject ids keep their meaning;
-- everything else it had is deleted in the same transaction, but what the law requires.

ALTER TABLE subjects ADD COLUMN erased_at BIGINT;

-- Set when a subject is found holding an identifier on the suppression list: every use for a
-- purpose that is not essential is denied from then on.
ALTER TABLE subjects ADD COLUMN erasure_suppressed_at BIGINT;

-- The suppression list: the keyed hash of each identifier an erased subject held (the same hash
-- identity lookups use), with the request that erased it. Nothing else: GDPR allows keeping only
-- the minimum needed to honour the erasure (a later import must not bring the person back into
-- campaigns). No foreign key: it outlives the subject's data by design.
CREATE TABLE suppressions (
    hash          BYTEA  PRIMARY KEY,
    request_id    BIGINT,
    suppressed_at BIGINT NOT NULL
);
