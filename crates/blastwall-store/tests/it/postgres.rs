//! The shared suite on a throwaway PostgreSQL cluster.

use crate::backend::Backend;

all_suite_tests!(Backend::postgres);

/// PostgreSQL has no synchronous audit connection: the gateway appends through the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_offers_no_sync_audit_log() {
    let b = Backend::postgres().await;
    assert!(b.store.sync_audit_log().unwrap().is_none());
}
