//! The shared suite on a throwaway PostgreSQL cluster.

use crate::backend::Backend;

all_suite_tests!(Backend::postgres);

/// PostgreSQL has no synchronous audit connection: the gateway appends through the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_offers_no_sync_audit_log() {
    let b = Backend::postgres().await;
    assert!(b.store.sync_audit_log().unwrap().is_none());
}

/// A database without a store's schema is refused by every command but `init` (and left
/// empty), rather than set up as a new, empty store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_database_holding_a_store_opens_as_an_existing_one() {
    use blastwall_core::config::StoreUrl;
    let url = tokio::task::spawn_blocking(|| blastwall_test::PgCluster::shared()?.fresh_database())
        .await
        .unwrap()
        .unwrap();
    let url = StoreUrl::Postgres(secrecy::SecretString::from(url));
    let e = blastwall_store::open_existing(&url).await.unwrap_err();
    assert!(
        format!("{e:#}").contains("holds no Blastwall store"),
        "{e:#}"
    );
    let again = blastwall_store::open_existing(&url).await.unwrap_err();
    assert!(format!("{again:#}").contains("holds no Blastwall store"));
    blastwall_store::open(&url).await.unwrap().close().await;
    let store = blastwall_store::open_existing(&url).await.unwrap();
    assert!(store.env_list().await.unwrap().is_empty());
    store.close().await;
}
