//! The shared suite on SQLite, and what only SQLite has: several pools on one file.

use crate::backend::Backend;

all_suite_tests!(Backend::sqlite);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_file_is_created_in_wal_mode() {
    let b = Backend::sqlite().await;
    let crate::backend::Db::Sqlite { path, .. } = &b.db else {
        unreachable!()
    };
    assert!(path.is_file());
    let store = blastwall_store::SqliteStore::open(path).await.unwrap();
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let (fk,): (i64,) = sqlx::query_as("PRAGMA foreign_keys")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(fk, 1);
}
