//! A backup's manifest: what was backed up, when, with which tools, the hash of every part and the
//! integrity facts. It is encrypted to the same recipient as the backup and uploaded last.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::VaultError;
use crate::facts::Facts;
use crate::keys::{BackupIdentity, BackupRecipient};

/// The manifest format version.
pub const FORMAT: u32 = 1;

/// The manifest of one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version ([`FORMAT`]).
    pub format: u32,
    /// The backup's id (`20261127T083100Z-1a2b3c`).
    pub id: String,
    /// The source's name.
    pub source: String,
    /// `postgres`, `sqlite` or `dir`.
    pub kind: String,
    /// Where it was (URL without password, or path).
    pub location: String,
    /// When the dump's snapshot was taken (RFC 3339).
    pub taken_at: String,
    /// When the upload finished (RFC 3339).
    pub finished_at: String,
    /// Tool and library versions.
    pub tools: BTreeMap<String, String>,
    /// The size of every part but the last.
    pub part_size: u64,
    /// The encrypted stream's parts, in order.
    pub parts: Vec<PartInfo>,
    /// Size of the plain artifact (the dump before compression).
    pub plain_bytes: u64,
    /// BLAKE3 of the plain artifact.
    pub plain_blake3: String,
    /// The integrity facts recorded at dump time.
    pub facts: Facts,
}

/// One part of the encrypted stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    /// The object name in the vault.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
}

/// `backups/<source>/`.
pub fn source_prefix(source: &str) -> String {
    format!("backups/{source}/")
}

/// `sources/<source>`: the source's registration in the vault (written by `backup source
/// add` and `backup run` with the writer credential, create-only): from its receipt on, the
/// vault's scheduled drills expect a backup of the source every drill interval.
pub fn registration_name(source: &str) -> String {
    format!("{REGISTRATIONS_PREFIX}{source}")
}

/// Where source registrations are.
pub const REGISTRATIONS_PREFIX: &str = "sources/";

/// `backups/<source>/<id>/part-NNNNNN`.
pub fn part_name(source: &str, id: &str, index: usize) -> String {
    format!("backups/{source}/{id}/part-{index:06}")
}

/// `backups/<source>/<id>/manifest.age`.
pub fn manifest_name(source: &str, id: &str) -> String {
    format!("backups/{source}/{id}/manifest.age")
}

/// A new backup id for a dump taken at `at`: sortable by time, unique by its random suffix.
pub fn new_id(at: jiff::Timestamp) -> Result<String, VaultError> {
    let mut r = [0u8; 3];
    getrandom::fill(&mut r).map_err(|e| VaultError::Other(format!("no randomness: {e}")))?;
    Ok(format!(
        "{}-{}",
        at.strftime("%Y%m%dT%H%M%SZ"),
        hex::encode(r)
    ))
}

/// The time encoded in a backup id.
pub fn id_time(id: &str) -> Option<jiff::Timestamp> {
    let stamp = id.split('-').next()?;
    jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", stamp)
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

impl Manifest {
    /// The manifest encrypted to `recipient`.
    pub fn encrypt(&self, recipient: &BackupRecipient) -> Result<Vec<u8>, VaultError> {
        let plain = serde_json::to_vec_pretty(self)
            .map_err(|e| VaultError::Encrypt(format!("cannot encode the manifest: {e}")))?;
        let enc = age::Encryptor::with_recipients(std::iter::once(recipient.as_recipient()))
            .map_err(|e| VaultError::Encrypt(e.to_string()))?;
        let mut out = Vec::with_capacity(plain.len() + 256);
        let mut w = enc
            .wrap_output(&mut out)
            .map_err(|e| VaultError::Encrypt(e.to_string()))?;
        std::io::Write::write_all(&mut w, &plain)
            .and_then(|()| w.finish().map(|_| ()))
            .map_err(|e| VaultError::Encrypt(e.to_string()))?;
        Ok(out)
    }

    /// Opens an encrypted manifest of backup `id`.
    pub fn decrypt(bytes: &[u8], identity: &BackupIdentity, id: &str) -> Result<Self, VaultError> {
        let dec = age::Decryptor::new_buffered(bytes).map_err(|e| VaultError::Decrypt {
            what: format!("the manifest of `{id}`"),
            why: e.to_string(),
        })?;
        let mut r = dec
            .decrypt(std::iter::once(identity.as_identity()))
            .map_err(|e| VaultError::Decrypt {
                what: format!("the manifest of `{id}`"),
                why: e.to_string(),
            })?;
        let mut plain = zeroize::Zeroizing::new(Vec::new());
        std::io::Read::read_to_end(&mut r, &mut plain).map_err(|e| VaultError::Decrypt {
            what: format!("the manifest of `{id}`"),
            why: e.to_string(),
        })?;
        let m: Self = serde_json::from_slice(&plain).map_err(|e| VaultError::Manifest {
            id: id.to_owned(),
            why: e.to_string(),
        })?;
        if m.format != FORMAT {
            return Err(VaultError::Manifest {
                id: id.to_owned(),
                why: format!("format {} (this build reads {FORMAT})", m.format),
            });
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_decode() {
        let t: jiff::Timestamp = "2026-11-27T08:31:00Z".parse().unwrap();
        let id = new_id(t).unwrap();
        assert!(id.starts_with("20261127T083100Z-"));
        assert_eq!(id_time(&id), Some(t));
    }

    #[test]
    fn encrypt_roundtrip_and_wrong_key() {
        let id = BackupIdentity::generate();
        let m = Manifest {
            format: FORMAT,
            id: "x".into(),
            source: "s".into(),
            kind: "dir".into(),
            location: "/x".into(),
            taken_at: "t".into(),
            finished_at: "t".into(),
            tools: BTreeMap::new(),
            part_size: 1,
            parts: vec![],
            plain_bytes: 0,
            plain_blake3: String::new(),
            facts: Facts::Files { files: vec![] },
        };
        let enc = m.encrypt(&id.recipient()).unwrap();
        assert_eq!(Manifest::decrypt(&enc, &id, "x").unwrap(), m);
        let other = BackupIdentity::generate();
        let e = Manifest::decrypt(&enc, &other, "x").unwrap_err();
        assert!(matches!(e, VaultError::Decrypt { .. }), "{e}");
    }
}
