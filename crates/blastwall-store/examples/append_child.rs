//! The child side of the store suite's multi-process test (`two_processes_share_one_chain`):
//! appends audit entries to the store named in `BLASTWALL_TEST_CHILD_STORE`, as a second process
//! sharing the same database would. Built by `cargo test`; not a user-facing program.

use std::path::Path;
use std::process::ExitCode;

use blastwall_core::audit::AuditRecord;
use blastwall_core::config::StoreUrl;

/// Entries this child appends (the test expects this many).
const CHILD_APPENDS: usize = 25;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let Ok(url) = std::env::var("BLASTWALL_TEST_CHILD_STORE") else {
        eprintln!("error: BLASTWALL_TEST_CHILD_STORE is not set");
        return ExitCode::from(2);
    };
    let url = match StoreUrl::parse(&url, Path::new("/")) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let store = match blastwall_store::open(&url).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    for i in 0..CHILD_APPENDS {
        let r = store
            .audit_append(AuditRecord {
                at: jiff::Timestamp::now().to_string(),
                actor: format!("child:{}", std::process::id()),
                action: "request.decide".into(),
                env: Some("staging".into()),
                target: Some(format!("req_{i}")),
                detail: "{}".into(),
            })
            .await;
        if let Err(e) = r {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    }
    store.close().await;
    ExitCode::SUCCESS
}
