-- The quarantine: collected messages rejected one by one (a batch's unreadable message, a
-- public key speaking for a known customer without a token), kept for seven days so that
-- nothing a client sent is lost silently. The message is sealed by the server (`sealed`:
-- nonce, ciphertext, tag); the rest says who sent it, when, and why it was rejected. No subject:
-- a rejected message may name none.
CREATE TABLE quarantine (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at BIGINT NOT NULL,
    key_id      TEXT   NOT NULL,
    key_name    TEXT   NOT NULL,
    position    BIGINT NOT NULL,
    code        TEXT   NOT NULL,
    path        TEXT   NOT NULL,
    message     TEXT   NOT NULL,
    sealed      BYTEA  NOT NULL
);
CREATE INDEX quarantine_received ON quarantine (received_at);
