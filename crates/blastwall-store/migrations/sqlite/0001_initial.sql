-- Blastwall's schema, SQLite flavour. Times are INTEGER unix microseconds (UTC); the audit log
-- keeps its `at` as the RFC 3339 text that is hashed. See src/sql.rs for the shared statements.

CREATE TABLE environments (
    name               TEXT PRIMARY KEY NOT NULL,
    tier               TEXT NOT NULL CHECK (tier IN ('prod', 'nonprod')),
    max_token_ttl_secs INTEGER NOT NULL CHECK (max_token_ttl_secs >= 0),
    recipient          TEXT NOT NULL
) STRICT;

CREATE TABLE upstreams (
    name       TEXT PRIMARY KEY NOT NULL,
    profile    TEXT NOT NULL,
    base_url   TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE credentials (
    upstream   TEXT NOT NULL REFERENCES upstreams (name),
    env        TEXT NOT NULL REFERENCES environments (name),
    sealed     BLOB NOT NULL,
    recipient  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (upstream, env)
) STRICT;

CREATE TABLE tokens (
    id           TEXT PRIMARY KEY NOT NULL,
    kind         TEXT NOT NULL,
    env          TEXT NOT NULL REFERENCES environments (name),
    owner        TEXT NOT NULL,
    holder       TEXT NOT NULL,
    scope        TEXT NOT NULL,
    digest       TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    last_used_at INTEGER
) STRICT;

CREATE INDEX tokens_by_env ON tokens (env, created_at);
CREATE INDEX tokens_by_revocation ON tokens (revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY NOT NULL,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    env       TEXT,
    target    TEXT,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
) STRICT;

CREATE TABLE checkpoints (
    seq       INTEGER NOT NULL,
    hash      TEXT NOT NULL,
    at        TEXT NOT NULL,
    key       TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (seq, key)
) STRICT;
