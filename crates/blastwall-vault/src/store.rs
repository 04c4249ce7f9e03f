//! Where backups are kept, seen from a backup run, a drill or a restore: a Blastwall vault over
//! HTTP ([`VaultClient`]) or an S3 bucket with Object Lock ([`S3Store`]). Both hold the same
//! objects under the same names (`backups/<source>/<id>/part-NNNNNN`, `…/manifest.age`); only
//! how they are created, listed and locked differs.

use bytes::Bytes;

use crate::client::VaultClient;
use crate::drill::DrillRecord;
use crate::error::VaultError;
use crate::objects::ObjectMeta;
use crate::s3::S3Store;

/// A vault or a bucket.
#[derive(Debug, Clone)]
pub enum BackupStore {
    /// A Blastwall vault (`blastwall vault serve`); boxed, its HTTP client being the larger.
    Vault(Box<VaultClient>),
    /// An S3 bucket with Object Lock in COMPLIANCE mode.
    S3(S3Store),
}

/// What a store says about a new object.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its retain-until (RFC 3339), as set by the vault; empty when S3 sets it from the
    /// bucket's default rule.
    pub retain_until: String,
}

impl From<VaultClient> for BackupStore {
    fn from(c: VaultClient) -> Self {
        Self::Vault(Box::new(c))
    }
}

impl From<S3Store> for BackupStore {
    fn from(s: S3Store) -> Self {
        Self::S3(s)
    }
}

impl BackupStore {
    /// Where it is, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Vault(c) => c.base().to_owned(),
            Self::S3(s) => s.location().to_string(),
        }
    }

    /// Checks, before a backup is written, that what is written will be locked: for S3, that
    /// the bucket's default retention is COMPLIANCE. Returns the default retention in days
    /// where the store says it up front.
    pub async fn check_locked(&self) -> Result<Option<u32>, VaultError> {
        match self {
            Self::Vault(_) => Ok(None),
            Self::S3(s) => Ok(s.require_compliance().await?.days),
        }
    }

    /// Creates `name` (create-only) with `bytes` whose SHA-256 (hex) is `sha`.
    pub async fn put_hashed(
        &self,
        name: &str,
        bytes: Bytes,
        sha: String,
    ) -> Result<Stored, VaultError> {
        match self {
            Self::Vault(c) => Ok(Stored {
                retain_until: c.put_hashed(name, bytes, sha).await?.meta.retain_until,
            }),
            Self::S3(s) => {
                s.put_hashed(name, bytes, &sha).await?;
                Ok(Stored {
                    retain_until: String::new(),
                })
            }
        }
    }

    /// Reads `name`.
    pub async fn get(&self, name: &str) -> Result<Bytes, VaultError> {
        match self {
            Self::Vault(c) => c.get(name).await,
            Self::S3(s) => s.get(name).await,
        }
    }

    /// Reads `name` into `sink` as it arrives, failing once more than `max` bytes have come
    /// (memory stays flat whatever the object's size); returns the number of bytes.
    pub async fn get_into(
        &self,
        name: &str,
        sink: &mut dyn std::io::Write,
        max: u64,
    ) -> Result<u64, VaultError> {
        match self {
            Self::Vault(c) => c.get_into(name, sink, max).await,
            Self::S3(s) => s.get_into(name, sink, max).await,
        }
    }

    /// Lists the objects whose names start with `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, VaultError> {
        match self {
            Self::Vault(c) => c.list(prefix).await,
            Self::S3(s) => s.list(prefix).await,
        }
    }

    /// Records a drill's result: in the vault, or as an object
    /// `drills/<source>/<backup>/<time>-<pass|fail>.json` in the bucket (locked like the rest,
    /// and readable from its name alone by a credential that may only list).
    pub async fn record_drill(&self, drill: &DrillRecord) -> Result<(), VaultError> {
        match self {
            Self::Vault(c) => c.record_drill(drill).await,
            Self::S3(s) => {
                let body = serde_json::to_vec_pretty(drill)
                    .map_err(|e| VaultError::Other(format!("cannot encode a drill: {e}")))?;
                let name = drill_name(drill);
                let sha = crate::sha256_hex(&body);
                s.put_hashed(&name, Bytes::from(body), &sha)
                    .await
                    .map(|_| ())
            }
        }
    }

    /// Every drill recorded, oldest first.
    pub async fn drills(&self) -> Result<Vec<DrillRecord>, VaultError> {
        match self {
            Self::Vault(c) => c.drills().await,
            Self::S3(s) => {
                let mut out = Vec::new();
                for o in s.list(DRILLS_PREFIX).await? {
                    let body = s.get(&o.name).await.ok();
                    let rec = body
                        .and_then(|b| serde_json::from_slice::<DrillRecord>(&b).ok())
                        .or_else(|| drill_from_name(&o.name));
                    out.extend(rec);
                }
                out.sort_by(|a, b| a.at.cmp(&b.at));
                Ok(out)
            }
        }
    }
}

const DRILLS_PREFIX: &str = "drills/";

fn drill_name(d: &DrillRecord) -> String {
    let stamp =
        d.at.parse::<jiff::Timestamp>()
            .map(|t| t.strftime("%Y%m%dT%H%M%S%.3fZ").to_string())
            .unwrap_or_else(|_| d.at.replace(':', ""));
    format!(
        "{DRILLS_PREFIX}{}/{}/{stamp}-{}.json",
        d.source,
        d.backup,
        if d.passed { "pass" } else { "fail" }
    )
}

/// A drill as far as its object's name tells (for a credential that may list but not read).
fn drill_from_name(name: &str) -> Option<DrillRecord> {
    let rest = name.strip_prefix(DRILLS_PREFIX)?;
    let mut it = rest.splitn(3, '/');
    let (source, backup, file) = (it.next()?, it.next()?, it.next()?);
    let file = file.strip_suffix(".json")?;
    let (stamp, verdict) = file.rsplit_once('-')?;
    let at = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%S%.fZ", stamp)
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()?
        .timestamp()
        .to_string();
    Some(DrillRecord::untimed(
        source,
        backup,
        at,
        verdict == "pass",
        None,
        "",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drill_is_read_back_from_its_name() {
        let d = DrillRecord::untimed(
            "appdb",
            "20261127T083100Z-1a2b3c",
            "2026-11-27T08:40:01.25Z".into(),
            true,
            None,
            "",
        );
        let name = drill_name(&d);
        assert_eq!(
            name,
            "drills/appdb/20261127T083100Z-1a2b3c/20261127T084001.250Z-pass.json"
        );
        let back = drill_from_name(&name).unwrap();
        assert_eq!(back.backup, d.backup);
        assert_eq!(back.source, "appdb");
        assert!(back.passed);
        assert_eq!(back.at, "2026-11-27T08:40:01.25Z");
    }
}
