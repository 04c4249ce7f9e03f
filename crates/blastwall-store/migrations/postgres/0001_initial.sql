-- Blastwall's schema, PostgreSQL flavour. Times are BIGINT unix microseconds (UTC); the audit log
-- keeps its `at` as the RFC 3339 text that is hashed. See src/sql.rs for the shared statements.

CREATE TABLE environments (
    name               TEXT PRIMARY KEY NOT NULL,
    tier               TEXT NOT NULL CHECK (tier IN ('prod', 'nonprod')),
    max_token_ttl_secs BIGINT NOT NULL CHECK (max_token_ttl_secs >= 0),
    recipient          TEXT NOT NULL
);

CREATE TABLE upstreams (
    name       TEXT PRIMARY KEY NOT NULL,
    profile    TEXT NOT NULL,
    base_url   TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE credentials (
    upstream   TEXT NOT NULL REFERENCES upstreams (name),
    env        TEXT NOT NULL REFERENCES environments (name),
    sealed     BYTEA NOT NULL,
    recipient  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (upstream, env)
);

CREATE TABLE tokens (
    id           TEXT PRIMARY KEY NOT NULL,
    kind         TEXT NOT NULL,
    env          TEXT NOT NULL REFERENCES environments (name),
    owner        TEXT NOT NULL,
    holder       TEXT NOT NULL,
    scope        TEXT NOT NULL,
    digest       TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    last_used_at BIGINT
);

CREATE INDEX tokens_by_env ON tokens (env, created_at);
CREATE INDEX tokens_by_revocation ON tokens (revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE audit_log (
    seq       BIGINT PRIMARY KEY NOT NULL,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    env       TEXT,
    target    TEXT,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);

CREATE TABLE checkpoints (
    seq       BIGINT NOT NULL,
    hash      TEXT NOT NULL,
    at        TEXT NOT NULL,
    key       TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (seq, key)
);
