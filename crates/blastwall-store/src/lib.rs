//! Blastwall's persistence: the [`Store`] trait and its two implementations, SQLite (the
//! embedded default, one file in the data folder) and PostgreSQL (several gateways sharing state),
//! with their migrations.
//!
//! Every state change is written in the same transaction as its audit entry, so there is never a
//! token without its `token.issue` entry, nor an entry for a change that did not happen. Sealing
//! and the chain's hashing live in `blastwall-core`; this crate stores what they produce.
//!
//! Both backends share one schema shape and one set of statements: times are stored as integer
//! unix microseconds (UTC), token scopes as JSON text, token digests as unique lowercase hex, and
//! audit entries exactly as they were hashed. [`open`] picks the backend from the configured URL;
//! [`Auditor`] signs checkpoints over the chain and [`verify_log`] checks it.

use std::sync::Arc;

use async_trait::async_trait;
use blastwall_core::audit::{AuditEntry, AuditRecord, Checkpoint};
use blastwall_core::config::StoreUrl;
use blastwall_core::record::{SealedCredential, TokenId, TokenRecord, UpstreamRecord};
use blastwall_core::{EnvName, Environment, TokenDigest};
use jiff::Timestamp;

pub mod auditor;
pub mod error;
pub mod postgres;
pub mod reconcile;
mod sql;
pub mod sqlite;
pub mod sync_audit;

pub use auditor::{Auditor, latest_checkpoint, verify_log, verify_log_with};
pub use blastwall_core::audit::VerifyReport;
pub use error::{StoreError, VerifyError};
pub use postgres::PgStore;
pub use reconcile::reconcile;
pub use sqlite::SqliteStore;
pub use sync_audit::SyncAuditLog;

/// Opens the store at `url`, creating an SQLite file if missing (in an existing folder), and
/// brings its schema up to date. Call [`Store::close`] before the process exits.
#[tracing::instrument(skip_all, fields(store = %url))]
pub async fn open(url: &StoreUrl) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match url {
        StoreUrl::Sqlite(path) => Arc::new(SqliteStore::open(path).await?),
        StoreUrl::Postgres(url) => Arc::new(PgStore::connect(url).await?),
    })
}

/// Opens a store that must already exist (every command but `init`): an SQLite file that is
/// missing, empty or another program's, or a PostgreSQL database without a store's schema, is
/// refused rather than set up empty, which would quietly start over without the tokens,
/// credentials and audit history the missing one held.
#[tracing::instrument(skip_all, fields(store = %url))]
pub async fn open_existing(url: &StoreUrl) -> Result<Arc<dyn Store>, StoreError> {
    if let StoreUrl::Sqlite(path) = url
        && !path.exists()
    {
        return Err(StoreError::Unreachable {
            url: format!("sqlite://{}", path.display()),
            reason: "the database file does not exist".into(),
            hint: "run `blastwall init` to set up a new store; if the file was moved or deleted, \
                   put it back (a new, empty store would have none of the tokens, credentials \
                   and audit history the old one held)"
                .into(),
        });
    }
    Ok(match url {
        StoreUrl::Sqlite(path) => Arc::new(SqliteStore::open_existing(path).await?),
        StoreUrl::Postgres(url) => Arc::new(PgStore::connect_existing(url).await?),
    })
}

/// The refusal of [`open_existing`] for a database that holds no store.
fn no_store_here(url: String) -> StoreError {
    StoreError::Unreachable {
        url,
        reason: "the database holds no Blastwall store (it is empty, or another program's)".into(),
        hint: "run `blastwall init` to set up a new store there; if the store lives elsewhere, \
               point `[store] url` at it (a new, empty store would have none of the tokens, \
               credentials and audit history the old one held)"
            .into(),
    }
}

/// Everything Blastwall persists. Implementations must be safe to share between processes:
/// audit appends are serialised by the database (chain order), and reads see committed state.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Whether the store's connections run on threads of their own (SQLite's), so that any
    /// runtime may use them; `false` when a connection belongs to the runtime that opened it
    /// (PostgreSQL's sockets), which must then outlive every use of it.
    fn runs_on_own_threads(&self) -> bool {
        false
    }

    /// Adds an environment; [`StoreError::Conflict`] if the name exists.
    async fn env_add(
        &self,
        env: &Environment,
        audit: AuditRecord,
    ) -> Result<AuditEntry, StoreError>;
    /// All environments, by name.
    async fn env_list(&self) -> Result<Vec<Environment>, StoreError>;
    /// One environment.
    async fn env_get(&self, name: &EnvName) -> Result<Option<Environment>, StoreError>;

    /// Adds an upstream; [`StoreError::Conflict`] if the name exists.
    async fn upstream_add(
        &self,
        up: &UpstreamRecord,
        audit: AuditRecord,
    ) -> Result<AuditEntry, StoreError>;
    /// All upstreams, by name.
    async fn upstream_list(&self) -> Result<Vec<UpstreamRecord>, StoreError>;
    /// One upstream.
    async fn upstream_get(&self, name: &EnvName) -> Result<Option<UpstreamRecord>, StoreError>;

    /// Stores (or replaces) the sealed credential of an upstream for an environment.
    async fn credential_put(
        &self,
        cred: &SealedCredential,
        audit: AuditRecord,
    ) -> Result<AuditEntry, StoreError>;
    /// The sealed credential of an upstream for an environment.
    async fn credential_get(
        &self,
        upstream: &EnvName,
        env: &EnvName,
    ) -> Result<Option<SealedCredential>, StoreError>;
    /// Every sealed credential (for listing which environments have one, and for `wall export`).
    async fn credential_list(&self) -> Result<Vec<SealedCredential>, StoreError>;

    /// Records an issued token (its digest must be set).
    async fn token_insert(
        &self,
        token: &TokenRecord,
        audit: AuditRecord,
    ) -> Result<AuditEntry, StoreError>;
    /// Looks a token up by the digest of the presented credential.
    async fn token_by_digest(
        &self,
        digest: &TokenDigest,
    ) -> Result<Option<TokenRecord>, StoreError>;
    /// One token by id.
    async fn token_get(&self, id: &TokenId) -> Result<Option<TokenRecord>, StoreError>;
    /// Tokens, newest first, optionally of one environment.
    async fn token_list(&self, env: Option<&EnvName>) -> Result<Vec<TokenRecord>, StoreError>;
    /// Revokes a token at `at`. Returns `false` (and writes nothing) if it was already revoked;
    /// [`StoreError::NotFound`] if there is no such token.
    async fn token_revoke(
        &self,
        id: &TokenId,
        at: Timestamp,
        audit: AuditRecord,
    ) -> Result<Option<AuditEntry>, StoreError>;
    /// Records a use of the token.
    async fn token_touch(&self, id: &TokenId, at: Timestamp) -> Result<(), StoreError>;
    /// Ids of tokens revoked at or after `since` (for gateways' revocation polling).
    async fn tokens_revoked_since(&self, since: Timestamp) -> Result<Vec<TokenId>, StoreError>;
    /// Which of `ids` are revoked, whenever that was (a gateway asks about the tokens it holds
    /// cached: no clock is compared, so a revoking host's clock cannot make it miss one).
    async fn tokens_revoked_among(&self, ids: &[TokenId]) -> Result<Vec<TokenId>, StoreError>;

    /// Appends an entry to the audit chain on its own (gateway decisions, failed attempts).
    async fn audit_append(&self, audit: AuditRecord) -> Result<AuditEntry, StoreError>;
    /// Appends several entries, in order, in one transaction (the gateway's audit writer: one
    /// commit for a burst of decisions instead of one each). All or nothing.
    async fn audit_append_batch(
        &self,
        audits: Vec<AuditRecord>,
    ) -> Result<Vec<AuditEntry>, StoreError>;
    /// A connection of its own for appending audit batches from a thread of their own (the
    /// gateway's audit writer), when the backend has a synchronous driver: SQLite (see
    /// [`SyncAuditLog`]). `None` for the others: append with
    /// [`audit_append_batch`](Self::audit_append_batch).
    fn sync_audit_log(&self) -> Result<Option<SyncAuditLog>, StoreError>;
    /// Up to `limit` entries with `seq > after`, in order (for streaming verification).
    async fn audit_page(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>, StoreError>;
    /// The last `n` entries, in order.
    async fn audit_tail(&self, n: i64) -> Result<Vec<AuditEntry>, StoreError>;
    /// Records a signed checkpoint.
    async fn checkpoint_add(&self, cp: &Checkpoint) -> Result<(), StoreError>;
    /// All checkpoints, by entry.
    async fn checkpoint_list(&self) -> Result<Vec<Checkpoint>, StoreError>;
    /// The checkpoint of the newest entry signed by `key` (public, hex), if any; unchecked (see
    /// `latest_checkpoint`).
    async fn checkpoint_latest(&self, key: &str) -> Result<Option<Checkpoint>, StoreError>;
    /// The last checkpoint's entry, if any.
    async fn checkpoint_last_seq(&self) -> Result<Option<i64>, StoreError>;

    /// Closes the store's connections, waiting for them to finish (call it before a process
    /// exits, so SQLite can fold its write-ahead log back into the file).
    async fn close(&self) {}
}
