-- A subject's last interaction with the company that the ledger and the preferences do not
-- already record: its own collected events and preference-center visits. Colorado's consent
-- for sensitive data is refreshed 24 months after the last interaction (4 CCR 904-3 Rule 7.08).
ALTER TABLE subjects ADD COLUMN last_interaction_at BIGINT;
-- When a logged decision was asked; `at` is the time it was decided for (a scheduled send's
-- `at`). Entries logged before this column have NULL: they were decided for when asked.
ALTER TABLE decision_log ADD COLUMN asked_at BIGINT;
