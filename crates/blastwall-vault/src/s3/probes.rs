//! `backup check-immutability` against S3: with the target's (writer) credential, write a canary
//! object and try everything that would let a thief remove or unlock history. Every probe aims
//! at the canary or sends a change the bucket would reject even if it were allowed (an invalid
//! policy, lifecycle or lock document), so a probe that gets through changes no real backup and
//! no bucket setting; it shows that the credential holds the permission.
//!
//! A probe passes only when S3 refuses it with HTTP 403 (denied by IAM, a bucket policy or the
//! lock). Any other answer (a success, a validation error after the permission check, no answer)
//! is a failure naming the probe: fail closed.

use aws_sdk_s3::primitives::DateTime;
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, BucketVersioningStatus, DefaultRetention, ExpirationStatus,
    LifecycleRule, LifecycleRuleFilter, ObjectLockConfiguration, ObjectLockEnabled,
    ObjectLockRetention, ObjectLockRule, VersioningConfiguration,
};
use bytes::Bytes;
use serde::Serialize;

use super::{LockConfig, S3Failure, S3Store, mode};
use crate::error::VaultError;

/// One attempt and how S3 answered.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// What was tried.
    pub probe: String,
    /// Whether S3 refused it (HTTP 403).
    pub refused: bool,
    /// S3's answer, short.
    pub answer: String,
    /// What a refusal shows.
    pub shows: String,
}

/// The whole check.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `s3://bucket/prefix`.
    pub location: String,
    /// The bucket's lock configuration, when it could be read.
    pub lock: Option<LockConfig>,
    /// Whether it locks every new object in COMPLIANCE mode.
    pub lock_ok: bool,
    /// The lock configuration, or why it could not be read, in words.
    pub lock_answer: String,
    /// The canary's key.
    pub canary: String,
    /// The probes, in the order they ran.
    pub probes: Vec<Probe>,
}

impl Report {
    /// Whether everything was refused and the bucket is locked in COMPLIANCE mode.
    pub fn pass(&self) -> bool {
        self.lock_ok && self.probes.iter().all(|p| p.refused)
    }
}

/// Runs the check: reads the lock configuration, writes a canary, then tries to delete it, to
/// unlock it, and to change the bucket's versioning, lock configuration, policy and lifecycle.
pub async fn run(store: &S3Store) -> Result<Report, VaultError> {
    let (lock, lock_answer) = match store.lock_config().await {
        Ok(l) => {
            let d = l.describe();
            (Some(l), d)
        }
        Err(e) => (
            None,
            format!("cannot read it: {}", crate::drill::one_line(&e)),
        ),
    };
    let lock_ok = lock.as_ref().is_some_and(LockConfig::is_compliance);
    let mut rnd = [0u8; 6];
    getrandom::fill(&mut rnd).map_err(|e| VaultError::Other(format!("no randomness: {e}")))?;
    let now = crate::now();
    let canary = format!(
        "canary/{}-{}",
        now.strftime("%Y%m%dT%H%M%SZ"),
        hex::encode(rnd)
    );
    let body = Bytes::from(format!("blastwall canary {now}"));
    let sha = crate::sha256_hex(&body);
    let version = store.put_hashed(&canary, body, &sha).await?;
    let key = store.location().key(&canary);
    let bucket = store.location().bucket.clone();
    let c = store.client();
    let mut probes = Vec::new();

    let r = c.delete_object().bucket(&bucket).key(&key).send().await;
    probes.push(judge(
        "delete the canary (a delete marker)",
        "the credential cannot hide a backup behind a delete marker (s3:DeleteObject)",
        r.map(|_| ())
            .map_err(|e| S3Failure::of("DeleteObject", &key, e)),
    ));
    let Some(version) = version else {
        probes.push(Probe {
            probe: "delete a canary version".into(),
            refused: false,
            answer: "could not tell: S3 returned no version id (is versioning enabled?)".into(),
            shows: "a locked version cannot be deleted".into(),
        });
        return Ok(Report {
            location: store.location().to_string(),
            lock,
            lock_ok,
            lock_answer,
            canary: key,
            probes,
        });
    };
    let r = c
        .delete_object()
        .bucket(&bucket)
        .key(&key)
        .version_id(&version)
        .send()
        .await;
    probes.push(judge(
        "delete a canary version",
        "a locked version cannot be deleted (s3:DeleteObjectVersion and the lock)",
        r.map(|_| ())
            .map_err(|e| S3Failure::of("DeleteObject", &key, e)),
    ));
    let r = c
        .delete_object()
        .bucket(&bucket)
        .key(&key)
        .version_id(&version)
        .bypass_governance_retention(true)
        .send()
        .await;
    probes.push(judge(
        "bypass-governance delete of the canary version",
        "s3:BypassGovernanceRetention does not help: COMPLIANCE has no bypass",
        r.map(|_| ())
            .map_err(|e| S3Failure::of("DeleteObject", &key, e)),
    ));
    // A pure downgrade: GOVERNANCE, one day past the default retention, so it is not also a
    // shortening.
    let days = lock.as_ref().and_then(|l| l.days).unwrap_or(1).max(1);
    let later = ts(now.as_second() + (i64::from(days) + 1) * 86_400);
    let r = c
        .put_object_retention()
        .bucket(&bucket)
        .key(&key)
        .version_id(&version)
        .retention(
            ObjectLockRetention::builder()
                .mode(mode("GOVERNANCE"))
                .retain_until_date(later)
                .build(),
        )
        .send()
        .await;
    probes.push(judge(
        "downgrade the canary from COMPLIANCE to GOVERNANCE",
        "the mode cannot be weakened to one that s3:BypassGovernanceRetention can lift",
        r.map(|_| ())
            .map_err(|e| S3Failure::of("PutObjectRetention", &key, e)),
    ));
    let soon = ts(now.as_second() + 3600);
    let r = c
        .put_object_retention()
        .bucket(&bucket)
        .key(&key)
        .version_id(&version)
        .retention(
            ObjectLockRetention::builder()
                .mode(mode("COMPLIANCE"))
                .retain_until_date(soon)
                .build(),
        )
        .send()
        .await;
    probes.push(judge(
        "shorten the canary's retention",
        "a retain-until date cannot be brought forward (s3:PutObjectRetention and COMPLIANCE)",
        r.map(|_| ())
            .map_err(|e| S3Failure::of("PutObjectRetention", &key, e)),
    ));
    let r = c
        .put_bucket_versioning()
        .bucket(&bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Suspended)
                .build(),
        )
        .send()
        .await;
    probes.push(judge(
        "suspend versioning",
        "overwrites keep creating versions (s3:PutBucketVersioning)",
        r.map(|_| ())
            .map_err(|e| S3Failure::of("PutBucketVersioning", &bucket, e)),
    ));
    // Invalid on purpose (days and years together): even if allowed, nothing would change.
    let r = c
        .put_object_lock_configuration()
        .bucket(&bucket)
        .object_lock_configuration(
            ObjectLockConfiguration::builder()
                .object_lock_enabled(ObjectLockEnabled::Enabled)
                .rule(
                    ObjectLockRule::builder()
                        .default_retention(
                            DefaultRetention::builder()
                                .mode(mode("GOVERNANCE"))
                                .days(1)
                                .years(1)
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .send()
        .await;
    probes.push(judge(
        "change the bucket's lock configuration",
        "future backups keep their COMPLIANCE default (s3:PutBucketObjectLockConfiguration)",
        r.map(|_| ())
            .map_err(|e| S3Failure::of("PutObjectLockConfiguration", &bucket, e)),
    ));
    // An empty document: invalid, so an allowed request still changes nothing.
    let r = c
        .put_bucket_policy()
        .bucket(&bucket)
        .policy("{}")
        .send()
        .await;
    probes.push(judge(
        "put a bucket policy",
        "the credential cannot grant itself (or anyone) more (s3:PutBucketPolicy)",
        r.map(|_| ())
            .map_err(|e| S3Failure::of("PutBucketPolicy", &bucket, e)),
    ));
    // A rule with no action: invalid, so an allowed request still changes nothing.
    let rule = LifecycleRule::builder()
        .id("blastwall-immutability-probe")
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix(&key).build())
        .build()
        .map_err(|e| VaultError::Other(format!("cannot build the lifecycle probe: {e}")))?;
    let lifecycle = BucketLifecycleConfiguration::builder()
        .rules(rule)
        .build()
        .map_err(|e| VaultError::Other(format!("cannot build the lifecycle probe: {e}")))?;
    let r = c
        .put_bucket_lifecycle_configuration()
        .bucket(&bucket)
        .lifecycle_configuration(lifecycle)
        .send()
        .await;
    probes.push(judge(
        "put a lifecycle rule",
        "no expiry or transition rule can be set on the backups (s3:PutLifecycleConfiguration)",
        r.map(|_| ())
            .map_err(|e| S3Failure::of("PutBucketLifecycleConfiguration", &bucket, e)),
    ));
    tracing::info!(canary = %key, "immutability probes done");
    Ok(Report {
        location: store.location().to_string(),
        lock,
        lock_ok,
        lock_answer,
        canary: key,
        probes,
    })
}

fn ts(secs: i64) -> DateTime {
    DateTime::from_secs(secs)
}

fn judge(probe: &str, shows: &str, r: Result<(), S3Failure>) -> Probe {
    let (refused, answer) = match r {
        Ok(()) => (false, "accepted".to_owned()),
        Err(f) if f.is_refusal() => (true, f.short()),
        Err(f) if f.status.is_some() => {
            (false, format!("{}: past the permission check", f.short()))
        }
        Err(f) => (false, format!("could not tell: {}", f.short())),
    };
    Probe {
        probe: probe.to_owned(),
        refused,
        answer,
        shows: shows.to_owned(),
    }
}
