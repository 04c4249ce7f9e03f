//! `backup check-immutability` against S3: with the target's (writer) credential, write a canary
//! object and try everything that would let a thief remove or unlock history. The object probes
//! aim at the canary only. The bucket-level probes send changes AWS rejects even from a caller
//! allowed to make them on a locked bucket (an invalid policy, lifecycle or lock document;
//! suspending versioning, which Object Lock forbids), so on AWS they change nothing; they run
//! only when the lock was read as COMPLIANCE, and on another S3-compatible server only when asked
//! (see [`run`]). A probe that gets through shows the credential holds the permission.
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
///
/// The four bucket-level probes (versioning, lock configuration, policy, lifecycle) send
/// requests that AWS rejects even from a caller allowed to make them, on a bucket whose Object
/// Lock is on; another S3-compatible server may apply them instead. So they run only when the
/// lock configuration was read as COMPLIANCE and, on an `--endpoint` other than AWS's, only when
/// `bucket_probes` is set; otherwise each is reported as not run, which fails the check.
pub async fn run(store: &S3Store, bucket_probes: bool) -> Result<Report, VaultError> {
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
        return finish(store, lock, lock_ok, lock_answer, key, probes).await;
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
    // Sets the canary version's retention to `mode` until `until`.
    let retain = |mode_name: &'static str, until: DateTime| {
        c.put_object_retention()
            .bucket(&bucket)
            .key(&key)
            .version_id(&version)
            .retention(
                ObjectLockRetention::builder()
                    .mode(mode(mode_name))
                    .retain_until_date(until)
                    .build(),
            )
            .send()
    };
    let r = retain("GOVERNANCE", later).await;
    probes.push(judge(
        "downgrade the canary from COMPLIANCE to GOVERNANCE",
        "the mode cannot be weakened to one that s3:BypassGovernanceRetention can lift",
        r.map(|_| ())
            .map_err(|e| S3Failure::of("PutObjectRetention", &key, e)),
    ));
    let r = retain("COMPLIANCE", ts(now.as_second() + 3600)).await;
    probes.push(judge(
        "shorten the canary's retention",
        "a retain-until date cannot be brought forward (s3:PutObjectRetention and COMPLIANCE)",
        r.map(|_| ())
            .map_err(|e| S3Failure::of("PutObjectRetention", &key, e)),
    ));
    let bucket_writes_safe = lock_ok && (bucket_probes || !store.custom_endpoint());
    if !bucket_writes_safe {
        let why = if lock_ok {
            "not run: on an S3-compatible endpoint these requests might be applied; run the \
             check with the writer credential and `--bucket-probes`"
        } else {
            "not run: the bucket's lock configuration is not COMPLIANCE (or could not be read), so \
             these requests might be applied"
        };
        for (probe, shows) in BUCKET_PROBES {
            probes.push(Probe {
                probe: (*probe).to_owned(),
                refused: false,
                answer: why.to_owned(),
                shows: (*shows).to_owned(),
            });
        }
        return finish(store, lock, lock_ok, lock_answer, key, probes).await;
    }
    let [versioning, lock_change, policy, lifecycle_probe] = BUCKET_PROBES;
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
        versioning.0,
        versioning.1,
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
        lock_change.0,
        lock_change.1,
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
    let mut p = judge(
        policy.0,
        policy.1,
        r.map(|_| ())
            .map_err(|e| S3Failure::of("PutBucketPolicy", &bucket, e)),
    );
    if !p.refused && p.answer.starts_with("HTTP 405") {
        // S3's answer to a caller allowed PutBucketPolicy but not of the bucket owner's account:
        // it cannot change the policy either.
        p.refused = true;
    }
    probes.push(p);
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
        lifecycle_probe.0,
        lifecycle_probe.1,
        r.map(|_| ())
            .map_err(|e| S3Failure::of("PutBucketLifecycleConfiguration", &bucket, e)),
    ));
    finish(store, lock, lock_ok, lock_answer, key, probes).await
}

/// The bucket-level probes: what each tries, and what its refusal shows.
const BUCKET_PROBES: [(&str, &str); 4] = [
    (
        "suspend versioning",
        "overwrites keep creating versions (s3:PutBucketVersioning)",
    ),
    (
        "change the bucket's lock configuration",
        "future backups keep their COMPLIANCE default (s3:PutBucketObjectLockConfiguration)",
    ),
    (
        "put a bucket policy",
        "the credential cannot grant itself (or anyone) more (s3:PutBucketPolicy)",
    ),
    (
        "put a lifecycle rule",
        "no expiry or transition rule can be set on the backups (s3:PutLifecycleConfiguration)",
    ),
];

/// Ends the check with a control request: if the credential no longer works (expired, revoked,
/// blocked on the way), its refusals proved nothing, and every refusal becomes "could not tell".
async fn finish(
    store: &S3Store,
    lock: Option<LockConfig>,
    lock_ok: bool,
    lock_answer: String,
    canary: String,
    mut probes: Vec<Probe>,
) -> Result<Report, VaultError> {
    let control = store
        .client()
        .list_objects_v2()
        .bucket(&store.location().bucket)
        .prefix(&canary)
        .max_keys(1)
        .send()
        .await;
    if let Err(e) = control {
        let f = S3Failure::of("ListObjectsV2", &canary, e);
        for p in probes.iter_mut().filter(|p| p.refused) {
            p.refused = false;
            p.answer = format!(
                "could not tell: the credential no longer works ({}), so this refusal proves nothing",
                f.short()
            );
        }
    }
    tracing::info!(canary = %canary, "immutability probes done");
    Ok(Report {
        location: store.location().to_string(),
        lock,
        lock_ok,
        lock_answer,
        canary,
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
