//! A store under test, with a side door for tampering (raw SQL through a connection of its own)
//! and a way to open a second, independent store on the same database (a second process).

use std::path::PathBuf;
use std::sync::Arc;

use blastwall_core::config::StoreUrl;
use blastwall_store::Store;
use blastwall_test::PgCluster;
use secrecy::SecretString;
use sqlx::Connection;
use tempfile::TempDir;

/// Where the database lives.
pub(crate) enum Db {
    /// A file in a temporary folder.
    Sqlite { _dir: TempDir, path: PathBuf },
    /// A fresh database on the shared throwaway cluster.
    Postgres {
        cluster: &'static PgCluster,
        url: String,
    },
}

/// A store under test.
pub(crate) struct Backend {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) db: Db,
}

impl Backend {
    pub(crate) async fn sqlite() -> Self {
        let dir = blastwall_test::temp_dir().unwrap();
        let path = dir.path().join("blastwall.db");
        let db = Db::Sqlite { _dir: dir, path };
        let store = blastwall_store::open(&db.url()).await.unwrap();
        Self { store, db }
    }

    pub(crate) async fn postgres() -> Self {
        let (cluster, url) = tokio::task::spawn_blocking(|| {
            let cluster = PgCluster::shared()?;
            anyhow::Ok((cluster, cluster.fresh_database()?))
        })
        .await
        .unwrap()
        .unwrap();
        let db = Db::Postgres { cluster, url };
        let store = blastwall_store::open(&db.url()).await.unwrap();
        Self { store, db }
    }

    /// Another store on the same database, with its own connections.
    pub(crate) async fn reopen(&self) -> Arc<dyn Store> {
        blastwall_store::open(&self.db.url()).await.unwrap()
    }

    /// Runs raw SQL behind the store's back.
    pub(crate) async fn exec(&self, sql: &str) {
        match &self.db {
            Db::Sqlite { path, .. } => {
                let opts = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(path)
                    .busy_timeout(std::time::Duration::from_secs(30));
                let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
            Db::Postgres { url, .. } => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
        }
    }

    /// The first file under the database's storage holding `needle`, after making sure
    /// everything written so far is on disk.
    pub(crate) async fn find_on_disk(&self, needle: &[u8]) -> Option<PathBuf> {
        let dir = match &self.db {
            Db::Sqlite { path, .. } => path.parent().unwrap().to_path_buf(),
            Db::Postgres { cluster, .. } => {
                self.exec("CHECKPOINT").await;
                cluster.dir().to_path_buf()
            }
        };
        blastwall_test::find_in_tree(&dir, needle).unwrap()
    }
}

impl Db {
    /// The URL as configuration text (`sqlite://…` or `postgres://…`).
    pub(crate) fn url_text(&self) -> String {
        match self {
            Db::Sqlite { path, .. } => format!("sqlite://{}", path.display()),
            Db::Postgres { url, .. } => url.clone(),
        }
    }

    pub(crate) fn url(&self) -> StoreUrl {
        match self {
            Db::Sqlite { path, .. } => StoreUrl::Sqlite(path.clone()),
            Db::Postgres { url, .. } => StoreUrl::Postgres(SecretString::from(url.clone())),
        }
    }
}
