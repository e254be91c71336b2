-- What a delivery carries: a collected event forwarded while the decision allows it, or an
-- obligation the company owes the system (an erasure or a withdrawal to carry out), which no
-- decision gates. Every delivery queued before kinds existed forwarded an event.
ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'event'
    CHECK (kind IN ('event', 'obligation'));
