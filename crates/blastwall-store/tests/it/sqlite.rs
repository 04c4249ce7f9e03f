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

fn decision(n: usize) -> blastwall_core::audit::AuditRecord {
    blastwall_core::audit::AuditRecord {
        at: jiff::Timestamp::now().to_string(),
        actor: "token:tok_0123456789abcdef".into(),
        action: "request.decide".into(),
        env: Some("staging".into()),
        target: Some(format!("railway-{n}")),
        detail: format!(r#"{{"decision":"allow","n":{n}}}"#),
    }
}

async fn checkpoint_seqs(b: &Backend) -> Vec<i64> {
    let list = b.store.checkpoint_list().await.unwrap();
    list.iter().map(|c| c.seq).collect()
}

/// The gateway's synchronous audit connection continues the chain the pool wrote, signs its
/// checkpoints in the batch's own transaction, and the pool continues after it: one chain that
/// `verify_log` accepts, each entry stored exactly as given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_audit_log_shares_one_chain_with_the_pool() {
    let b = Backend::sqlite().await;
    let signer = blastwall_core::audit::CheckpointSigner::generate().unwrap();
    let key = signer.public_hex();
    let auditor = blastwall_store::Auditor::new(b.store.clone(), signer, 10);
    auditor.append(decision(0)).await.unwrap();
    let mut log = b.store.sync_audit_log().unwrap().expect("SQLite has one");

    let batch: Vec<_> = (1..=25).map(decision).collect();
    // Blocking calls on a test's runtime worker: nothing else waits on this runtime meanwhile.
    let written = auditor.append_batch_sync(&mut log, &batch).unwrap();
    assert_eq!(written, Some(2..=26));
    assert_eq!(auditor.append_batch_sync(&mut log, &[]).unwrap(), None);
    let stored = b.store.audit_page(1, 100).await.unwrap();
    assert_eq!(
        stored.iter().map(|e| e.record.clone()).collect::<Vec<_>>(),
        batch
    );
    let seqs = checkpoint_seqs(&b).await;
    assert_eq!(seqs, [10, 20], "checkpoints signed with the batch");

    let after = auditor.append(decision(99)).await.unwrap();
    assert_eq!(after.seq, 27);
    assert_eq!(after.prev_hash, stored.last().unwrap().hash);
    auditor.finish().await.unwrap();
    let report = blastwall_store::verify_log(b.store.as_ref(), &key)
        .await
        .unwrap();
    assert_eq!(report.last_seq, 27);
}

/// A batch the database refuses leaves nothing behind, entries nor checkpoints, and the same
/// batch goes in whole once the database takes it again (the gateway's writer retries it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_sync_batch_writes_nothing_and_goes_in_whole_on_retry() {
    let b = Backend::sqlite().await;
    let signer = blastwall_core::audit::CheckpointSigner::generate().unwrap();
    let key = signer.public_hex();
    let auditor = blastwall_store::Auditor::new(b.store.clone(), signer, 2);
    let mut log = b.store.sync_audit_log().unwrap().expect("SQLite has one");
    // Refuses the fourth entry of the batch, after three rows and a checkpoint went in.
    b.exec(
        "CREATE TRIGGER refuse BEFORE INSERT ON audit_log WHEN NEW.seq = 4 \
         BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
    )
    .await;
    let batch: Vec<_> = (1..=5).map(decision).collect();
    let e = auditor.append_batch_sync(&mut log, &batch).unwrap_err();
    assert_eq!(e.to_string(), "store operation failed");
    assert!(b.store.audit_tail(10).await.unwrap().is_empty());
    assert!(b.store.checkpoint_list().await.unwrap().is_empty());

    b.exec("DROP TRIGGER refuse").await;
    assert_eq!(
        auditor.append_batch_sync(&mut log, &batch).unwrap(),
        Some(1..=5)
    );
    let seqs = checkpoint_seqs(&b).await;
    assert_eq!(seqs, [2, 4]);
    let report = blastwall_store::verify_log(b.store.as_ref(), &key)
        .await
        .unwrap();
    assert_eq!(report.last_seq, 5);
}

/// While another writer holds the file's write lock, a batch waits for it (the store's busy
/// timeout) instead of failing, and goes in once the lock is let go, after that writer's entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_batch_waits_for_another_writers_lock() {
    use sqlx::Connection as _;
    let b = Backend::sqlite().await;
    let crate::backend::Db::Sqlite { path, .. } = &b.db else {
        unreachable!()
    };
    let signer = blastwall_core::audit::CheckpointSigner::generate().unwrap();
    let auditor = blastwall_store::Auditor::new(b.store.clone(), signer, 100);
    let mut log = b.store.sync_audit_log().unwrap().expect("SQLite has one");
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let writer = std::thread::spawn(move || {
        let written = auditor.append_batch_sync(&mut log, &[decision(1), decision(2)]);
        (written, std::time::Instant::now())
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!writer.is_finished(), "the batch must wait for the lock");
    let released = std::time::Instant::now();
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let (written, at) = writer.join().unwrap();
    assert_eq!(written.unwrap(), Some(1..=2));
    assert!(at >= released);
}

/// Every command but `init` opens a store that must exist: an empty file, or another program's
/// database, is refused (and left as it was) rather than set up as a new, empty store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_file_holding_a_store_opens_as_an_existing_one() {
    use blastwall_core::config::StoreUrl;
    use sqlx::{ConnectOptions, Connection};
    let dir = blastwall_test::temp_dir().unwrap();
    let refused = |e: blastwall_store::StoreError| {
        let text = format!("{e:#}");
        assert!(text.contains("holds no Blastwall store"), "{text}");
    };

    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    refused(
        blastwall_store::open_existing(&StoreUrl::Sqlite(empty.clone()))
            .await
            .unwrap_err(),
    );
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);

    let other = dir.path().join("other.db");
    let mut c = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&other)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    sqlx::raw_sql("CREATE TABLE notes (body TEXT); CREATE TABLE audit_log (line TEXT)")
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    refused(
        blastwall_store::open_existing(&StoreUrl::Sqlite(other.clone()))
            .await
            .unwrap_err(),
    );
    let mut c = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&other)
        .connect()
        .await
        .unwrap();
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(mode, "delete", "another program's database was changed");
    c.close().await.unwrap();

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, [0x42u8; 4096]).unwrap();
    let e = blastwall_store::open_existing(&StoreUrl::Sqlite(garbage))
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("not a database"), "{e:#}");

    // A store made by `init` opens.
    let real = dir.path().join("blastwall.db");
    blastwall_store::open(&StoreUrl::Sqlite(real.clone()))
        .await
        .unwrap()
        .close()
        .await;
    let store = blastwall_store::open_existing(&StoreUrl::Sqlite(real))
        .await
        .unwrap();
    assert!(store.env_list().await.unwrap().is_empty());
    store.close().await;
}
