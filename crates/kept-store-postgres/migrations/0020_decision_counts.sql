-- Logged decisions counted per day (UTC, by when they were asked) and reason, in the same
-- transaction as the log's entries: the console's overview reads a week of them without
-- scanning the log. Counts hold no personal data, so they outlive the log's retention and a
-- subject's erasure.
CREATE TABLE decision_counts (
    day     BIGINT  NOT NULL,
    reason  TEXT    NOT NULL,
    allowed BOOLEAN NOT NULL,
    count   BIGINT  NOT NULL CHECK (count >= 0),
    PRIMARY KEY (day, reason)
);
