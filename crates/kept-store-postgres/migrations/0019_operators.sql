-- The console's operators, their sessions, and the audit log of what they did.
CREATE TABLE operators (
    id             BIGSERIAL PRIMARY KEY,
    email          TEXT   NOT NULL UNIQUE,
    role           TEXT   NOT NULL,
    password_hash  TEXT   NOT NULL,
    totp_secret    BYTEA  NOT NULL,
    totp_last_step BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    disabled_at    BIGINT
);

-- The cookie carries a random token; only its digest is kept here.
CREATE TABLE operator_sessions (
    id           TEXT   PRIMARY KEY,
    operator_id  BIGINT NOT NULL REFERENCES operators (id),
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
CREATE INDEX operator_sessions_operator ON operator_sessions (operator_id);
CREATE INDEX operator_sessions_expiry ON operator_sessions (expires_at);

CREATE TABLE audit_log (
    seq         BIGSERIAL PRIMARY KEY,
    at          BIGINT NOT NULL,
    operator_id BIGINT,
    actor       TEXT   NOT NULL,
    action      TEXT   NOT NULL,
    target      TEXT,
    detail      TEXT
);
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
