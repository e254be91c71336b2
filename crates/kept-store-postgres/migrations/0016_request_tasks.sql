-- The work a data subject request owes: one task per target (`kept`, `dataset:<name>`,
-- `system:<name>`), created when the request enters `in_progress`. A request completes once
-- every task is done or handled by hand; settling a task is also a record of the requests log,
-- written in the same transaction.
CREATE TABLE request_tasks (
    request_id BIGINT NOT NULL REFERENCES requests (id),
    target     TEXT   NOT NULL,
    state      TEXT   NOT NULL CHECK (state IN ('pending', 'done', 'failed', 'handled')),
    detail     TEXT,
    attempts   BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (request_id, target)
);
