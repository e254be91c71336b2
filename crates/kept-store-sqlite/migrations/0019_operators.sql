-- The console's operators, their sessions, and the audit log of what they did.
CREATE TABLE operators (
    id             INTEGER PRIMARY KEY,
    email          TEXT    NOT NULL UNIQUE,
    role           TEXT    NOT NULL,
    password_hash  TEXT    NOT NULL,
    totp_secret    BLOB    NOT NULL,
    totp_last_step INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    disabled_at    INTEGER
) STRICT;

-- The cookie carries a random token; only its digest is kept here.
CREATE TABLE operator_sessions (
    id           TEXT    PRIMARY KEY,
    operator_id  INTEGER NOT NULL REFERENCES operators (id),
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    revoked_at   INTEGER
) STRICT;
CREATE INDEX operator_sessions_operator ON operator_sessions (operator_id);
CREATE INDEX operator_sessions_expiry ON operator_sessions (expires_at);

CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    operator_id INTEGER,
    actor       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    target      TEXT,
    detail      TEXT
) STRICT;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
