//! Signed checkpoints over the audit chain, and the verification of a stored log.
//!
//! The [`Auditor`] sees every entry its process appended and signs a checkpoint of the entry
//! whenever its sequence number is a multiple of `every`; [`Auditor::finish`] signs the head when
//! the process stops (end of a CLI command, gateway shutdown), so the last entries are covered
//! too. [`verify_log`] streams the log through the chain verifier of `blastwall-core` and checks
//! every checkpoint, which is what makes a truncated tail visible.

use std::ops::RangeInclusive;
use std::sync::Arc;

use blastwall_core::ChainError;
use blastwall_core::audit::VerifyReport;
use blastwall_core::audit::{
    AuditEntry, AuditRecord, ChainVerifier, Checkpoint, CheckpointSigner, checkpoint_signature_ok,
    decode_hash, entry_hash,
};
use jiff::Timestamp;

use crate::Store;
use crate::error::{StoreError, VerifyError};
use crate::sync_audit::SyncAuditLog;

/// Entries read per page by [`verify_log`].
pub const VERIFY_PAGE: i64 = 1000;

/// Appends through a store and signs checkpoints. Clones share the store and the key.
#[derive(Debug, Clone)]
pub struct Auditor {
    store: Arc<dyn Store>,
    signer: Arc<CheckpointSigner>,
    every: u32,
}

impl Auditor {
    /// An auditor signing a checkpoint every `every` entries (0 is taken as 1).
    pub fn new(store: Arc<dyn Store>, signer: CheckpointSigner, every: u32) -> Self {
        Self {
            store,
            signer: Arc::new(signer),
            every: every.max(1),
        }
    }

    /// The store it appends to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The checkpoint key's public half (hex), as `verify_log` wants it.
    pub fn public_key_hex(&self) -> String {
        self.signer.public_hex()
    }

    /// To be called with every entry a mutating store method returned: signs and stores a
    /// checkpoint when the entry's sequence number is a multiple of `every`.
    pub async fn record(&self, entry: &AuditEntry) -> Result<Option<Checkpoint>, StoreError> {
        if entry.seq % i64::from(self.every) != 0 {
            return Ok(None);
        }
        self.sign(entry.seq, &entry.hash).await.map(Some)
    }

    /// Appends records in order in one transaction (see [`Store::audit_append_batch`]) and
    /// [`record`](Self::record)s each.
    pub async fn append_batch(
        &self,
        audits: Vec<AuditRecord>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let entries = self.store.audit_append_batch(audits).await?;
        for entry in &entries {
            self.record(entry).await?;
        }
        Ok(entries)
    }

    /// Appends records in order in one transaction on `log`, a synchronous connection to the
    /// store (see [`SyncAuditLog`]), and in that same transaction the checkpoints that fall among
    /// them. Blocks: call it from a thread of its own. Returns the sequence numbers written.
    pub fn append_batch_sync(
        &self,
        log: &mut SyncAuditLog,
        audits: &[AuditRecord],
    ) -> Result<Option<RangeInclusive<i64>>, StoreError> {
        log.append_batch(audits, &self.signer, self.every)
    }

    /// Appends a record on its own (see [`Store::audit_append`]) and [`record`](Self::record)s it.
    pub async fn append(&self, audit: AuditRecord) -> Result<AuditEntry, StoreError> {
        let entry = self.store.audit_append(audit).await?;
        self.record(&entry).await?;
        Ok(entry)
    }

    /// Signs a checkpoint of the current head unless the last checkpoint already covers it. Call
    /// it when the process stops appending (end of a CLI command, gateway shutdown).
    pub async fn finish(&self) -> Result<Option<Checkpoint>, StoreError> {
        let Some(head) = self.store.audit_tail(1).await?.pop() else {
            return Ok(None);
        };
        let last = self.store.checkpoint_last_seq().await?;
        if last.is_some_and(|seq| seq >= head.seq) {
            return Ok(None);
        }
        self.sign(head.seq, &head.hash).await.map(Some)
    }

    async fn sign(&self, seq: i64, hash: &str) -> Result<Checkpoint, StoreError> {
        let at = Timestamp::now().to_string();
        let cp = self.signer.sign(seq, hash, &at);
        self.store.checkpoint_add(&cp).await?;
        tracing::debug!(seq, "audit checkpoint signed");
        Ok(cp)
    }
}

/// Verifies the whole stored log: every entry's hash and link, then every checkpoint's signature
/// (against `trusted_key_hex`, the checkpoint key's public half) and hash. Reads the log page by
/// page, so memory stays flat however long it is.
pub async fn verify_log(
    store: &dyn Store,
    trusted_key_hex: &str,
) -> Result<VerifyReport, VerifyError> {
    verify_log_with(store, trusted_key_hex, &[]).await
}

/// The newest checkpoint signed with `trusted_key_hex`, checked before it is handed out to be
/// kept elsewhere: its signature, and the entry it names, still in the log with that hash and
/// consistent with its own content and predecessor's hash. A row that anyone who can write the
/// store could have put there (another key, a bad signature, a hash the log does not have) is an
/// error, never printed as evidence.
pub async fn latest_checkpoint(
    store: &dyn Store,
    trusted_key_hex: &str,
) -> Result<Option<Checkpoint>, VerifyError> {
    let Some(cp) = store.checkpoint_latest(trusted_key_hex).await? else {
        return Ok(None);
    };
    if !checkpoint_signature_ok(&cp, trusted_key_hex) {
        return Err(ChainError::BadSignature { seq: cp.seq }.into());
    }
    let page = store.audit_page(cp.seq - 1, 1).await?;
    let Some(entry) = page.first().filter(|e| e.seq == cp.seq) else {
        let last = store.audit_tail(1).await?.first().map_or(0, |e| e.seq);
        return Err(ChainError::Truncated { seq: cp.seq, last }.into());
    };
    let consistent = match (
        decode_hash(&entry.prev_hash),
        decode_hash(&entry.hash),
        decode_hash(&cp.hash),
    ) {
        (Some(prev), Some(stored), Some(signed)) => {
            stored == signed && entry_hash(&prev, entry.seq, &entry.record) == stored
        }
        _ => false,
    };
    if !consistent {
        return Err(ChainError::CheckpointMismatch { seq: cp.seq }.into());
    }
    Ok(Some(cp))
}

/// [`verify_log`], and also checks `shipped`: checkpoints kept outside the store (as
/// `blastwall log checkpoint` prints them). Someone who can write the store can delete the
/// end of the log together with the checkpoints that cover it, or, holding the signing key too,
/// rewrite it whole; a checkpoint kept elsewhere still names the entry and hash the log had.
pub async fn verify_log_with(
    store: &dyn Store,
    trusted_key_hex: &str,
    shipped: &[Checkpoint],
) -> Result<VerifyReport, VerifyError> {
    let checkpoints = store.checkpoint_list().await?;
    let mut verifier = ChainVerifier::new(checkpoints.iter().chain(shipped).map(|c| c.seq));
    let mut after = 0;
    loop {
        let page = store.audit_page(after, VERIFY_PAGE).await?;
        let Some(last) = page.last() else { break };
        let next = last.seq;
        for entry in &page {
            verifier.push(entry)?;
        }
        after = next;
    }
    // The shipped ones first: when the store's own checkpoints were tampered with too, the
    // error names the evidence kept elsewhere.
    for (index, cp) in shipped.iter().enumerate() {
        verifier
            .check(std::slice::from_ref(cp), trusted_key_hex)
            .map_err(|source| VerifyError::Shipped { index, source })?;
    }
    let mut report = verifier.finish(&checkpoints, trusted_key_hex)?;
    report.shipped = shipped.len();
    report.signed_to = report
        .signed_to
        .into_iter()
        .chain(shipped.iter().map(|c| c.seq))
        .max();
    Ok(report)
}
