//! A vault's folder: settings, keys, credentials, clock, audit log, drills and objects.
//!
//! ```text
//! vault.json          settings: minimum retention (only ever lengthened), drill schedule, quota
//! credentials.json    credential digests and roles
//! keys/backup.key     the age identity backups are encrypted to (0600; stays on this host)
//! recipient.txt       its public half, for `blastwall vault recipient`
//! clock               the trusted clock's high-water mark
//! audit.jsonl         the vault's hash-chained audit log
//! drills.jsonl        drill results
//! objects/ meta/ tmp/ the object store
//! ```

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::VaultError;
use crate::keys::{BackupIdentity, BackupRecipient};
use crate::objects::write_atomic;

/// The vault's settings file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Every object is kept at least this long after receipt (seconds); only ever lengthened.
    pub min_retention_secs: u64,
    /// How often `vault serve` drills each source (seconds), if at all.
    #[serde(default)]
    pub drill_every_secs: Option<u64>,
    /// The quota of a writer credential made without `--quota` (bytes).
    #[serde(default)]
    pub default_quota_bytes: Option<u64>,
    /// The PEM certificate chain `vault serve` serves HTTPS with (with `tls_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
}

/// An opened vault folder.
#[derive(Debug, Clone)]
pub struct VaultData {
    root: PathBuf,
    /// Its settings.
    pub settings: Settings,
}

impl VaultData {
    /// Creates a vault in `root` (which must not hold one): settings and a fresh age identity.
    pub fn init(root: &Path, settings: Settings) -> Result<(Self, BackupRecipient), VaultError> {
        let settings_path = root.join("vault.json");
        if settings_path.exists() {
            return Err(VaultError::AlreadyInitialised {
                path: root.to_path_buf(),
            });
        }
        for d in [root.to_path_buf(), root.join("keys")] {
            std::fs::create_dir_all(&d).map_err(|e| VaultError::io("create", &d, e))?;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| VaultError::io("protect", &d, e))?;
        }
        let identity = BackupIdentity::generate();
        let key = root.join("keys/backup.key");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key)
            .map_err(|e| VaultError::io("create", &key, e))?;
        f.write_all(identity.to_file_text().as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| VaultError::io("write", &key, e))?;
        let recipient = identity.recipient();
        write_atomic(
            &root.join("recipient.txt"),
            format!("{recipient}\n").as_bytes(),
        )?;
        let data = Self {
            root: root.to_path_buf(),
            settings,
        };
        data.save_settings()?;
        Ok((data, recipient))
    }

    /// Opens the vault in `root`.
    pub fn open(root: &Path) -> Result<Self, VaultError> {
        let p = root.join("vault.json");
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(VaultError::NotInitialised {
                    path: root.to_path_buf(),
                });
            }
            Err(e) => return Err(VaultError::io("read", &p, e)),
        };
        let settings = serde_json::from_slice(&bytes).map_err(|e| VaultError::Corrupt {
            path: p.clone(),
            why: e.to_string(),
        })?;
        Ok(Self {
            root: root.to_path_buf(),
            settings,
        })
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes the settings.
    pub fn save_settings(&self) -> Result<(), VaultError> {
        let text = serde_json::to_vec_pretty(&self.settings)
            .map_err(|e| VaultError::Other(format!("cannot encode settings: {e}")))?;
        write_atomic(&self.root.join("vault.json"), &text)
    }

    /// The minimum retention.
    pub fn min_retention(&self) -> Duration {
        Duration::from_secs(self.settings.min_retention_secs)
    }

    /// `credentials.json`.
    pub fn credentials_path(&self) -> PathBuf {
        self.root.join("credentials.json")
    }

    /// `audit.jsonl`.
    pub fn audit_path(&self) -> PathBuf {
        self.root.join("audit.jsonl")
    }

    /// `clock`.
    pub fn clock_path(&self) -> PathBuf {
        self.root.join("clock")
    }

    /// `drills.jsonl`.
    pub fn drills_path(&self) -> PathBuf {
        self.root.join("drills.jsonl")
    }

    /// `keys/backup.key`.
    pub fn identity_path(&self) -> PathBuf {
        self.root.join("keys/backup.key")
    }

    /// The public key backups are encrypted to.
    pub fn recipient(&self) -> Result<BackupRecipient, VaultError> {
        let p = self.root.join("recipient.txt");
        let text = std::fs::read_to_string(&p).map_err(|e| VaultError::io("read", &p, e))?;
        BackupRecipient::parse(&text)
    }

    /// The identity that opens backups (for drills on this host).
    pub fn identity(&self) -> Result<BackupIdentity, VaultError> {
        read_identity(&self.identity_path())
    }

    /// The device id of the filesystem holding the objects.
    pub fn device(&self) -> Result<u64, VaultError> {
        std::fs::metadata(&self.root)
            .map(|m| m.dev())
            .map_err(|e| VaultError::io("stat", &self.root, e))
    }
}

/// Reads an age identity file.
pub fn read_identity(path: &Path) -> Result<BackupIdentity, VaultError> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| VaultError::io("read", path, e))?,
    );
    BackupIdentity::parse(&text)
}

/// This host's identity for the same-volume guard: `/etc/machine-id`, else the hostname.
pub fn machine_id() -> String {
    std::fs::read_to_string("/etc/machine-id")
        .or_else(|_| std::fs::read_to_string("/proc/sys/kernel/hostname"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_open() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("v");
        let settings = Settings {
            min_retention_secs: 30 * 86400,
            drill_every_secs: None,
            default_quota_bytes: None,
            tls_cert: None,
            tls_key: None,
        };
        let (_, r) = VaultData::init(&root, settings.clone()).unwrap();
        let d = VaultData::open(&root).unwrap();
        assert_eq!(d.settings, settings);
        assert_eq!(d.recipient().unwrap().to_string(), r.to_string());
        assert_eq!(d.identity().unwrap().recipient().to_string(), r.to_string());
        assert!(matches!(
            VaultData::init(&root, settings),
            Err(VaultError::AlreadyInitialised { .. })
        ));
        let mode = std::fs::metadata(d.identity_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
