//! PostgreSQL, for several gateways sharing state.
//!
//! Writers serialise on a `SHARE ROW EXCLUSIVE` lock of `audit_log` taken as the first statement
//! of their transaction: it conflicts with itself and with plain inserts, but not with readers,
//! so the chain head each writer reads is the one it extends, across every process. The URL may
//! carry a password: it is kept secret and only ever shown redacted.

use std::str::FromStr;
use std::time::Duration;

use blastwall_core::config::redact_url;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool, Postgres, Transaction};

use crate::error::StoreError;
use crate::sql::impl_store;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// How long to wait for a connection before calling the server unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    url: String,
}

impl PgStore {
    /// Connects to `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`) and brings the schema up
    /// to date.
    pub async fn connect(url: &SecretString) -> Result<Self, StoreError> {
        Self::connect_with(url, true).await
    }

    /// Connects to a database that must already hold a store (a Blastwall schema, perhaps
    /// older), and brings the schema up to date: an empty database, or another program's, is
    /// refused rather than made into a new, empty store.
    pub async fn connect_existing(url: &SecretString) -> Result<Self, StoreError> {
        Self::connect_with(url, false).await
    }

    async fn connect_with(url: &SecretString, create: bool) -> Result<Self, StoreError> {
        let raw = url.expose_secret();
        let shown = redact_url(raw);
        let options = PgConnectOptions::from_str(raw).map_err(|_| StoreError::Unreachable {
            url: shown.clone(),
            reason: "the URL does not parse".into(),
            hint: "write it as `postgres://USER:PASSWORD@HOST:PORT/DB`".into(),
        })?;
        let unreachable = |e: sqlx::Error| StoreError::Unreachable {
            url: shown.clone(),
            // Driver messages do not carry the password, but never risk echoing the URL.
            reason: e.to_string().replace(raw, &shown),
            hint: "check that the server runs and that the host, port, user, password and \
                   database in the URL are right"
                .into(),
        };
        // One direct attempt first: the pool would retry a refused connection until its timeout,
        // and a command aimed at a stopped server should fail at once.
        let probe = options.connect().await.map_err(&unreachable)?;
        probe.close().await.map_err(&unreachable)?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(unreachable)?;
        if !create {
            // The migrator's table and two of the store's own: a table named `audit_log` alone
            // could be another program's.
            let found: bool = sqlx::query_scalar(
                "SELECT to_regclass('_sqlx_migrations') IS NOT NULL \
                 AND to_regclass('audit_log') IS NOT NULL \
                 AND to_regclass('checkpoints') IS NOT NULL",
            )
            .fetch_one(&pool)
            .await
            .map_err(&unreachable)?;
            if !found {
                pool.close().await;
                return Err(crate::no_store_here(shown));
            }
        }
        let store = Self { pool, url: shown };
        store.migrate().await?;
        tracing::debug!(url = %store.url, "postgres store open");
        Ok(store)
    }

    /// Applies pending migrations (the migrator holds an advisory lock, so concurrent starts are
    /// safe).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|source| StoreError::Migration {
                url: self.url.clone(),
                source,
            })
    }

    /// The URL, its password redacted.
    pub fn redacted_url(&self) -> &str {
        &self.url
    }

    /// The connection pool (for tests and maintenance).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// PostgreSQL has no synchronous connection for the audit writer: it appends through the
    /// pool ([`Store::audit_append_batch`](crate::Store::audit_append_batch)).
    fn open_sync_audit_log(&self) -> Result<Option<crate::SyncAuditLog>, StoreError> {
        Ok(None)
    }

    /// Starts a transaction serialised against every other writer of the store.
    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

impl_store!(PgStore, Postgres, own_threads = false);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_server_is_named_without_its_password() {
        // Port 1 on loopback: nothing listens there.
        let url = SecretString::from("postgres://bw:hunter2@127.0.0.1:1/bw".to_owned());
        let e = PgStore::connect(&url).await.unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, StoreError::Unreachable { .. }), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("bw:***@127.0.0.1:1"), "{text}");
    }

    #[tokio::test]
    async fn a_bad_url_is_named_without_its_password() {
        let url = SecretString::from("postgres://bw:hunter2@[bad/bw".to_owned());
        let text = PgStore::connect(&url).await.unwrap_err().to_string();
        assert!(!text.contains("hunter2"), "{text}");
    }
}
