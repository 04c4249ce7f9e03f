//! The store's integration tests: one shared suite ([`suite`]) run against SQLite (a temporary
//! file) and a throwaway PostgreSQL cluster, plus backend-specific checks.

/// Declares one `#[tokio::test]` per suite function, run against the backend `$open`.
macro_rules! run_suite {
    ($open:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let backend = $open().await;
                crate::suite::$name(&backend).await;
            }
        )*
    };
}

/// Every function of the shared suite, for [`run_suite!`].
macro_rules! all_suite_tests {
    ($open:path) => {
        run_suite!($open;
            environments_crud,
            upstreams_crud,
            credentials_put_get_replace,
            tokens_insert_and_lookup,
            token_revoke_twice,
            token_touch_moves_forward,
            tokens_revoked_since_lists_recent_revocations,
            failed_changes_write_no_audit_entry,
            audit_tail_and_pages,
            auditor_signs_checkpoints,
            batches_append_in_order_and_checkpoint,
            chain_stays_linear_under_concurrent_appends,
            verify_catches_an_edited_entry,
            verify_catches_a_deleted_entry,
            verify_catches_reordered_entries,
            verify_catches_a_truncated_tail,
            store_never_receives_a_plaintext_secret,
            two_processes_share_one_chain,
            reconcile_names_records_the_log_does_not_back,
        );
    };
}

// `cfg(test)` marks the helpers as test code too (clippy allows unwrap there, as in tests).
#[cfg(test)]
mod backend;
#[cfg(test)]
#[cfg(test)]
mod postgres;
#[cfg(test)]
mod sqlite;
#[cfg(test)]
mod suite;
