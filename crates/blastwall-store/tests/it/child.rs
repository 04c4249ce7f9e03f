//! The child side of the multi-process test: the test binary re-runs itself with only
//! [`child_appender`] selected and the store's URL in [`STORE_VAR`].

use std::path::Path;

use blastwall_core::audit::AuditRecord;
use blastwall_core::config::StoreUrl;

/// Carries the store URL to the child process.
pub(crate) const STORE_VAR: &str = "BLASTWALL_TEST_CHILD_STORE";
/// Entries each child appends.
pub(crate) const CHILD_APPENDS: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by `two_processes_share_one_chain`"]
async fn child_appender() {
    let Ok(url) = std::env::var(STORE_VAR) else {
        return;
    };
    let url = StoreUrl::parse(&url, Path::new("/")).unwrap();
    let store = blastwall_store::open(&url).await.unwrap();
    for i in 0..CHILD_APPENDS {
        store
            .audit_append(AuditRecord {
                at: jiff::Timestamp::now().to_string(),
                actor: format!("child:{}", std::process::id()),
                action: "request.decide".into(),
                env: Some("staging".into()),
                target: Some(format!("req_{i}")),
                detail: "{}".into(),
            })
            .await
            .unwrap();
    }
    store.close().await;
}
