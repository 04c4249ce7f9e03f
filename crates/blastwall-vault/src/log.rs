//! The vault's own hash-chained audit log: every create, refusal, drill and expiry.
//!
//! One JSON line per entry in `audit.jsonl`, chained with core's canonical encoding
//! ([`blastwall_core::audit`]), appended and fsynced under a lock on the file, so that other
//! processes may append too (`vault credential add|revoke|rotate` beside a running vault). The
//! log is checked from the start when the vault opens, and again before an append that finds
//! the file's length changed by someone else, so an edited log is refused rather than extended.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use blastwall_core::audit::{AuditEntry, AuditRecord, ChainVerifier, GENESIS, decode_hash};

use crate::error::VaultError;

/// The append-only audit log of a vault.
#[derive(Debug)]
pub struct VaultLog {
    path: PathBuf,
    tail: Mutex<Tail>,
}

/// The last entry this process knows of, and the file's length after it.
#[derive(Debug)]
struct Tail {
    seq: i64,
    hash: [u8; 32],
    len: u64,
}

impl VaultLog {
    /// Opens (and verifies) the log at `path`; creates it when missing.
    pub fn open(path: &Path) -> Result<Self, VaultError> {
        // Read under a shared lock: another process's append (which holds the exclusive one)
        // is never seen half-written.
        let reading = match std::fs::File::open(path) {
            Ok(f) => {
                f.lock_shared()
                    .map_err(|e| VaultError::io("lock", path, e))?;
                Some(f)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(VaultError::io("open", path, e)),
        };
        let (seq, hash, len) = verify_with_len(path)?;
        drop(reading);
        Ok(Self {
            path: path.to_path_buf(),
            tail: Mutex::new(Tail { seq, hash, len }),
        })
    }

    /// Appends an entry by `actor`.
    pub fn append(
        &self,
        actor: &str,
        action: &str,
        target: Option<&str>,
        detail: serde_json::Value,
    ) -> Result<(), VaultError> {
        let mut tail = self
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let record = AuditRecord {
            at: crate::now().to_string(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            env: None,
            // A refused request's target is whatever the client sent (up to the URL's length):
            // bounded, so that refusals cannot grow the log by kilobytes each.
            target: target.map(bounded_target),
            detail: detail.to_string(),
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| VaultError::io("open", &self.path, e))?;
        // Held until `f` is closed: another process's append waits for this one.
        f.lock()
            .map_err(|e| VaultError::io("lock", &self.path, e))?;
        let before = f
            .metadata()
            .map_err(|e| VaultError::io("read", &self.path, e))?
            .len();
        if before != tail.len {
            // Another process appended since (or the file was edited): check the whole chain
            // again and go on from its last entry.
            let (seq, hash, len) = verify_with_len(&self.path)?;
            if len != before {
                return Err(VaultError::Other(format!(
                    "{} changed while locked for an append",
                    self.path.display()
                )));
            }
            *tail = Tail { seq, hash, len };
        }
        let entry = record.chain(tail.seq + 1, &tail.hash);
        let mut line = serde_json::to_vec(&entry)
            .map_err(|e| VaultError::Other(format!("cannot encode an audit entry: {e}")))?;
        line.push(b'\n');
        if let Err(e) = f.write_all(&line).and_then(|()| f.sync_data()) {
            // A write cut short (a full disk) must not leave a torn last line: the log would no
            // longer verify and the vault would refuse to start. Back to the last whole entry.
            let _ = f.set_len(before).and_then(|()| f.sync_data());
            return Err(VaultError::io("append to", &self.path, e));
        }
        let hash = decode_hash(&entry.hash).unwrap_or(GENESIS);
        *tail = Tail {
            seq: entry.seq,
            hash,
            len: before + line.len() as u64,
        };
        Ok(())
    }

    /// Every entry, in order.
    pub fn entries(&self) -> Result<Vec<AuditEntry>, VaultError> {
        read_entries(&self.path)
    }
}

/// The most characters of a target the log keeps.
const MAX_TARGET: usize = 512;

/// `target`, cut to [`MAX_TARGET`] characters (with `…` when cut).
fn bounded_target(target: &str) -> String {
    if target.chars().count() <= MAX_TARGET {
        return target.to_owned();
    }
    let mut out: String = target.chars().take(MAX_TARGET).collect();
    out.push('…');
    out
}

/// What `vault log verify` found in an intact log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogSummary {
    /// Entries in the log.
    pub entries: usize,
    /// The last entry's sequence number (0 for an empty log).
    pub head_seq: i64,
    /// The last entry's hash (hex; zeros for an empty log): write it down elsewhere, and a
    /// later truncation back past it shows.
    pub head_hash: String,
}

/// The first entry of a log that does not verify.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogBreak {
    /// The line of `audit.jsonl` (from 1).
    pub line: usize,
    /// The entry's sequence number, when the line could be read.
    pub seq: Option<i64>,
    /// What is wrong.
    pub why: String,
}

/// Checks the whole chain of the log at `path`, line by line: `Ok(Ok(summary))` when intact,
/// `Ok(Err(break))` naming the first bad entry, `Err` when the file cannot be read at all.
/// A missing file is an empty log.
pub fn check(path: &Path) -> Result<Result<LogSummary, LogBreak>, VaultError> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Ok(summary(0, 0, &GENESIS)));
        }
        Err(e) => return Err(VaultError::io("open", path, e)),
    };
    let mut v = ChainVerifier::new([]);
    let (mut n, mut seq, mut hash) = (0usize, 0i64, GENESIS);
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| VaultError::io("read", path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: AuditEntry = match serde_json::from_str(&line) {
            Ok(e) => e,
            Err(e) => {
                return Ok(Err(LogBreak {
                    line: i + 1,
                    seq: None,
                    why: format!("the line is not an audit entry: {e}"),
                }));
            }
        };
        if let Err(e) = v.push(&entry) {
            return Ok(Err(LogBreak {
                line: i + 1,
                seq: Some(entry.seq),
                why: e.to_string(),
            }));
        }
        n += 1;
        seq = entry.seq;
        hash = decode_hash(&entry.hash).unwrap_or(GENESIS);
    }
    Ok(Ok(summary(n, seq, &hash)))
}

fn summary(entries: usize, head_seq: i64, hash: &[u8; 32]) -> LogSummary {
    LogSummary {
        entries,
        head_seq,
        head_hash: hex::encode(hash),
    }
}

/// The last `n` entries (all when the log is shorter), without verifying the chain.
pub fn tail(path: &Path, n: usize) -> Result<Vec<AuditEntry>, VaultError> {
    let mut all = read_entries(path)?;
    let skip = all.len().saturating_sub(n);
    Ok(all.split_off(skip))
}

/// Checks the whole chain; returns the last sequence number and hash.
pub fn verify(path: &Path) -> Result<(i64, [u8; 32]), VaultError> {
    verify_with_len(path).map(|(seq, hash, _)| (seq, hash))
}

/// [`verify`], and the length of the file it read.
fn verify_with_len(path: &Path) -> Result<(i64, [u8; 32], u64), VaultError> {
    let (entries, len) = read_entries_with_len(path)?;
    let mut v = ChainVerifier::new([]);
    for e in &entries {
        v.push(e).map_err(|e| VaultError::Corrupt {
            path: path.to_path_buf(),
            why: format!("the audit chain is broken: {e}"),
        })?;
    }
    let (seq, hash) = entries.last().map_or((0, GENESIS), |e| {
        (e.seq, decode_hash(&e.hash).unwrap_or(GENESIS))
    });
    Ok((seq, hash, len))
}

fn read_entries(path: &Path) -> Result<Vec<AuditEntry>, VaultError> {
    read_entries_with_len(path).map(|(entries, _)| entries)
}

/// Every entry, and the number of bytes read.
fn read_entries_with_len(path: &Path) -> Result<(Vec<AuditEntry>, u64), VaultError> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(VaultError::io("open", path, e)),
    };
    let mut reader = std::io::BufReader::new(f);
    let (mut out, mut len, mut line, mut number) = (Vec::new(), 0u64, Vec::new(), 0usize);
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| VaultError::io("read", path, e))?;
        if n == 0 {
            break;
        }
        len += n as u64;
        number += 1;
        if line.trim_ascii().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_slice(&line).map_err(|e| VaultError::Corrupt {
                path: path.to_path_buf(),
                why: format!("line {number}: {e}"),
            })?,
        );
    }
    Ok((out, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two writers of one log (a running vault and a `vault credential` command) continue each
    /// other's chain; a log edited by someone else is refused, not extended.
    #[test]
    fn two_processes_append_to_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        let served = VaultLog::open(&p).unwrap();
        served
            .append("w", "object.create", Some("a"), serde_json::json!({}))
            .unwrap();
        let command = VaultLog::open(&p).unwrap();
        command
            .append(
                "operator",
                "credential.revoke",
                Some("w"),
                serde_json::json!({}),
            )
            .unwrap();
        served
            .append(
                "anonymous",
                "object.refuse",
                Some("b"),
                serde_json::json!({}),
            )
            .unwrap();
        let seqs: Vec<i64> = served.entries().unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(verify(&p).unwrap().0, 3);

        // An entry rewritten behind the vault's back, and the file's length with it: the next
        // append refuses (`vault log verify` finds an edit of any length).
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replace("credential.revoke", "credential.add")).unwrap();
        let e = served
            .append("w", "object.create", Some("c"), serde_json::json!({}))
            .unwrap_err();
        assert!(e.to_string().contains("chain"), "{e}");
        assert_eq!(read_entries(&p).unwrap().len(), 3);
    }

    #[test]
    fn long_targets_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        let log = VaultLog::open(&p).unwrap();
        let long = "x".repeat(60_000);
        log.append(
            "anonymous",
            "object.refuse",
            Some(&long),
            serde_json::json!({}),
        )
        .unwrap();
        assert!(std::fs::metadata(&p).unwrap().len() < 2_000);
        let entries = log.entries().unwrap();
        assert_eq!(
            entries[0]
                .record
                .target
                .as_deref()
                .map(|t| t.chars().count()),
            Some(MAX_TARGET + 1)
        );
    }

    #[test]
    fn appends_chain_and_tampering_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        let log = VaultLog::open(&p).unwrap();
        log.append(
            "w",
            "object.create",
            Some("a"),
            serde_json::json!({"size": 1}),
        )
        .unwrap();
        log.append("w", "object.refuse", Some("a"), serde_json::json!({}))
            .unwrap();
        drop(log);
        let log = VaultLog::open(&p).unwrap();
        log.append("r", "drill", None, serde_json::json!({}))
            .unwrap();
        assert_eq!(log.entries().unwrap().len(), 3);
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replace("object.refuse", "object.create")).unwrap();
        assert!(VaultLog::open(&p).is_err());
        let broken = check(&p).unwrap().unwrap_err();
        assert_eq!((broken.line, broken.seq), (2, Some(2)), "{broken:?}");
        assert!(broken.why.contains("altered"), "{broken:?}");
    }

    #[test]
    fn check_names_a_deleted_or_reordered_entry() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        let log = VaultLog::open(&p).unwrap();
        for i in 0..4 {
            log.append(
                "w",
                "object.create",
                Some(&format!("o{i}")),
                serde_json::json!({}),
            )
            .unwrap();
        }
        let ok = check(&p).unwrap().unwrap();
        assert_eq!((ok.entries, ok.head_seq), (4, 4));
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&p, format!("{}\n{}\n{}\n", lines[0], lines[2], lines[3])).unwrap();
        let broken = check(&p).unwrap().unwrap_err();
        assert_eq!(broken.line, 2);
        assert!(broken.why.contains("entry 2 is missing"), "{broken:?}");
        std::fs::write(&p, format!("{}\n{}\n", lines[1], lines[0])).unwrap();
        assert_eq!(check(&p).unwrap().unwrap_err().line, 1);
        assert_eq!(check(&dir.path().join("none")).unwrap().unwrap().entries, 0);
    }
}
