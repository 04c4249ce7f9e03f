//! The embedded default: one SQLite file in the data folder.
//!
//! The file is created if missing (its folder must exist), in WAL mode with a busy timeout, so
//! several processes (a gateway and the CLI) can share it; foreign keys are on. Writers take the
//! write lock up front (`BEGIN IMMEDIATE`), which both serialises audit appends across processes
//! and avoids the deadlock of two deferred transactions upgrading to write at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Sqlite, SqlitePool, Transaction};

use crate::error::StoreError;
use crate::sql::impl_store;

/// How long a connection waits for another process's write lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, true).await
    }

    /// Opens the store in the database file at `path`, which must exist and hold one (a
    /// Blastwall schema, perhaps older), and brings its schema up to date: an empty file, or
    /// another program's database, is refused rather than made into a new, empty store.
    pub async fn open_existing(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, false).await
    }

    async fn open_with(path: &Path, create: bool) -> Result<Self, StoreError> {
        let url = format!("sqlite://{}", path.display());
        let folder = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !folder.is_dir() {
            return Err(StoreError::Unreachable {
                url,
                reason: format!("the folder `{}` does not exist", folder.display()),
                hint: "run `blastwall init`, or create the folder, or set `[store] url`".into(),
            });
        }
        if create {
            create_private(path).map_err(|e| StoreError::Unreachable {
                url: url.clone(),
                reason: format!("cannot create the file: {e}"),
                hint: "check the folder's permissions".into(),
            })?;
        }
        if !create {
            // Looked at read-only first, so another program's database is left as it was (the
            // pool below would switch it to WAL).
            let holds_store = async {
                let mut probe = SqliteConnectOptions::new()
                    .filename(path)
                    .read_only(true)
                    .connect()
                    .await?;
                // The migrator's table and two of the store's own: a table named `audit_log`
                // alone could be another program's.
                let found: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' \
                     AND name IN ('_sqlx_migrations', 'audit_log', 'checkpoints')",
                )
                .fetch_one(&mut probe)
                .await?;
                probe.close().await?;
                Ok::<_, sqlx::Error>(found == 3)
            };
            match holds_store.await {
                Ok(true) => {}
                Ok(false) => return Err(crate::no_store_here(url)),
                Err(e) => {
                    return Err(StoreError::Unreachable {
                        url,
                        reason: e.to_string(),
                        hint: "check that the path is a Blastwall database file you may read and \
                               write"
                            .into(),
                    });
                }
            }
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unreachable {
                url: url.clone(),
                reason: e.to_string(),
                hint: "check that the path is a database file you may read and write".into(),
            })?;
        let store = Self {
            pool,
            path: path.to_path_buf(),
        };
        store.migrate().await?;
        tracing::debug!(path = %path.display(), "sqlite store open");
        Ok(store)
    }

    /// Applies pending migrations. Two processes opening a fresh file at once may race to
    /// create the schema; the loser retries and finds it done.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut attempt = 0;
        loop {
            match MIGRATOR.run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 3 => {
                    tracing::debug!(error = %e, attempt, "sqlite migration raced, retrying");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                Err(source) => {
                    return Err(StoreError::Migration {
                        url: format!("sqlite://{}", self.path.display()),
                        source,
                    });
                }
            }
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection pool (for tests and maintenance).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A synchronous connection of its own for appending audit batches (see
    /// [`SyncAuditLog`](crate::SyncAuditLog)).
    fn open_sync_audit_log(&self) -> Result<Option<crate::SyncAuditLog>, StoreError> {
        crate::SyncAuditLog::open(&self.path).map(Some)
    }

    /// Starts a transaction that holds the database's write lock from its first statement.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

impl_store!(SqliteStore, Sqlite, own_threads = true);

/// Creates the database file readable by its owner only, if it does not exist yet: it holds
/// sealed credentials and token digests. SQLite gives its `-wal` and `-shm` files the same mode.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_folder_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = SqliteStore::open(&dir.path().join("nope/blastwall.db"))
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("does not exist"), "{text}");
        assert!(text.contains("hint: "), "{text}");
    }

    #[tokio::test]
    async fn opening_twice_migrates_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blastwall.db");
        let a = SqliteStore::open(&path).await.unwrap();
        let b = SqliteStore::open(&path).await.unwrap();
        assert_eq!(a.path(), b.path());
    }

    #[tokio::test]
    async fn the_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blastwall.db");
        let _store = SqliteStore::open(&path).await.unwrap();
        for file in [path.clone(), dir.path().join("blastwall.db-wal")] {
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        }
    }
}
