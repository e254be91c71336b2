-- What each notice version said, beside its hash: recorded at start with the hash, in the same
-- transaction, and never overwritten, so the console can show how a notice's text changed
-- between two versions. Keyed by the hash too, so a text changed without a new version number
-- is kept as well. `content` is the notice's canonical JSON (titles and texts per language,
-- categories, purposes, channels). Versions recorded before this table have a hash only.
CREATE TABLE notice_texts (
    notice_id   TEXT    NOT NULL,
    version     BIGINT  NOT NULL,
    hash        TEXT    NOT NULL,
    content     TEXT    NOT NULL,
    recorded_at BIGINT  NOT NULL,
    PRIMARY KEY (notice_id, version, hash)
);
