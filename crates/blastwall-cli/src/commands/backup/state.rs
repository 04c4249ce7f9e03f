//! Where production keeps its backup targets and sources: `<data_dir>/backup.json`, mode 0600.
//! A vault target's credential is kept sealed (age) to an environment's key, or on the drill
//! host to the backup identity the target names; never in plain text. A PostgreSQL source may
//! hold a password in its URL.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use blastwall_vault::s3::S3Options;
use blastwall_vault::source::SourceSpec;
use serde::{Deserialize, Serialize};

use crate::failure::Failure;

/// A vault or an S3 bucket to send backups to (or, on the vault host, to drill from).
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Target {
    /// `http://host:port`, or `s3://bucket/prefix`.
    pub(crate) url: String,
    /// The age recipient backups are encrypted to.
    pub(crate) recipient: Option<String>,
    /// A plain-text vault credential, as files written before sealing held it: read only to
    /// refuse it (fail closed, with a hint to add the target again), never written back.
    #[serde(default, rename = "credential", skip_serializing)]
    pub(crate) plain_credential: Option<String>,
    /// The vault credential (writer in production, reader on the vault host), sealed; none for
    /// S3, whose credential comes from the standard AWS sources and is never stored here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sealed_credential: Option<SealedTargetCredential>,
    /// How to reach the bucket, for an S3 target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) s3: Option<S3Options>,
    /// The age identity file (on the vault host only, for drills and restores).
    #[serde(default)]
    pub(crate) identity: Option<PathBuf>,
    /// Extra CA certificates (PEM) trusted for an `https://` vault, beside the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({}, ***)", self.url)
    }
}

/// A vault credential sealed with age (X25519), as `blastwall upstream add` seals upstream
/// credentials.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct SealedTargetCredential {
    /// The environment whose key opens it; `None`: the target's backup identity opens it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) env: Option<String>,
    /// The recipient it is sealed to (`age1…`).
    pub(crate) recipient: String,
    /// The age ciphertext, base64.
    pub(crate) sealed: String,
}

/// A source and the target it is backed up to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Source {
    #[serde(flatten)]
    pub(crate) spec: SourceSpec,
    pub(crate) target: String,
}

/// The file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct BackupState {
    #[serde(default)]
    pub(crate) targets: BTreeMap<String, Target>,
    #[serde(default)]
    pub(crate) sources: BTreeMap<String, Source>,
}

impl BackupState {
    pub(crate) fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("backup.json")
    }

    pub(crate) fn load(data_dir: &Path) -> Result<Self, Failure> {
        let p = Self::path(data_dir);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                Failure::usage(
                    format!("cannot parse `{}`: {e}", p.display()),
                    "fix or remove the file, then add the targets and sources again",
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) fn save(&self, data_dir: &Path) -> Result<(), Failure> {
        std::fs::create_dir_all(data_dir)?;
        let p = Self::path(data_dir);
        let tmp = p.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).map_err(anyhow::Error::from)?)?;
        f.sync_all()?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, &p)?;
        Ok(())
    }

    /// The target named, or the only one.
    pub(crate) fn target(&self, name: Option<&str>) -> Result<(String, Target), Failure> {
        match name {
            Some(n) => self
                .targets
                .get(n)
                .map(|t| (n.to_owned(), t.clone()))
                .ok_or_else(|| {
                    Failure::usage(
                        format!("no backup target `{n}`"),
                        "add it with `blastwall backup target add NAME --url … --credential-stdin`",
                    )
                }),
            None => {
                let mut it = self.targets.iter();
                match (it.next(), it.next()) {
                    (Some((n, t)), None) => Ok((n.clone(), t.clone())),
                    (None, _) => Err(Failure::usage(
                        "no backup target yet",
                        "add one with `blastwall backup target add NAME --url … --credential-stdin`",
                    )),
                    _ => Err(Failure::usage(
                        "more than one backup target",
                        "name one with `--target NAME`",
                    )),
                }
            }
        }
    }
}
