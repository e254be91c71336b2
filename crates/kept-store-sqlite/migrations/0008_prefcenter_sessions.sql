-- Preference-center sessions, kept on the server so they can end: the cookie carries the id
-- (signed), and a session counts only while its row is neither expired nor revoked.
CREATE TABLE prefcenter_sessions (
    id         TEXT    PRIMARY KEY,
    subject_id INTEGER NOT NULL REFERENCES subjects (id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;
CREATE INDEX prefcenter_sessions_subject ON prefcenter_sessions (subject_id);
CREATE INDEX prefcenter_sessions_expiry ON prefcenter_sessions (expires_at);
