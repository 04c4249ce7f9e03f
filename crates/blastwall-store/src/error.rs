//! The store's errors: what a caller can act on (a name already taken, a missing object, a store
//! that cannot be reached or migrated, a stored row that no longer parses), each with a one-line
//! message that never carries a secret. A PostgreSQL URL is only ever shown redacted.
//!
//! As in `blastwall-core`, a next step follows the message on a line of its own (`hint: …`), and
//! a variant with a source does not repeat it: print the chain with `{:#}`.

use blastwall_core::ChainError;
use thiserror::Error;

/// Why a store operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The object already exists (an environment, upstream or token with that name or id).
    #[error("{what} already exists")]
    Conflict {
        /// The object, e.g. ``environment `qa` ``.
        what: String,
    },
    /// The object does not exist.
    #[error("{what} does not exist")]
    NotFound {
        /// The object, e.g. ``token `tok_0123456789abcdef` ``.
        what: String,
    },
    /// The store could not be opened or reached.
    #[error("cannot open the store `{url}`: {reason}\nhint: {hint}")]
    Unreachable {
        /// The store's URL, its password redacted.
        url: String,
        /// What went wrong.
        reason: String,
        /// What to do about it.
        hint: String,
    },
    /// The store's schema could not be brought up to date.
    #[error("cannot bring the store `{url}` up to date")]
    Migration {
        /// The store's URL, its password redacted.
        url: String,
        /// The migrator's error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A stored row does not parse: the database was edited by hand or by a newer version.
    #[error(
        "stored {what} is corrupt: {why}\nhint: the database was changed outside Blastwall; run `blastwall log verify`"
    )]
    Corrupt {
        /// The row, e.g. ``token `tok_…` ``.
        what: String,
        /// What does not parse.
        why: String,
    },
    /// A record was handed to the store without a field it must have.
    #[error("cannot store {what}: {why}")]
    Invalid {
        /// The record.
        what: String,
        /// What is missing or wrong.
        why: String,
    },
    /// Any other database error.
    #[error("store operation failed")]
    Database(#[from] sqlx::Error),
    /// Any other database error, on the synchronous SQLite connection of
    /// [`SyncAuditLog`](crate::sync_audit::SyncAuditLog).
    #[error("store operation failed")]
    Sqlite(#[from] rusqlite::Error),
}

/// Why `verify_log` refused the audit log.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The chain or a checkpoint does not verify; the error names the entry.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// A checkpoint kept outside the store does not hold against the stored log: entries it
    /// covers were removed or rewritten (the store's own checkpoints may have gone with them).
    #[error("checkpoint {} of those kept outside the store does not hold: {source}", .index + 1)]
    Shipped {
        /// Its position (from 0) in the list given to `verify_log_with`.
        index: usize,
        /// What is wrong with it.
        source: ChainError,
    },
    /// The log could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl StoreError {
    /// Whether the error says the object exists already.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }

    /// Whether the error says the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_lowercase_line_and_a_hint() {
        let errors = [
            StoreError::Conflict {
                what: "environment `qa`".into(),
            },
            StoreError::NotFound {
                what: "token `tok_00`".into(),
            },
            StoreError::Unreachable {
                url: "postgres://u:***@h/db".into(),
                reason: "connection refused".into(),
                hint: "check that the server runs".into(),
            },
        ];
        for e in errors {
            let text = e.to_string();
            let mut lines = text.lines();
            let first = lines.next().unwrap();
            assert!(first.starts_with(|c: char| c.is_lowercase()), "{text}");
            assert!(!first.ends_with('.'), "{text}");
            assert!(lines.all(|l| l.starts_with("hint: ")), "{text}");
        }
    }
}
