//! What both backends share: the SQL statements (written once: SQLite accepts PostgreSQL's `$N`
//! placeholders), the conversion of rows into domain records, and the [`impl_store!`] macro that
//! implements [`Store`](crate::Store) for a backend from its pool and its way of starting a
//! write transaction.
//!
//! Storage conventions (both backends):
//! - times are integers, unix **microseconds** UTC (so sub-microsecond precision is dropped);
//! - token scopes are JSON arrays of pattern strings; token digests lowercase hex, unique;
//! - an audit entry's fields are stored exactly as hashed (its `at` stays RFC 3339 text).
//!
//! Every mutating method runs in one write transaction that first serialises against every other
//! writer (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: a `SHARE ROW EXCLUSIVE` lock on `audit_log`),
//! then writes its change, reads the chain head, and appends its entry, so the chain stays linear
//! with several processes appending at once.

use std::time::Duration;

use blastwall_core::audit::{AuditEntry, AuditRecord, Checkpoint, GENESIS, decode_hash};
use blastwall_core::operation::OperationPattern;
use blastwall_core::principal::PrincipalName;
use blastwall_core::record::{SealedCredential, TokenId, TokenRecord, UpstreamRecord};
use blastwall_core::{CredentialKind, EnvName, Environment, TokenDigest};
use jiff::Timestamp;

use crate::error::StoreError;

pub(crate) const ENV_INSERT: &str =
    "INSERT INTO environments (name, tier, max_token_ttl_secs, recipient) VALUES ($1, $2, $3, $4)";
pub(crate) const ENV_LIST: &str =
    "SELECT name, tier, max_token_ttl_secs, recipient FROM environments ORDER BY name";
pub(crate) const ENV_GET: &str =
    "SELECT name, tier, max_token_ttl_secs, recipient FROM environments WHERE name = $1";
pub(crate) const ENV_EXISTS: &str = "SELECT COUNT(*) FROM environments WHERE name = $1";

pub(crate) const UPSTREAM_INSERT: &str =
    "INSERT INTO upstreams (name, profile, base_url, created_at) VALUES ($1, $2, $3, $4)";
pub(crate) const UPSTREAM_LIST: &str =
    "SELECT name, profile, base_url, created_at FROM upstreams ORDER BY name";
pub(crate) const UPSTREAM_GET: &str =
    "SELECT name, profile, base_url, created_at FROM upstreams WHERE name = $1";
pub(crate) const UPSTREAM_EXISTS: &str = "SELECT COUNT(*) FROM upstreams WHERE name = $1";

pub(crate) const CREDENTIAL_PUT: &str = "INSERT INTO credentials \
     (upstream, env, sealed, recipient, created_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (upstream, env) DO UPDATE SET sealed = excluded.sealed, \
     recipient = excluded.recipient, created_at = excluded.created_at";
pub(crate) const CREDENTIAL_GET: &str = "SELECT upstream, env, sealed, recipient, created_at \
     FROM credentials WHERE upstream = $1 AND env = $2";
pub(crate) const CREDENTIAL_LIST: &str = "SELECT upstream, env, sealed, recipient, created_at \
     FROM credentials ORDER BY upstream, env";

const TOKEN_COLUMNS: &str = "id, kind, env, owner, holder, scope, digest, created_at, expires_at, \
     revoked_at, last_used_at";
pub(crate) const TOKEN_INSERT: &str = "INSERT INTO tokens (id, kind, env, owner, holder, scope, \
     digest, created_at, expires_at, revoked_at, last_used_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
pub(crate) const TOKEN_REVOKE: &str =
    "UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL";
pub(crate) const TOKEN_EXISTS: &str = "SELECT COUNT(*) FROM tokens WHERE id = $1";
/// Only moves `last_used_at` forward, so concurrent touches never step it back.
pub(crate) const TOKEN_TOUCH: &str = "UPDATE tokens SET last_used_at = $1 \
     WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)";
/// Ids asked about in one query (SQLite binds at most 32,766 parameters).
pub(crate) const IDS_PER_QUERY: usize = 500;

pub(crate) const TOKENS_REVOKED_SINCE: &str =
    "SELECT id FROM tokens WHERE revoked_at >= $1 ORDER BY revoked_at, id";

pub(crate) const AUDIT_HEAD: &str = "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1";
pub(crate) const AUDIT_INSERT: &str = "INSERT INTO audit_log \
     (seq, at, actor, action, env, target, detail, prev_hash, hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
/// The start of a multi-row audit insert (`QueryBuilder::push_values` adds the rows).
pub(crate) const AUDIT_INSERT_MANY: &str = "INSERT INTO audit_log \
     (seq, at, actor, action, env, target, detail, prev_hash, hash) ";
/// Rows per multi-row insert, largest first: 9 parameters each stays far below SQLite's limit
/// of 32766 parameters per statement (and PostgreSQL's 65535). A batch is cut into chunks of
/// these sizes only, so the few statements there are get prepared once and cached, whatever the
/// batch's length.
pub(crate) const AUDIT_ROWS_PER_INSERT: [usize; 4] = [64, 16, 4, 1];

/// `entries` cut into chunks whose lengths are all in [`AUDIT_ROWS_PER_INSERT`].
pub(crate) fn insert_chunks<T>(entries: &[T]) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut rest = entries;
    for size in AUDIT_ROWS_PER_INSERT {
        while rest.len() >= size {
            let (chunk, tail) = rest.split_at(size);
            out.push(chunk);
            rest = tail;
        }
    }
    out
}
pub(crate) const AUDIT_PAGE: &str = "SELECT seq, at, actor, action, env, target, detail, \
     prev_hash, hash FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2";
pub(crate) const AUDIT_TAIL: &str = "SELECT seq, at, actor, action, env, target, detail, \
     prev_hash, hash FROM (SELECT * FROM audit_log ORDER BY seq DESC LIMIT $1) AS tail \
     ORDER BY seq";

pub(crate) const CHECKPOINT_INSERT: &str = "INSERT INTO checkpoints \
     (seq, hash, at, key, signature) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (seq, key) DO NOTHING";
pub(crate) const CHECKPOINT_LIST: &str =
    "SELECT seq, hash, at, key, signature FROM checkpoints ORDER BY seq, key";
pub(crate) const CHECKPOINT_LAST_SEQ: &str = "SELECT MAX(seq) FROM checkpoints";
pub(crate) const CHECKPOINT_LATEST: &str = "SELECT seq, hash, at, key, signature FROM checkpoints \
     WHERE key = $1 ORDER BY seq DESC LIMIT 1";

/// `SELECT … FROM tokens` with a tail (`WHERE …`, `ORDER BY …`).
pub(crate) fn token_select(tail: &str) -> String {
    format!("SELECT {TOKEN_COLUMNS} FROM tokens {tail}")
}

/// An `environments` row.
pub(crate) type EnvRow = (String, String, i64, String);
/// An `upstreams` row.
pub(crate) type UpstreamRow = (String, String, String, i64);
/// A `credentials` row.
pub(crate) type CredentialRow = (String, String, Vec<u8>, String, i64);
/// A `tokens` row.
pub(crate) type TokenRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
);
/// An `audit_log` row.
pub(crate) type AuditRow = (
    i64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
    String,
);
/// A `checkpoints` row.
pub(crate) type CheckpointRow = (i64, String, String, String, String);

/// A time as stored.
pub(crate) fn micros(t: Timestamp) -> i64 {
    t.as_microsecond()
}

/// A stored time.
pub(crate) fn from_micros(v: i64, what: &dyn Fn() -> String) -> Result<Timestamp, StoreError> {
    Timestamp::from_microsecond(v).map_err(|e| corrupt(what(), format!("bad time {v}: {e}")))
}

/// A [`StoreError::Corrupt`].
pub(crate) fn corrupt(what: String, why: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        what,
        why: why.into(),
    }
}

/// A unique violation becomes [`StoreError::Conflict`] on `what`; anything else stays a database
/// error.
pub(crate) fn conflict_on_unique(e: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict { what: what() }
        }
        _ => StoreError::Database(e),
    }
}

/// Turns a stored environment back into a record.
pub(crate) fn env_from_row(row: EnvRow) -> Result<Environment, StoreError> {
    let (name, tier, ttl, recipient) = row;
    let what = || format!("environment `{name}`");
    let ttl = u64::try_from(ttl).map_err(|_| corrupt(what(), "negative token lifetime"))?;
    Ok(Environment {
        name: EnvName::new(&name).map_err(|e| corrupt(what(), e.to_string()))?,
        tier: tier.parse().map_err(|_| corrupt(what(), "unknown tier"))?,
        max_token_ttl: Duration::from_secs(ttl),
        recipient,
    })
}

/// Turns a stored upstream back into a record.
pub(crate) fn upstream_from_row(row: UpstreamRow) -> Result<UpstreamRecord, StoreError> {
    let (name, profile, base_url, created_at) = row;
    let what = || format!("upstream `{name}`");
    Ok(UpstreamRecord {
        name: EnvName::new(&name).map_err(|e| corrupt(what(), e.to_string()))?,
        profile,
        base_url,
        created_at: from_micros(created_at, &what)?,
    })
}

/// Turns a stored sealed credential back into a record.
pub(crate) fn credential_from_row(row: CredentialRow) -> Result<SealedCredential, StoreError> {
    let (upstream, env, sealed, recipient, created_at) = row;
    let what = || format!("credential of `{upstream}` in `{env}`");
    Ok(SealedCredential {
        upstream: EnvName::new(&upstream).map_err(|e| corrupt(what(), e.to_string()))?,
        env: EnvName::new(&env).map_err(|e| corrupt(what(), e.to_string()))?,
        sealed,
        recipient,
        created_at: from_micros(created_at, &what)?,
    })
}

/// The text a token's kind is stored as.
pub(crate) fn kind_text(kind: CredentialKind) -> String {
    kind.to_string()
}

/// The token's scope as stored (a JSON array of strings).
pub(crate) fn scope_text(scope: &[OperationPattern]) -> Result<String, StoreError> {
    let texts: Vec<String> = scope.iter().map(ToString::to_string).collect();
    serde_json::to_string(&texts).map_err(|e| StoreError::Invalid {
        what: "token scope".into(),
        why: e.to_string(),
    })
}

/// Turns a stored token back into a record.
pub(crate) fn token_from_row(row: TokenRow) -> Result<TokenRecord, StoreError> {
    let (id, kind, env, owner, holder, scope, digest, created, expires, revoked, used) = row;
    let what = || format!("token `{id}`");
    let kind = CredentialKind::ALL
        .into_iter()
        .find(|k| k.to_string() == kind)
        .ok_or_else(|| corrupt(what(), format!("unknown kind `{kind}`")))?;
    let scope: Vec<OperationPattern> =
        serde_json::from_str(&scope).map_err(|e| corrupt(what(), format!("scope: {e}")))?;
    let digest = TokenDigest::from_hex(&digest).ok_or_else(|| corrupt(what(), "bad digest"))?;
    Ok(TokenRecord {
        kind,
        env: EnvName::new(&env).map_err(|e| corrupt(what(), e.to_string()))?,
        owner: PrincipalName::new("owner", &owner).map_err(|e| corrupt(what(), e.to_string()))?,
        holder: PrincipalName::new("holder", &holder)
            .map_err(|e| corrupt(what(), e.to_string()))?,
        scope,
        created_at: from_micros(created, &what)?,
        expires_at: from_micros(expires, &what)?,
        revoked_at: revoked.map(|v| from_micros(v, &what)).transpose()?,
        last_used_at: used.map(|v| from_micros(v, &what)).transpose()?,
        digest: Some(digest),
        id: TokenId(id),
    })
}

/// Turns a stored audit row back into an entry (no check here: `verify_log` checks).
pub(crate) fn audit_from_row(row: AuditRow) -> AuditEntry {
    let (seq, at, actor, action, env, target, detail, prev_hash, hash) = row;
    AuditEntry {
        seq,
        record: AuditRecord {
            at,
            actor,
            action,
            env,
            target,
            detail,
        },
        prev_hash,
        hash,
    }
}

/// Turns a stored checkpoint back into a record.
pub(crate) fn checkpoint_from_row(row: CheckpointRow) -> Checkpoint {
    let (seq, hash, at, key, signature) = row;
    Checkpoint {
        seq,
        hash,
        at,
        key,
        signature,
    }
}

/// Where the next entry goes, given the current head `(seq, hash)`.
pub(crate) fn next_position(head: Option<(i64, String)>) -> Result<(i64, [u8; 32]), StoreError> {
    match head {
        None => Ok((1, GENESIS)),
        Some((seq, hash)) => {
            let prev = decode_hash(&hash).ok_or_else(|| {
                corrupt(
                    format!("audit entry {seq}"),
                    "its hash is not 64 hex digits",
                )
            })?;
            Ok((seq + 1, prev))
        }
    }
}

/// Implements [`Store`](crate::Store) for a backend type that has a `pool: sqlx::Pool<$db>`
/// field and an `async fn begin_write(&self) -> Result<sqlx::Transaction<'static, $db>,
/// StoreError>` that starts a transaction serialised against every other writer.
macro_rules! impl_store {
    ($store:ty, $db:ty, own_threads = $own:expr) => {
        impl $store {
            /// Appends `audit` to the chain inside the write transaction `tx`.
            async fn append_in(
                tx: &mut sqlx::Transaction<'static, $db>,
                audit: blastwall_core::audit::AuditRecord,
            ) -> Result<blastwall_core::audit::AuditEntry, $crate::StoreError> {
                let head: Option<(i64, String)> = sqlx::query_as($crate::sql::AUDIT_HEAD)
                    .fetch_optional(&mut **tx)
                    .await?;
                let (seq, prev) = $crate::sql::next_position(head)?;
                let entry = audit.chain(seq, &prev);
                sqlx::query($crate::sql::AUDIT_INSERT)
                    .bind(entry.seq)
                    .bind(&entry.record.at)
                    .bind(&entry.record.actor)
                    .bind(&entry.record.action)
                    .bind(&entry.record.env)
                    .bind(&entry.record.target)
                    .bind(&entry.record.detail)
                    .bind(&entry.prev_hash)
                    .bind(&entry.hash)
                    .execute(&mut **tx)
                    .await?;
                Ok(entry)
            }

            /// Whether `sql` (a `COUNT(*)` on one key) finds a row, inside `tx`.
            async fn exists_in(
                tx: &mut sqlx::Transaction<'static, $db>,
                sql: &'static str,
                key: &str,
            ) -> Result<bool, $crate::StoreError> {
                let (n,): (i64,) = sqlx::query_as(sql).bind(key).fetch_one(&mut **tx).await?;
                Ok(n > 0)
            }
        }

        #[async_trait::async_trait]
        impl $crate::Store for $store {
            fn runs_on_own_threads(&self) -> bool {
                $own
            }

            fn sync_audit_log(&self) -> Result<Option<$crate::SyncAuditLog>, $crate::StoreError> {
                self.open_sync_audit_log()
            }

            async fn env_add(
                &self,
                env: &blastwall_core::Environment,
                audit: blastwall_core::audit::AuditRecord,
            ) -> Result<blastwall_core::audit::AuditEntry, $crate::StoreError> {
                let ttl = i64::try_from(env.max_token_ttl.as_secs()).map_err(|_| {
                    $crate::StoreError::Invalid {
                        what: format!("environment `{}`", env.name),
                        why: "its maximum token lifetime is too long".into(),
                    }
                })?;
                let mut tx = self.begin_write().await?;
                sqlx::query($crate::sql::ENV_INSERT)
                    .bind(env.name.as_str())
                    .bind(env.tier.as_str())
                    .bind(ttl)
                    .bind(&env.recipient)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| {
                        $crate::sql::conflict_on_unique(e, || format!("environment `{}`", env.name))
                    })?;
                let entry = Self::append_in(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(entry)
            }

            async fn env_list(
                &self,
            ) -> Result<Vec<blastwall_core::Environment>, $crate::StoreError> {
                let rows: Vec<$crate::sql::EnvRow> = sqlx::query_as($crate::sql::ENV_LIST)
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map($crate::sql::env_from_row).collect()
            }

            async fn env_get(
                &self,
                name: &blastwall_core::EnvName,
            ) -> Result<Option<blastwall_core::Environment>, $crate::StoreError> {
                let row: Option<$crate::sql::EnvRow> = sqlx::query_as($crate::sql::ENV_GET)
                    .bind(name.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
                row.map($crate::sql::env_from_row).transpose()
            }

            async fn upstream_add(
                &self,
                up: &blastwall_core::record::UpstreamRecord,
                audit: blastwall_core::audit::AuditRecord,
            ) -> Result<blastwall_core::audit::AuditEntry, $crate::StoreError> {
                let mut tx = self.begin_write().await?;
                sqlx::query($crate::sql::UPSTREAM_INSERT)
                    .bind(up.name.as_str())
                    .bind(&up.profile)
                    .bind(&up.base_url)
                    .bind($crate::sql::micros(up.created_at))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| {
                        $crate::sql::conflict_on_unique(e, || format!("upstream `{}`", up.name))
                    })?;
                let entry = Self::append_in(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(entry)
            }

            async fn upstream_list(
                &self,
            ) -> Result<Vec<blastwall_core::record::UpstreamRecord>, $crate::StoreError> {
                let rows: Vec<$crate::sql::UpstreamRow> =
                    sqlx::query_as($crate::sql::UPSTREAM_LIST)
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter()
                    .map($crate::sql::upstream_from_row)
                    .collect()
            }

            async fn upstream_get(
                &self,
                name: &blastwall_core::EnvName,
            ) -> Result<Option<blastwall_core::record::UpstreamRecord>, $crate::StoreError> {
                let row: Option<$crate::sql::UpstreamRow> =
                    sqlx::query_as($crate::sql::UPSTREAM_GET)
                        .bind(name.as_str())
                        .fetch_optional(&self.pool)
                        .await?;
                row.map($crate::sql::upstream_from_row).transpose()
            }

            async fn credential_put(
                &self,
                cred: &blastwall_core::record::SealedCredential,
                audit: blastwall_core::audit::AuditRecord,
            ) -> Result<blastwall_core::audit::AuditEntry, $crate::StoreError> {
                let mut tx = self.begin_write().await?;
                if !Self::exists_in(
                    &mut tx,
                    $crate::sql::UPSTREAM_EXISTS,
                    cred.upstream.as_str(),
                )
                .await?
                {
                    return Err($crate::StoreError::NotFound {
                        what: format!("upstream `{}`", cred.upstream),
                    });
                }
                if !Self::exists_in(&mut tx, $crate::sql::ENV_EXISTS, cred.env.as_str()).await? {
                    return Err($crate::StoreError::NotFound {
                        what: format!("environment `{}`", cred.env),
                    });
                }
                sqlx::query($crate::sql::CREDENTIAL_PUT)
                    .bind(cred.upstream.as_str())
                    .bind(cred.env.as_str())
                    .bind(&cred.sealed)
                    .bind(&cred.recipient)
                    .bind($crate::sql::micros(cred.created_at))
                    .execute(&mut *tx)
                    .await?;
                let entry = Self::append_in(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(entry)
            }

            async fn credential_get(
                &self,
                upstream: &blastwall_core::EnvName,
                env: &blastwall_core::EnvName,
            ) -> Result<Option<blastwall_core::record::SealedCredential>, $crate::StoreError> {
                let row: Option<$crate::sql::CredentialRow> =
                    sqlx::query_as($crate::sql::CREDENTIAL_GET)
                        .bind(upstream.as_str())
                        .bind(env.as_str())
                        .fetch_optional(&self.pool)
                        .await?;
                row.map($crate::sql::credential_from_row).transpose()
            }

            async fn credential_list(
                &self,
            ) -> Result<Vec<blastwall_core::record::SealedCredential>, $crate::StoreError> {
                let rows: Vec<$crate::sql::CredentialRow> =
                    sqlx::query_as($crate::sql::CREDENTIAL_LIST)
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter()
                    .map($crate::sql::credential_from_row)
                    .collect()
            }

            async fn token_insert(
                &self,
                token: &blastwall_core::record::TokenRecord,
                audit: blastwall_core::audit::AuditRecord,
            ) -> Result<blastwall_core::audit::AuditEntry, $crate::StoreError> {
                let digest = token
                    .digest
                    .as_ref()
                    .ok_or_else(|| $crate::StoreError::Invalid {
                        what: format!("token `{}`", token.id),
                        why: "it has no digest".into(),
                    })?;
                let scope = $crate::sql::scope_text(&token.scope)?;
                let mut tx = self.begin_write().await?;
                if !Self::exists_in(&mut tx, $crate::sql::ENV_EXISTS, token.env.as_str()).await? {
                    return Err($crate::StoreError::NotFound {
                        what: format!("environment `{}`", token.env),
                    });
                }
                sqlx::query($crate::sql::TOKEN_INSERT)
                    .bind(token.id.as_str())
                    .bind($crate::sql::kind_text(token.kind))
                    .bind(token.env.as_str())
                    .bind(token.owner.as_str())
                    .bind(token.holder.as_str())
                    .bind(scope)
                    .bind(digest.to_hex())
                    .bind($crate::sql::micros(token.created_at))
                    .bind($crate::sql::micros(token.expires_at))
                    .bind(token.revoked_at.map($crate::sql::micros))
                    .bind(token.last_used_at.map($crate::sql::micros))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| {
                        $crate::sql::conflict_on_unique(e, || format!("token `{}`", token.id))
                    })?;
                let entry = Self::append_in(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(entry)
            }

            async fn token_by_digest(
                &self,
                digest: &blastwall_core::TokenDigest,
            ) -> Result<Option<blastwall_core::record::TokenRecord>, $crate::StoreError> {
                let row: Option<$crate::sql::TokenRow> =
                    sqlx::query_as(&$crate::sql::token_select("WHERE digest = $1"))
                        .bind(digest.to_hex())
                        .fetch_optional(&self.pool)
                        .await?;
                let Some(token) = row.map($crate::sql::token_from_row).transpose()? else {
                    return Ok(None);
                };
                // The index found it by equality; compare again in constant time so the
                // decision itself never depends on a short-circuiting comparison.
                match &token.digest {
                    Some(d) if d.ct_eq(digest) => Ok(Some(token)),
                    _ => Ok(None),
                }
            }

            async fn token_get(
                &self,
                id: &blastwall_core::record::TokenId,
            ) -> Result<Option<blastwall_core::record::TokenRecord>, $crate::StoreError> {
                let row: Option<$crate::sql::TokenRow> =
                    sqlx::query_as(&$crate::sql::token_select("WHERE id = $1"))
                        .bind(id.as_str())
                        .fetch_optional(&self.pool)
                        .await?;
                row.map($crate::sql::token_from_row).transpose()
            }

            async fn token_list(
                &self,
                env: Option<&blastwall_core::EnvName>,
            ) -> Result<Vec<blastwall_core::record::TokenRecord>, $crate::StoreError> {
                let rows: Vec<$crate::sql::TokenRow> = match env {
                    Some(env) => {
                        sqlx::query_as(&$crate::sql::token_select(
                            "WHERE env = $1 ORDER BY created_at DESC, id DESC",
                        ))
                        .bind(env.as_str())
                        .fetch_all(&self.pool)
                        .await?
                    }
                    None => {
                        sqlx::query_as(&$crate::sql::token_select(
                            "ORDER BY created_at DESC, id DESC",
                        ))
                        .fetch_all(&self.pool)
                        .await?
                    }
                };
                rows.into_iter().map($crate::sql::token_from_row).collect()
            }

            async fn token_revoke(
                &self,
                id: &blastwall_core::record::TokenId,
                at: jiff::Timestamp,
                audit: blastwall_core::audit::AuditRecord,
            ) -> Result<Option<blastwall_core::audit::AuditEntry>, $crate::StoreError> {
                let mut tx = self.begin_write().await?;
                let done = sqlx::query($crate::sql::TOKEN_REVOKE)
                    .bind($crate::sql::micros(at))
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    let exists =
                        Self::exists_in(&mut tx, $crate::sql::TOKEN_EXISTS, id.as_str()).await?;
                    tx.rollback().await?;
                    return if exists {
                        Ok(None)
                    } else {
                        Err($crate::StoreError::NotFound {
                            what: format!("token `{id}`"),
                        })
                    };
                }
                let entry = Self::append_in(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(Some(entry))
            }

            async fn token_touch(
                &self,
                id: &blastwall_core::record::TokenId,
                at: jiff::Timestamp,
            ) -> Result<(), $crate::StoreError> {
                sqlx::query($crate::sql::TOKEN_TOUCH)
                    .bind($crate::sql::micros(at))
                    .bind(id.as_str())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn tokens_revoked_among(
                &self,
                ids: &[blastwall_core::record::TokenId],
            ) -> Result<Vec<blastwall_core::record::TokenId>, $crate::StoreError> {
                let mut out = Vec::new();
                for chunk in ids.chunks($crate::sql::IDS_PER_QUERY) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "SELECT id FROM tokens WHERE revoked_at IS NOT NULL AND id IN (",
                    );
                    let mut list = q.separated(", ");
                    for id in chunk {
                        list.push_bind(id.as_str());
                    }
                    q.push(")");
                    let rows: Vec<(String,)> = q.build_query_as().fetch_all(&self.pool).await?;
                    out.extend(
                        rows.into_iter()
                            .map(|(id,)| blastwall_core::record::TokenId(id)),
                    );
                }
                Ok(out)
            }

            async fn tokens_revoked_since(
                &self,
                since: jiff::Timestamp,
            ) -> Result<Vec<blastwall_core::record::TokenId>, $crate::StoreError> {
                let rows: Vec<(String,)> = sqlx::query_as($crate::sql::TOKENS_REVOKED_SINCE)
                    .bind($crate::sql::micros(since))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|(id,)| blastwall_core::record::TokenId(id))
                    .collect())
            }

            async fn audit_append(
                &self,
                audit: blastwall_core::audit::AuditRecord,
            ) -> Result<blastwall_core::audit::AuditEntry, $crate::StoreError> {
                let mut tx = self.begin_write().await?;
                let entry = Self::append_in(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(entry)
            }

            async fn audit_append_batch(
                &self,
                audits: Vec<blastwall_core::audit::AuditRecord>,
            ) -> Result<Vec<blastwall_core::audit::AuditEntry>, $crate::StoreError> {
                if audits.is_empty() {
                    return Ok(Vec::new());
                }
                let mut tx = self.begin_write().await?;
                // One read of the head and a few multi-row inserts, not two statements per
                // entry: each statement is a round trip to the database.
                let head: Option<(i64, String)> = sqlx::query_as($crate::sql::AUDIT_HEAD)
                    .fetch_optional(&mut *tx)
                    .await?;
                let (mut seq, mut prev) = $crate::sql::next_position(head)?;
                let mut entries = Vec::with_capacity(audits.len());
                for audit in audits {
                    let (entry, hash) = audit.chain_raw(seq, &prev);
                    prev = hash;
                    seq += 1;
                    entries.push(entry);
                }
                for chunk in $crate::sql::insert_chunks(&entries) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new($crate::sql::AUDIT_INSERT_MANY);
                    insert.push_values(chunk, |mut row, e| {
                        row.push_bind(e.seq)
                            .push_bind(&e.record.at)
                            .push_bind(&e.record.actor)
                            .push_bind(&e.record.action)
                            .push_bind(&e.record.env)
                            .push_bind(&e.record.target)
                            .push_bind(&e.record.detail)
                            .push_bind(&e.prev_hash)
                            .push_bind(&e.hash);
                    });
                    insert.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(entries)
            }

            async fn audit_page(
                &self,
                after: i64,
                limit: i64,
            ) -> Result<Vec<blastwall_core::audit::AuditEntry>, $crate::StoreError> {
                let rows: Vec<$crate::sql::AuditRow> = sqlx::query_as($crate::sql::AUDIT_PAGE)
                    .bind(after)
                    .bind(limit.max(0))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map($crate::sql::audit_from_row).collect())
            }

            async fn audit_tail(
                &self,
                n: i64,
            ) -> Result<Vec<blastwall_core::audit::AuditEntry>, $crate::StoreError> {
                let rows: Vec<$crate::sql::AuditRow> = sqlx::query_as($crate::sql::AUDIT_TAIL)
                    .bind(n.max(0))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map($crate::sql::audit_from_row).collect())
            }

            async fn checkpoint_add(
                &self,
                cp: &blastwall_core::audit::Checkpoint,
            ) -> Result<(), $crate::StoreError> {
                sqlx::query($crate::sql::CHECKPOINT_INSERT)
                    .bind(cp.seq)
                    .bind(&cp.hash)
                    .bind(&cp.at)
                    .bind(&cp.key)
                    .bind(&cp.signature)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn checkpoint_list(
                &self,
            ) -> Result<Vec<blastwall_core::audit::Checkpoint>, $crate::StoreError> {
                let rows: Vec<$crate::sql::CheckpointRow> =
                    sqlx::query_as($crate::sql::CHECKPOINT_LIST)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows
                    .into_iter()
                    .map($crate::sql::checkpoint_from_row)
                    .collect())
            }

            async fn checkpoint_latest(
                &self,
                key: &str,
            ) -> Result<Option<blastwall_core::audit::Checkpoint>, $crate::StoreError> {
                let row: Option<$crate::sql::CheckpointRow> =
                    sqlx::query_as($crate::sql::CHECKPOINT_LATEST)
                        .bind(key)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map($crate::sql::checkpoint_from_row))
            }

            async fn checkpoint_last_seq(&self) -> Result<Option<i64>, $crate::StoreError> {
                let (seq,): (Option<i64>,) = sqlx::query_as($crate::sql::CHECKPOINT_LAST_SEQ)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(seq)
            }

            async fn close(&self) {
                self.pool.close().await;
            }
        }
    };
}

pub(crate) use impl_store;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_in_microseconds() {
        let t = Timestamp::from_microsecond(1_790_000_000_123_456).unwrap();
        assert_eq!(from_micros(micros(t), &|| "x".into()).unwrap(), t);
    }

    #[test]
    fn batches_are_cut_into_a_few_statement_sizes() {
        let v: Vec<u32> = (0..150).collect();
        let chunks = insert_chunks(&v);
        let lens: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        assert_eq!(lens, [64, 64, 16, 4, 1, 1]);
        assert_eq!(chunks.concat(), v, "in order, nothing lost or repeated");
        assert!(insert_chunks::<u32>(&[]).is_empty());
    }

    #[test]
    fn first_entry_follows_genesis() {
        assert_eq!(next_position(None).unwrap(), (1, GENESIS));
        let h = "ab".repeat(32);
        assert_eq!(next_position(Some((7, h))).unwrap(), (8, [0xab; 32]));
        assert!(next_position(Some((7, "zz".into()))).is_err());
    }

    #[test]
    fn a_corrupt_scope_is_reported_with_the_token() {
        let row: TokenRow = (
            "tok_1".into(),
            "agent".into(),
            "staging".into(),
            "jer@pocketos.com".into(),
            "cursor".into(),
            "not json".into(),
            "00".repeat(32),
            0,
            1,
            None,
            None,
        );
        let e = token_from_row(row).unwrap_err().to_string();
        assert!(e.contains("tok_1"), "{e}");
    }
}
