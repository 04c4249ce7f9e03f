//! The audit chain: canonical encoding, hash chaining and signed checkpoints.
//!
//! Each entry's hash is `SHA-256(prev_hash ‖ canonical(entry))`, where the canonical encoding is a
//! versioned, length-prefixed concatenation of the entry's fields (no JSON key-order questions: the
//! detail is hashed exactly as it is stored). Every N entries, and when a process that appended
//! stops, a checkpoint `(seq, hash, time)` is signed with Ed25519. Editing an entry breaks its hash;
//! deleting or reordering breaks the next entry's `prev_hash`; truncating the tail is caught by a
//! checkpoint that names an entry no longer present.
//!
//! Nothing secret is ever put in an entry: tokens by id, bodies by digest.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::ChainError;

pub mod throttle;

/// The `prev_hash` of the first entry.
pub const GENESIS: [u8; 32] = [0u8; 32];

const ENTRY_DOMAIN: &[u8] = b"blastwall-audit-entry-v1";
const CHECKPOINT_DOMAIN: &[u8] = b"blastwall-audit-checkpoint-v1";

/// What happened, before it is placed in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When, as RFC 3339 UTC with a `Z`.
    pub at: String,
    /// Who: `cli:<user>`, `token:<id>`, `gateway`.
    pub actor: String,
    /// What: `env.add`, `upstream.add`, `token.issue`, `token.revoke`, `request.decide`, …
    pub action: String,
    /// The environment concerned, if any.
    pub env: Option<String>,
    /// The object concerned (a token id, an upstream name), if any.
    pub target: Option<String>,
    /// Further detail as JSON text, hashed exactly as stored. Never a secret.
    pub detail: String,
}

/// An entry of the chain as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log, from 1, without gaps.
    pub seq: i64,
    /// The entry's content.
    #[serde(flatten)]
    pub record: AuditRecord,
    /// The previous entry's hash (hex), or zeros for the first.
    pub prev_hash: String,
    /// This entry's hash (hex).
    pub hash: String,
}

impl AuditRecord {
    /// The canonical encoding that is hashed.
    pub fn canonical(&self, seq: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.detail.len());
        put(&mut out, Some(ENTRY_DOMAIN));
        put(&mut out, Some(&seq.to_be_bytes()));
        put(&mut out, Some(self.at.as_bytes()));
        put(&mut out, Some(self.actor.as_bytes()));
        put(&mut out, Some(self.action.as_bytes()));
        put(&mut out, self.env.as_deref().map(str::as_bytes));
        put(&mut out, self.target.as_deref().map(str::as_bytes));
        put(&mut out, Some(self.detail.as_bytes()));
        out
    }

    /// Places the record after an entry whose hash is `prev`, at position `seq`.
    pub fn chain(self, seq: i64, prev: &[u8; 32]) -> AuditEntry {
        self.chain_raw(seq, prev).0
    }

    /// [`chain`](Self::chain), also returning the entry's hash as bytes (the next entry's
    /// `prev`), for appending several entries in a row.
    pub fn chain_raw(self, seq: i64, prev: &[u8; 32]) -> (AuditEntry, [u8; 32]) {
        let hash = entry_hash(prev, seq, &self);
        let entry = AuditEntry {
            seq,
            record: self,
            prev_hash: crate::hex_lower(prev),
            hash: crate::hex_lower(&hash),
        };
        (entry, hash)
    }
}

/// Length-prefixed field; `None` is a distinct marker so `None` and `Some("")` differ.
fn put(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        None => out.extend_from_slice(&u64::MAX.to_be_bytes()),
        Some(bytes) => {
            out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
            out.extend_from_slice(bytes);
        }
    }
}

/// `SHA-256(prev ‖ canonical(record at seq))`.
pub fn entry_hash(prev: &[u8; 32], seq: i64, record: &AuditRecord) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(record.canonical(seq));
    h.finalize().into()
}

/// Decodes a stored hex hash.
pub fn decode_hash(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// A signed statement that the log had entry `seq` with hash `hash` at time `at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The entry covered.
    pub seq: i64,
    /// That entry's hash (hex).
    pub hash: String,
    /// When the checkpoint was made (RFC 3339 UTC).
    pub at: String,
    /// The signer's public key (hex), so a verifier can tell which key to trust.
    pub key: String,
    /// Ed25519 signature (hex) over the domain, seq, hash and time.
    pub signature: String,
}

fn checkpoint_message(seq: i64, hash: &str, at: &str) -> Vec<u8> {
    let mut out = Vec::new();
    put(&mut out, Some(CHECKPOINT_DOMAIN));
    put(&mut out, Some(&seq.to_be_bytes()));
    put(&mut out, Some(hash.as_bytes()));
    put(&mut out, Some(at.as_bytes()));
    out
}

/// The Ed25519 key that signs checkpoints. `Debug` never shows it.
pub struct CheckpointSigner(SigningKey);

impl CheckpointSigner {
    /// A fresh key from the OS's randomness.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut())?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// Parses the key file's text: the 32-byte seed in hex, after optional `#` comment lines.
    pub fn parse(text: &str) -> Option<Self> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))?;
        let mut seed = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(line, seed.as_mut()).ok()?;
        Some(Self(SigningKey::from_bytes(&seed)))
    }

    /// The key file's text.
    pub fn to_file_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "# blastwall audit checkpoint key; public key: {}\n{}\n",
            self.public_hex(),
            hex::encode(self.0.to_bytes())
        ))
    }

    /// The public key in hex.
    pub fn public_hex(&self) -> String {
        hex::encode(self.0.verifying_key().to_bytes())
    }

    /// Signs a checkpoint for entry `seq` with `hash`, made at `at`.
    pub fn sign(&self, seq: i64, hash: &str, at: &str) -> Checkpoint {
        let sig = self.0.sign(&checkpoint_message(seq, hash, at));
        Checkpoint {
            seq,
            hash: hash.to_owned(),
            at: at.to_owned(),
            key: self.public_hex(),
            signature: hex::encode(sig.to_bytes()),
        }
    }
}

impl fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CheckpointSigner({}, ***)", self.public_hex())
    }
}

/// Checks a checkpoint's signature against a trusted public key (hex).
pub fn checkpoint_signature_ok(cp: &Checkpoint, trusted_key_hex: &str) -> bool {
    let mut key = [0u8; 32];
    let mut sig = [0u8; 64];
    if cp.key != trusted_key_hex
        || hex::decode_to_slice(trusted_key_hex, &mut key).is_err()
        || hex::decode_to_slice(&cp.signature, &mut sig).is_err()
    {
        return false;
    }
    let Ok(vk) = VerifyingKey::from_bytes(&key) else {
        return false;
    };
    vk.verify(
        &checkpoint_message(cp.seq, &cp.hash, &cp.at),
        &Signature::from_bytes(&sig),
    )
    .is_ok()
}

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Number of entries checked.
    pub entries: i64,
    /// The last entry's sequence number (0 for an empty log).
    pub last_seq: i64,
    /// Number of the store's checkpoints checked.
    pub checkpoints: usize,
    /// Number of checkpoints kept outside the store (shipped) checked besides.
    pub shipped: usize,
    /// The newest checkpoint's entry (`None` without one): entries after it are chained but not
    /// yet under a signature, so removing them from the end would not show here.
    pub signed_to: Option<i64>,
}

/// Verifies the chain incrementally, entry by entry, so a caller can stream a large log.
#[derive(Debug)]
pub struct ChainVerifier {
    prev_hash: [u8; 32],
    prev_seq: i64,
    hashes_at_checkpoints: Vec<(i64, [u8; 32])>,
    wanted: Vec<i64>,
}

impl ChainVerifier {
    /// A verifier that will also remember the hashes at the given checkpoint positions.
    pub fn new(checkpoint_seqs: impl IntoIterator<Item = i64>) -> Self {
        let mut wanted: Vec<i64> = checkpoint_seqs.into_iter().collect();
        wanted.sort_unstable();
        Self {
            prev_hash: GENESIS,
            prev_seq: 0,
            hashes_at_checkpoints: Vec::new(),
            wanted,
        }
    }

    /// Checks the next entry of the log.
    pub fn push(&mut self, entry: &AuditEntry) -> Result<(), ChainError> {
        if entry.seq != self.prev_seq + 1 {
            // A missing entry whose successor still names the right predecessor can't happen
            // without recomputing hashes; report the gap plainly either way.
            return Err(ChainError::Gap {
                expected: self.prev_seq + 1,
                found: entry.seq,
                prev: self.prev_seq,
            });
        }
        let stored_prev =
            decode_hash(&entry.prev_hash).ok_or(ChainError::Altered { seq: entry.seq })?;
        if stored_prev != self.prev_hash {
            return Err(ChainError::Broken {
                seq: entry.seq,
                prev: self.prev_seq,
            });
        }
        let computed = entry_hash(&self.prev_hash, entry.seq, &entry.record);
        let stored = decode_hash(&entry.hash).ok_or(ChainError::Altered { seq: entry.seq })?;
        if computed != stored {
            return Err(ChainError::Altered { seq: entry.seq });
        }
        if self.wanted.binary_search(&entry.seq).is_ok() {
            self.hashes_at_checkpoints.push((entry.seq, computed));
        }
        self.prev_hash = computed;
        self.prev_seq = entry.seq;
        Ok(())
    }

    /// Checks the checkpoints against the entries seen, and finishes.
    pub fn finish(
        self,
        checkpoints: &[Checkpoint],
        trusted_key_hex: &str,
    ) -> Result<VerifyReport, ChainError> {
        self.check(checkpoints, trusted_key_hex)?;
        Ok(VerifyReport {
            entries: self.prev_seq,
            last_seq: self.prev_seq,
            checkpoints: checkpoints.len(),
            shipped: 0,
            signed_to: checkpoints.iter().map(|c| c.seq).max(),
        })
    }

    /// Checks checkpoints against the entries seen so far: each signed with the trusted key,
    /// covering an entry still in the log, with that entry's hash. Only entries at the positions
    /// given to [`ChainVerifier::new`] are remembered, so a checkpoint at another position is a
    /// mismatch.
    pub fn check(
        &self,
        checkpoints: &[Checkpoint],
        trusted_key_hex: &str,
    ) -> Result<(), ChainError> {
        for cp in checkpoints {
            if !checkpoint_signature_ok(cp, trusted_key_hex) {
                return Err(ChainError::BadSignature { seq: cp.seq });
            }
            if cp.seq > self.prev_seq {
                return Err(ChainError::Truncated {
                    seq: cp.seq,
                    last: self.prev_seq,
                });
            }
            // INVARIANT: pushed in the log's order, so sorted by sequence number.
            let seen = self
                .hashes_at_checkpoints
                .binary_search_by_key(&cp.seq, |(s, _)| *s)
                .ok()
                .and_then(|i| self.hashes_at_checkpoints.get(i))
                .map(|(_, h)| *h);
            match (seen, decode_hash(&cp.hash)) {
                (Some(h), Some(c)) if h == c => {}
                _ => return Err(ChainError::CheckpointMismatch { seq: cp.seq }),
            }
        }
        Ok(())
    }

    /// The last entry's sequence number seen so far (0 before any).
    pub fn last_seq(&self) -> i64 {
        self.prev_seq
    }
}

/// Verifies a whole log held in memory (tests and small logs).
pub fn verify(
    entries: &[AuditEntry],
    checkpoints: &[Checkpoint],
    trusted_key_hex: &str,
) -> Result<VerifyReport, ChainError> {
    let mut v = ChainVerifier::new(checkpoints.iter().map(|c| c.seq));
    for e in entries {
        v.push(e)?;
    }
    v.finish(checkpoints, trusted_key_hex)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn record(i: usize) -> AuditRecord {
        AuditRecord {
            at: format!("2026-11-27T08:00:{:02}Z", i % 60),
            actor: "cli:root".into(),
            action: "token.issue".into(),
            env: Some("staging".into()),
            target: Some(format!("tok_{i}")),
            detail: format!("{{\"n\":{i}}}"),
        }
    }

    fn log(n: usize) -> Vec<AuditEntry> {
        let mut prev = GENESIS;
        let mut out = Vec::new();
        for i in 0..n {
            let seq = i as i64 + 1;
            let e = record(i).chain(seq, &prev);
            prev = decode_hash(&e.hash).unwrap();
            out.push(e);
        }
        out
    }

    fn signed(entries: &[AuditEntry], signer: &CheckpointSigner, at: &[usize]) -> Vec<Checkpoint> {
        at.iter()
            .map(|&i| signer.sign(entries[i].seq, &entries[i].hash, "2026-11-27T09:00:00Z"))
            .collect()
    }

    #[test]
    fn intact_log_verifies() {
        let s = CheckpointSigner::generate().unwrap();
        let l = log(10);
        let cps = signed(&l, &s, &[4, 9]);
        let r = verify(&l, &cps, &s.public_hex()).unwrap();
        assert_eq!(r.last_seq, 10);
        assert_eq!(r.checkpoints, 2);
        // The newest checkpoint is at entry 10 (index 9): the whole log is under a signature.
        assert_eq!(r.signed_to, Some(10));
        let r = verify(&l, &cps[..1], &s.public_hex()).unwrap();
        assert_eq!(r.signed_to, Some(5));
        assert_eq!(verify(&l, &[], &s.public_hex()).unwrap().signed_to, None);
    }

    #[test]
    fn tampering_is_found_and_named() {
        let s = CheckpointSigner::generate().unwrap();
        let l = log(10);
        let cps = signed(&l, &s, &[9]);
        let key = s.public_hex();

        let mut edited = l.clone();
        edited[3].record.actor = "someone-else".into();
        assert_eq!(
            verify(&edited, &cps, &key),
            Err(ChainError::Altered { seq: 4 })
        );

        let mut deleted = l.clone();
        deleted.remove(5);
        assert!(matches!(
            verify(&deleted, &cps, &key),
            Err(ChainError::Gap { expected: 6, .. })
        ));

        let mut reordered = l.clone();
        reordered.swap(2, 3);
        assert!(verify(&reordered, &cps, &key).is_err());

        let truncated = &l[..7];
        assert_eq!(
            verify(truncated, &cps, &key),
            Err(ChainError::Truncated { seq: 10, last: 7 })
        );

        let other = CheckpointSigner::generate().unwrap();
        assert_eq!(
            verify(&l, &cps, &other.public_hex()),
            Err(ChainError::BadSignature { seq: 10 })
        );
    }

    #[test]
    fn none_and_empty_differ() {
        let mut a = record(1);
        let mut b = record(1);
        a.env = None;
        b.env = Some(String::new());
        assert_ne!(a.canonical(1), b.canonical(1));
    }

    proptest! {
        #[test]
        fn canonical_encoding_is_injective(
            a in "[a-z]{0,5}", b in "[a-z]{0,5}", c in "[a-z]{0,5}", d in "[a-z]{0,5}"
        ) {
            // Moving characters between adjacent fields must change the encoding.
            let r1 = AuditRecord { at: a.clone(), actor: b.clone(), action: "x".into(), env: None, target: None, detail: String::new() };
            let r2 = AuditRecord { at: c.clone(), actor: d.clone(), action: "x".into(), env: None, target: None, detail: String::new() };
            prop_assert_eq!(r1.canonical(1) == r2.canonical(1), a == c && b == d);
        }
    }
}
