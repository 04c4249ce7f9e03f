//! The S3 Object Lock backend (issue 6): backups stored as objects in a bucket with Object Lock
//! in COMPLIANCE mode, usually in another account, with the same parts and encrypted manifest
//! as in the vault.
//!
//! The writer needs only `s3:PutObject`, `s3:ListBucket` and
//! `s3:GetBucketObjectLockConfiguration`: every object is created with `If-None-Match: *`
//! (create-only) and its SHA-256 (`x-amz-checksum-sha256`), and retention comes from the bucket's
//! default COMPLIANCE rule, so the writer never sets a lock itself. Credentials come from the
//! standard AWS sources (environment variables, a shared-config profile, web identity, ECS,
//! instance metadata); nothing secret is kept in Blastwall's files.

pub mod probes;

use std::fmt;

use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTimeFormat};
use aws_sdk_s3::types::{ChecksumAlgorithm, ObjectLockRetentionMode};
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::VaultError;
use crate::objects::ObjectMeta;

/// The region used when neither the flag, the environment nor the profile names one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Where backups go: `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// The key prefix, empty or ending in `/`.
    pub prefix: String,
}

impl S3Location {
    /// Parses `s3://bucket[/prefix]`.
    pub fn parse(url: &str) -> Result<Self, VaultError> {
        let bad = |why: &str| VaultError::BadS3Url {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("it does not start with `s3://`"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        if !valid_bucket {
            return Err(bad(
                "the bucket name must be 3 to 63 lowercase letters, digits, `-` or `.`",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix
            .split('/')
            .any(|s| s == "." || s == ".." || (s.is_empty() && !prefix.is_empty()))
            || prefix.bytes().any(|b| b.is_ascii_control())
        {
            return Err(bad("the prefix has an empty, `.` or `..` segment"));
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }

    /// The key of the object `name` (`<prefix><name>`).
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "s3://{}/{}",
            self.bucket,
            self.prefix.trim_end_matches('/')
        )
    }
}

/// How to reach the bucket; none of it is secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Options {
    /// An S3-compatible endpoint (`http://127.0.0.1:9000`); path-style addressing is used then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The region (default: the environment's or the profile's, else `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The AWS shared-config profile holding the credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// The bucket's Object Lock configuration, as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockConfig {
    /// Whether Object Lock is enabled on the bucket.
    pub enabled: bool,
    /// The default retention mode (`COMPLIANCE`, `GOVERNANCE`), if there is a default rule.
    pub mode: Option<String>,
    /// The default retention in days, if there is a default rule.
    pub days: Option<u32>,
}

impl LockConfig {
    /// Whether every new object is locked in COMPLIANCE mode for at least a day.
    pub fn is_compliance(&self) -> bool {
        self.enabled && self.mode.as_deref() == Some("COMPLIANCE") && self.days.unwrap_or(0) > 0
    }

    /// A one-line description.
    pub fn describe(&self) -> String {
        match (self.enabled, &self.mode, self.days) {
            (false, _, _) => "Object Lock is not enabled".into(),
            (true, Some(m), Some(1)) => format!("Object Lock enabled, default {m} for 1 day"),
            (true, Some(m), Some(d)) => format!("Object Lock enabled, default {m} for {d} days"),
            (true, _, _) => "Object Lock enabled, but no default retention rule".into(),
        }
    }
}

/// A bucket (and prefix) holding backups, with the credential the standard AWS sources give.
/// `Debug` shows where, never the credential.
#[derive(Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    location: S3Location,
    /// Whether the endpoint is another S3-compatible server than AWS's.
    custom_endpoint: bool,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3Store({}, ***)", self.location)
    }
}

impl S3Store {
    /// Connects to `location`: loads the credential (checking that there is one) and builds the
    /// client. No request is sent to the bucket yet.
    pub async fn connect(location: S3Location, opts: &S3Options) -> Result<Self, VaultError> {
        use aws_smithy_http_client::tls;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
        if let Some(p) = &opts.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &opts.region {
            loader = loader.region(Region::new(r.clone()));
        }
        let shared = loader.load().await;
        let provider = shared
            .credentials_provider()
            .ok_or_else(|| VaultError::S3Credentials {
                why: "no credential source is configured".into(),
            })?;
        provider
            .provide_credentials()
            .await
            .map_err(|e| VaultError::S3Credentials {
                why: DisplayErrorContext(&e).to_string(),
            })?;
        let mut conf = aws_sdk_s3::config::Builder::from(&shared);
        if shared.region().is_none() {
            conf = conf.region(Region::new(DEFAULT_REGION));
        }
        if let Some(ep) = &opts.endpoint {
            conf = conf
                .endpoint_url(ep.trim_end_matches('/'))
                .force_path_style(true);
        }
        let custom_endpoint = opts.endpoint.as_deref().is_some_and(|ep| {
            !url::Url::parse(ep)
                .ok()
                .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
                .is_some_and(|h| h == "amazonaws.com" || h.ends_with(".amazonaws.com"))
        });
        Ok(Self {
            client: aws_sdk_s3::Client::from_conf(conf.build()),
            location,
            custom_endpoint,
        })
    }

    /// Whether the bucket is on another S3-compatible server than AWS (`--endpoint`).
    pub fn custom_endpoint(&self) -> bool {
        self.custom_endpoint
    }

    /// Where the backups are.
    pub fn location(&self) -> &S3Location {
        &self.location
    }

    /// The SDK client (for the immutability probes).
    pub(crate) fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// Creates `name` with `bytes` whose SHA-256 (hex) is `sha`: `If-None-Match: *` so an
    /// existing object is never replaced, and the checksum so S3 rejects damaged bytes. Returns
    /// the new version's id.
    pub async fn put_hashed(
        &self,
        name: &str,
        bytes: Bytes,
        sha: &str,
    ) -> Result<Option<String>, VaultError> {
        let key = self.location.key(name);
        let raw = hex::decode(sha)
            .map_err(|e| VaultError::Other(format!("not a SHA-256 in hex: {e}")))?;
        let checksum = base64::engine::general_purpose::STANDARD.encode(raw);
        let out = self
            .client
            .put_object()
            .bucket(&self.location.bucket)
            .key(&key)
            .if_none_match("*")
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(checksum)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| {
                let e = S3Failure::of("PutObject", &key, e);
                // 412: `If-None-Match: *` found the key. (409 is a concurrent write of the same
                // key, to be retried, not proof that other bytes are there.)
                if e.status == Some(412) {
                    VaultError::Conflict {
                        name: name.to_owned(),
                    }
                } else {
                    e.into()
                }
            })?;
        Ok(out.version_id().map(str::to_owned))
    }

    /// Reads `name` as it was first written. Objects are create-only (`If-None-Match: *`), but
    /// that header is the client's to send: a thief with `s3:PutObject` can write over a key
    /// without it, and under Object Lock the original then survives as a noncurrent version
    /// while reads of the key return the forgery. So the first version is read, and a key with
    /// more than one is reported as overwritten.
    pub async fn get(&self, name: &str) -> Result<Bytes, VaultError> {
        let mut out = Vec::new();
        self.get_into(name, &mut out, u64::MAX).await?;
        Ok(Bytes::from(out))
    }

    /// Reads `name` into `sink` as it arrives (its first version, as [`Self::get`]), failing
    /// once more than `max` bytes have come; returns the number of bytes.
    pub async fn get_into(
        &self,
        name: &str,
        sink: &mut dyn std::io::Write,
        max: u64,
    ) -> Result<u64, VaultError> {
        let key = self.location.key(name);
        let first = self.first_version(&key).await?;
        let out = self
            .client
            .get_object()
            .bucket(&self.location.bucket)
            .key(&key)
            .set_version_id(first)
            .send()
            .await
            .map_err(|e| VaultError::from(S3Failure::of("GetObject", &key, e)))?;
        let too_large = || VaultError::TooLarge {
            name: name.to_owned(),
            max,
        };
        if out
            .content_length
            .is_some_and(|n| u64::try_from(n).unwrap_or(u64::MAX) > max)
        {
            return Err(too_large());
        }
        let mut body = out.body;
        let mut n = 0u64;
        while let Some(chunk) = body.try_next().await.map_err(|e| VaultError::S3 {
            op: "GetObject",
            key: key.clone(),
            status: None,
            code: "body".into(),
            message: e.to_string(),
        })? {
            n = n.saturating_add(chunk.len() as u64);
            if n > max {
                return Err(too_large());
            }
            sink.write_all(&chunk)
                .map_err(|e| VaultError::io("write", name, e))?;
        }
        Ok(n)
    }

    /// The id of the first (oldest) version of `key`, when the bucket keeps versions (Object Lock
    /// needs them); a key written more than once is logged as overwritten.
    async fn first_version(&self, key: &str) -> Result<Option<String>, VaultError> {
        let mut versions: Vec<String> = Vec::new();
        let mut markers = (None::<String>, None::<String>);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.location.bucket)
                .prefix(key)
                .set_key_marker(markers.0.take())
                .set_version_id_marker(markers.1.take())
                .send()
                .await
                .map_err(|e| VaultError::from(S3Failure::of("ListObjectVersions", key, e)))?;
            // Newest first, within a key (S3's documented order).
            versions.extend(
                page.versions()
                    .iter()
                    .filter(|v| v.key() == Some(key))
                    .filter_map(|v| v.version_id().map(str::to_owned)),
            );
            match (
                page.is_truncated(),
                page.next_key_marker(),
                page.next_version_id_marker(),
            ) {
                (Some(true), Some(k), v) if k == key => {
                    markers = (Some(k.to_owned()), v.map(str::to_owned));
                }
                _ => break,
            }
        }
        if versions.len() > 1 {
            tracing::warn!(
                key,
                versions = versions.len(),
                "object written more than once (create-only objects never are): reading its first version"
            );
        }
        // "null" is the id of an object written while versioning was off.
        Ok(versions.pop().filter(|v| v != "null"))
    }

    /// Lists the objects whose names start with `prefix`. Object listings carry no retention:
    /// for manifests (one per backup) it is read with a HEAD where the credential may (a reader);
    /// elsewhere `retain_until` is empty.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, VaultError> {
        let full = self.location.key(prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.location.bucket)
                .prefix(&full)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| VaultError::from(S3Failure::of("ListObjectsV2", &full, e)))?;
            for o in page.contents() {
                let Some(name) = o.key().and_then(|k| k.strip_prefix(&self.location.prefix)) else {
                    continue;
                };
                out.push(ObjectMeta {
                    name: name.to_owned(),
                    size: o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                    sha256: String::new(),
                    received: o
                        .last_modified()
                        .and_then(|t| t.fmt(DateTimeFormat::DateTime).ok())
                        .unwrap_or_default(),
                    retain_until: String::new(),
                    writer: String::new(),
                });
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(t)) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        for o in out.iter_mut().filter(|o| o.name.ends_with("/manifest.age")) {
            if let Ok(until) = self.retain_until(&o.name).await {
                o.retain_until = until.unwrap_or_default();
            }
        }
        Ok(out)
    }

    /// The object's retain-until, as S3 reports it to this credential (HEAD).
    pub async fn retain_until(&self, name: &str) -> Result<Option<String>, VaultError> {
        let key = self.location.key(name);
        let out = self
            .client
            .head_object()
            .bucket(&self.location.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| VaultError::from(S3Failure::of("HeadObject", &key, e)))?;
        Ok(out
            .object_lock_retain_until_date()
            .and_then(|t| t.fmt(DateTimeFormat::DateTime).ok()))
    }

    /// Reads the bucket's Object Lock configuration.
    pub async fn lock_config(&self) -> Result<LockConfig, VaultError> {
        let bucket = &self.location.bucket;
        let out = match self
            .client
            .get_object_lock_configuration()
            .bucket(bucket)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) => {
                let f = S3Failure::of("GetObjectLockConfiguration", bucket, e);
                if f.code == "ObjectLockConfigurationNotFoundError" {
                    return Ok(LockConfig {
                        enabled: false,
                        mode: None,
                        days: None,
                    });
                }
                return Err(f.into());
            }
        };
        let conf = out.object_lock_configuration();
        let enabled = conf
            .and_then(|c| c.object_lock_enabled())
            .is_some_and(|e| e.as_str() == "Enabled");
        let default = conf
            .and_then(|c| c.rule())
            .and_then(|r| r.default_retention());
        let mode = default
            .and_then(|d| d.mode())
            .map(|m| m.as_str().to_owned());
        let days = default.and_then(|d| match (d.days(), d.years()) {
            (Some(days), _) => u32::try_from(days).ok(),
            (None, Some(y)) => u32::try_from(y).ok().map(|y| y.saturating_mul(365)),
            (None, None) => None,
        });
        Ok(LockConfig {
            enabled,
            mode,
            days,
        })
    }

    /// Fails unless the bucket locks every new object in COMPLIANCE mode by default: backups are
    /// never written where the writer (or anyone) could remove them.
    pub async fn require_compliance(&self) -> Result<LockConfig, VaultError> {
        let lock = self.lock_config().await?;
        if !lock.is_compliance() {
            return Err(VaultError::NotLocked {
                bucket: self.location.bucket.clone(),
                found: lock.describe(),
            });
        }
        Ok(lock)
    }
}

/// The mode a retention probe asks for.
pub(crate) fn mode(name: &str) -> ObjectLockRetentionMode {
    ObjectLockRetentionMode::from(name)
}

/// An S3 answer that is not a success, reduced to what a message and a probe need.
#[derive(Debug, Clone)]
pub(crate) struct S3Failure {
    pub(crate) op: &'static str,
    pub(crate) key: String,
    pub(crate) status: Option<u16>,
    pub(crate) code: String,
    pub(crate) message: String,
}

impl S3Failure {
    pub(crate) fn of<E, R>(op: &'static str, key: &str, e: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug + HasStatus,
    {
        let status = e.raw_response().map(HasStatus::status);
        let (code, message) = match &e {
            SdkError::ServiceError(_) => (
                e.code().unwrap_or("error").to_owned(),
                e.message().unwrap_or("").to_owned(),
            ),
            _ => (
                "unreachable".to_owned(),
                DisplayErrorContext(&e).to_string(),
            ),
        };
        Self {
            op,
            key: key.to_owned(),
            status,
            code,
            message,
        }
    }

    /// Whether S3 refused on authorization (or the lock): HTTP 403 `AccessDenied`. Other 403s
    /// (an expired token, a bad signature, a skewed clock, a proxy's page) say nothing about
    /// what the credential may do.
    pub(crate) fn is_refusal(&self) -> bool {
        self.status == Some(403) && self.code == "AccessDenied"
    }

    pub(crate) fn short(&self) -> String {
        match self.status {
            Some(s) => format!("HTTP {s} {}", self.code),
            None => format!("{}: {}", self.code, one_line(&self.message)),
        }
    }
}

impl From<S3Failure> for VaultError {
    fn from(f: S3Failure) -> Self {
        if f.code == "unreachable" {
            return VaultError::S3Unreachable {
                op: f.op,
                why: one_line(&f.message),
            };
        }
        VaultError::S3 {
            op: f.op,
            key: f.key,
            status: f.status,
            code: f.code,
            message: one_line(&f.message),
        }
    }
}

/// The HTTP status of a raw response.
pub(crate) trait HasStatus {
    fn status(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_urls() {
        let l = S3Location::parse("s3://backups-prod/blastwall/").unwrap();
        assert_eq!(l.bucket, "backups-prod");
        assert_eq!(l.prefix, "blastwall/");
        assert_eq!(
            l.key("backups/a/b/part-000000"),
            "blastwall/backups/a/b/part-000000"
        );
        assert_eq!(l.to_string(), "s3://backups-prod/blastwall");
        let l = S3Location::parse("s3://bkt").unwrap();
        assert_eq!(l.prefix, "");
        for bad in [
            "http://b/x",
            "s3://B",
            "s3://ab",
            "s3://bkt/a//b",
            "s3://bkt/../x",
        ] {
            assert!(S3Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn compliance_needs_mode_and_days() {
        let mut l = LockConfig {
            enabled: true,
            mode: Some("COMPLIANCE".into()),
            days: Some(30),
        };
        assert!(l.is_compliance());
        l.mode = Some("GOVERNANCE".into());
        assert!(!l.is_compliance());
        l.mode = None;
        assert!(!l.is_compliance());
    }
}
