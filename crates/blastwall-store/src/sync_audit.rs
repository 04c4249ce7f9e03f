//! The gateway's audit appends on SQLite, run by a thread of their own rather than through the
//! async driver.
//!
//! sqlx runs an SQLite connection on a worker thread of its own and hands it every statement and
//! the result back: two thread wake-ups per statement, and a batch of decisions took about ten
//! statements (begin, the head, the inserts, each checkpoint, commit). On a CPU shared with the
//! requests those hand-offs cost more than the inserts themselves. A [`SyncAuditLog`] is a
//! connection of its own to the store's file, used by the thread that calls it: a batch is one
//! transaction with no hand-off (the head, the rows through one cached prepared statement, the
//! checkpoints that fall among them, commit).
//!
//! It writes the same rows to the same tables as
//! [`Store::audit_append_batch`](crate::Store::audit_append_batch) plus
//! [`Auditor::record`](crate::Auditor::record), so [`verify_log`](crate::verify_log) cannot
//! tell them apart, and it interleaves safely with every other writer of the file (the CLI, other
//! gateways): each takes the write lock before reading the head (`BEGIN IMMEDIATE`).

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use blastwall_core::audit::{AuditRecord, CheckpointSigner, entry_hash};
use jiff::Timestamp;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use crate::error::StoreError;
use crate::sql::{AUDIT_HEAD, AUDIT_INSERT, CHECKPOINT_INSERT, next_position};
use crate::sqlite::BUSY_TIMEOUT;

/// A synchronous connection to an SQLite store's file for appending audit batches; see the
/// module's documentation. Blocking: call it from a thread of its own, never from an async task.
#[derive(Debug)]
pub struct SyncAuditLog {
    conn: Connection,
    path: PathBuf,
}

impl SyncAuditLog {
    /// Opens the store's file, which must exist and be in WAL mode (as
    /// [`SqliteStore::open`](crate::SqliteStore::open) leaves it), with the store's busy timeout
    /// and synchronous level.
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        let unreachable = |reason: String| StoreError::Unreachable {
            url: format!("sqlite://{}", path.display()),
            reason,
            hint: "check that the path is a database file you may read and write".into(),
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| unreachable(e.to_string()))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let mode: String = conn.pragma_query_value(None, "journal_mode", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(unreachable(format!(
                "the file is in `{mode}` journal mode, not WAL"
            )));
        }
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// How long an append waits for another writer's lock before it fails (the store's busy
    /// timeout until this is called). The gateway shortens it for as long as it runs, not only
    /// at its stop, so that no attempt can outlast a stop; it retries a failed batch itself
    /// (and forwards nothing meanwhile).
    pub fn set_busy_timeout(&mut self, timeout: std::time::Duration) -> Result<(), StoreError> {
        self.conn.busy_timeout(timeout)?;
        Ok(())
    }

    /// Appends `audits` in order after the current head, in one transaction, and in that same
    /// transaction a checkpoint signed by `signer` of every entry whose sequence number is a
    /// multiple of `every` (0 is taken as 1). All or nothing. Returns the sequence numbers
    /// written (`None` for an empty batch).
    pub(crate) fn append_batch(
        &mut self,
        audits: &[AuditRecord],
        signer: &CheckpointSigner,
        every: u32,
    ) -> Result<Option<RangeInclusive<i64>>, StoreError> {
        let result = self.append_in(audits, signer, every);
        if result.is_err() && !self.conn.is_autocommit() {
            // A failed transaction is rolled back when dropped; if even that failed (an I/O
            // error), the connection would stay inside it, holding the write lock, and every
            // retry would fail: start over on a fresh connection (closing this one ends it).
            match Self::open(&self.path) {
                Ok(fresh) => *self = fresh,
                Err(e) => tracing::warn!(error = %e, "could not reopen the audit connection"),
            }
        }
        result
    }

    fn append_in(
        &mut self,
        audits: &[AuditRecord],
        signer: &CheckpointSigner,
        every: u32,
    ) -> Result<Option<RangeInclusive<i64>>, StoreError> {
        if audits.is_empty() {
            return Ok(None);
        }
        let every = i64::from(every.max(1));
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let head: Option<(i64, String)> = tx
            .query_row(AUDIT_HEAD, [], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        let (first, mut prev) = next_position(head)?;
        let mut seq = first;
        let mut prev_hex = blastwall_core::hex_lower(&prev);
        let mut checkpoints = Vec::new();
        {
            let mut insert = tx.prepare_cached(AUDIT_INSERT)?;
            for audit in audits {
                let hash = entry_hash(&prev, seq, audit);
                let hash_hex = blastwall_core::hex_lower(&hash);
                insert.execute(params![
                    seq,
                    audit.at,
                    audit.actor,
                    audit.action,
                    audit.env,
                    audit.target,
                    audit.detail,
                    prev_hex,
                    hash_hex,
                ])?;
                if seq % every == 0 {
                    checkpoints.push(signer.sign(seq, &hash_hex, &Timestamp::now().to_string()));
                }
                prev = hash;
                prev_hex = hash_hex;
                seq += 1;
            }
            let mut insert = tx.prepare_cached(CHECKPOINT_INSERT)?;
            for cp in &checkpoints {
                insert.execute(params![cp.seq, cp.hash, cp.at, cp.key, cp.signature])?;
            }
        }
        tx.commit()?;
        for cp in &checkpoints {
            tracing::debug!(seq = cp.seq, "audit checkpoint signed");
        }
        Ok(Some(first..=seq - 1))
    }
}
