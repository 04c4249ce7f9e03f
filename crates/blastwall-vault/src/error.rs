//! The vault's errors: each variant says what went wrong and, where there is one, what to do next
//! (`hint: …` on its own line, as `blastwall-core`'s errors do).

use std::path::PathBuf;

/// Everything that can go wrong in the vault, a backup or a drill.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// A file operation failed.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        /// What was being done (`read`, `write`, `create`, …).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The disk under the vault (or a scratch folder) is full.
    #[error("no space left on the device holding `{}`\nhint: free space or grow the volume; no earlier backup was touched", path.display())]
    DiskFull {
        /// Where the write failed.
        path: PathBuf,
    },
    /// There is no vault in the folder.
    #[error("no vault at `{}`\nhint: run `blastwall vault init --data {}` first", path.display(), path.display())]
    NotInitialised {
        /// The folder.
        path: PathBuf,
    },
    /// `vault init` on a folder that already holds a vault.
    #[error("a vault already exists at `{}`\nhint: a vault is never re-initialised in place; pick another folder", path.display())]
    AlreadyInitialised {
        /// The folder.
        path: PathBuf,
    },
    /// A settings or state file of the vault could not be understood.
    #[error("cannot parse `{}`: {why}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// An object name that is not allowed.
    #[error(
        "invalid object name `{0}`\nhint: use letters, digits, `.`, `_` and `-`, in segments separated by `/`"
    )]
    BadName(String),
    /// An object larger than the reader accepts (a manifest, or a part bigger than its
    /// manifest says).
    #[error(
        "`{name}` is larger than {max} bytes, more than it may be\nhint: the backup is damaged or was not made by `blastwall backup run`"
    )]
    TooLarge {
        /// The object.
        name: String,
        /// The most accepted.
        max: u64,
    },
    /// The audit log takes no appends, and a change already made waits for its entry.
    #[error(
        "the vault cannot write its audit log, so it makes no change until it can\nhint: retry later; the operator should check the vault's disk and `audit.jsonl`"
    )]
    AuditUnavailable,
    /// A create of a name outside the shapes the vault stores.
    #[error(
        "`{0}` is not a name the vault stores\nhint: objects are created as `sources/<source>`, `backups/<source>/<id>/<file>` or `canary/<name>`"
    )]
    UnexpectedName(String),
    /// A create of an existing name with other bytes.
    #[error(
        "`{name}` already exists with different content\nhint: backups are create-only; write under a new name"
    )]
    Conflict {
        /// The object.
        name: String,
    },
    /// The body did not match the hash the client declared.
    #[error(
        "the body of `{name}` does not match its declared SHA-256 (got {actual})\nhint: the upload was damaged in transit; retry it"
    )]
    HashMismatch {
        /// The object.
        name: String,
        /// The hash of what arrived.
        actual: String,
    },
    /// A delete before retain-until.
    #[error(
        "`{name}` is retained until {until}\nhint: nothing is deleted before its retain-until, not even by an admin"
    )]
    Retained {
        /// The object.
        name: String,
        /// Its retain-until.
        until: String,
    },
    /// An attempt to shorten a retention or the policy.
    #[error("retention can only be lengthened: {what} is {current}, asked {asked}")]
    Shorten {
        /// What was to be shortened.
        what: String,
        /// The current value.
        current: String,
        /// The value asked.
        asked: String,
    },
    /// The credential's role does not allow the action.
    #[error("a {role} credential is not allowed `{action}`")]
    Forbidden {
        /// The role.
        role: String,
        /// The refused action.
        action: String,
    },
    /// No credential, or one the vault does not know.
    #[error(
        "missing or unknown vault credential\nhint: pass a credential made by `blastwall vault credential add`"
    )]
    Unauthorized,
    /// A credential name that is already taken.
    #[error("a credential named `{0}` already exists\nhint: pick another name")]
    CredentialExists(String),
    /// No credential has that name.
    #[error("no vault credential named `{0}`\nhint: `blastwall vault credential list` shows them")]
    NoCredential(String),
    /// The object does not exist.
    #[error("`{0}` not found in the vault")]
    NotFound(String),
    /// Another process serves this vault folder.
    #[error(
        "the vault folder `{0}` is already served by another process\nhint: stop the other `vault serve` first: two would each keep their own quota counts and audit chain over the same files"
    )]
    InUse(std::path::PathBuf),
    /// A request body over the vault's limit for its kind.
    #[error(
        "the request body is larger than {limit} bytes\nhint: this route takes a small JSON body"
    )]
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A writer already has as many uploads in flight as it may.
    #[error(
        "`{writer}` already has {max} uploads in flight\nhint: wait for one to finish; `backup run` sends one part at a time"
    )]
    TooManyUploads {
        /// The writer credential's name.
        writer: String,
        /// The limit.
        max: usize,
    },
    /// An upload sent less than a kilobyte in the vault's client time limit.
    #[error(
        "the upload sent less than 1 KiB in {after}; nothing was stored\nhint: retry; a slow link may need the vault's operator to raise `vault serve --client-timeout`"
    )]
    BodyStalled {
        /// The limit, as a duration (`30s`).
        after: String,
    },
    /// The writer's quota would be exceeded.
    #[error(
        "quota exceeded for `{writer}`: {used} of {quota} bytes used, {size} more asked\nhint: an admin can raise the quota, or expired backups can be deleted"
    )]
    Quota {
        /// The writer credential's name.
        writer: String,
        /// Bytes already stored.
        used: u64,
        /// The quota.
        quota: u64,
        /// Bytes asked.
        size: u64,
    },
    /// A request to the vault failed before an answer.
    #[error(
        "cannot reach the vault at `{url}`: {why}\nhint: check the target's URL and that `blastwall vault serve` runs there"
    )]
    Unreachable {
        /// The vault URL.
        url: String,
        /// What failed.
        why: String,
    },
    /// The vault's TLS certificate is not trusted (or does not name the host).
    #[error(
        "the vault at `{url}` has a certificate this host does not trust: {why}\nhint: add the target again with `--ca-file FILE` naming the PEM certificate of the CA that signed the vault's certificate (or its self-signed certificate)"
    )]
    Untrusted {
        /// The vault URL.
        url: String,
        /// What the TLS layer said.
        why: String,
    },
    /// A plain-HTTP request reached a vault that serves HTTPS only.
    #[error(
        "the vault at `{url}` serves HTTPS only\nhint: use its `https://` URL; the credential just crossed the network in clear, so replace it (`blastwall vault credential add`)"
    )]
    HttpsRequired {
        /// The vault URL.
        url: String,
    },
    /// A certificate, key or CA file that cannot be used for TLS.
    #[error(
        "cannot use `{}` for TLS: {why}\nhint: give a PEM certificate chain (`--tls-cert`) and its PEM private key (`--tls-key`), or a PEM CA certificate (`--ca-file`)", path.display()
    )]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The vault answered with an error.
    #[error("the vault refused: {message} (HTTP {status}, `{code}`)")]
    Remote {
        /// The HTTP status.
        status: u16,
        /// The stable error code.
        code: String,
        /// The vault's message.
        message: String,
    },
    /// An external tool (`pg_dump`, `initdb`, …) failed or is missing.
    #[error("`{tool}` failed: {detail}\nhint: {hint}")]
    Tool {
        /// The tool.
        tool: String,
        /// What it said.
        detail: String,
        /// What to do next.
        hint: String,
    },
    /// A database query of a backup source or scratch target failed.
    #[error("database error while {what}: {source}")]
    Database {
        /// What was being done.
        what: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// An age key could not be parsed.
    #[error("invalid age {what}\nhint: {hint}")]
    BadKey {
        /// `recipient` or `identity`.
        what: &'static str,
        /// What to do next.
        hint: &'static str,
    },
    /// Decryption failed.
    #[error(
        "cannot decrypt {what}: {why}\nhint: use the identity whose public key is `blastwall vault recipient`"
    )]
    Decrypt {
        /// What was being decrypted.
        what: String,
        /// Why.
        why: String,
    },
    /// Encryption failed.
    #[error("cannot encrypt the backup: {0}")]
    Encrypt(String),
    /// A manifest that cannot be read.
    #[error("the manifest of `{id}` is not valid: {why}")]
    Manifest {
        /// The backup.
        id: String,
        /// What is wrong.
        why: String,
    },
    /// No such backup.
    #[error("no backup `{0}` in the vault\nhint: `blastwall backup list` shows the backups")]
    BackupNotFound(String),
    /// A backup source that cannot be dumped.
    #[error("cannot back up `{source_name}`: {why}")]
    Source {
        /// The source.
        source_name: String,
        /// Why.
        why: String,
    },
    /// A restore target that is not empty or not usable.
    #[error(
        "cannot restore to `{target}`: {why}\nhint: restore into an empty database, a new file or an empty folder"
    )]
    Target {
        /// The target.
        target: String,
        /// Why.
        why: String,
    },
    /// A local vault on the same filesystem as the source.
    #[error(
        "the vault stores its data on the same filesystem as `{source_path}` (device {device})\nhint: a backup that is deleted with its source is a copy: put the vault on another volume or host"
    )]
    SameVolume {
        /// The source path.
        source_path: String,
        /// The shared device id.
        device: u64,
    },
    /// An `s3://` URL that cannot be used.
    #[error("invalid S3 location `{url}`: {why}\nhint: write it as `s3://bucket/prefix`")]
    BadS3Url {
        /// The URL as given.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// No AWS credential could be loaded (the message never holds a secret).
    #[error(
        "no AWS credential for the S3 target: {why}\nhint: set `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, or `AWS_PROFILE` (or `--profile`) naming a profile in `~/.aws/credentials`"
    )]
    S3Credentials {
        /// What the credential chain said.
        why: String,
    },
    /// S3 answered a request with an error.
    #[error("S3 {op} of `{key}` failed: {code}{}{}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default(), if message.is_empty() { String::new() } else { format!(": {message}") })]
    S3 {
        /// The S3 operation.
        op: &'static str,
        /// The key (or bucket).
        key: String,
        /// The HTTP status, when there was an answer.
        status: Option<u16>,
        /// S3's error code.
        code: String,
        /// S3's message.
        message: String,
    },
    /// A request to S3 failed before an answer.
    #[error(
        "cannot reach S3 for {op}: {why}\nhint: check the target's `--endpoint` and `--region`, and the network"
    )]
    S3Unreachable {
        /// The S3 operation.
        op: &'static str,
        /// What failed.
        why: String,
    },
    /// A bucket that does not lock new objects in COMPLIANCE mode.
    #[error(
        "the bucket `{bucket}` does not lock backups in COMPLIANCE mode ({found})\nhint: create it with Object Lock enabled and a default COMPLIANCE retention (docs/backups.md, \"S3 Object Lock\"); the credential also needs `s3:GetBucketObjectLockConfiguration`"
    )]
    NotLocked {
        /// The bucket.
        bucket: String,
        /// What its configuration says.
        found: String,
    },
    /// Anything else, with its context.
    #[error("{0}")]
    Other(String),
}

impl VaultError {
    /// An I/O error on `path`, mapping "no space left" to [`VaultError::DiskFull`].
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(28) || source.kind() == std::io::ErrorKind::StorageFull {
            return Self::DiskFull { path };
        }
        Self::Io {
            action,
            path,
            source,
        }
    }

    /// A database error while doing `what`.
    pub fn db(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> Self {
        let what = what.into();
        move |source| Self::Database { what, source }
    }

    /// The stable code the server's JSON error body carries.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Io { .. } | Self::Corrupt { .. } | Self::Other(_) => "internal",
            Self::DiskFull { .. } => "disk_full",
            Self::BadName(_) | Self::UnexpectedName(_) => "bad_name",
            Self::Conflict { .. } => "conflict",
            Self::HashMismatch { .. } => "hash_mismatch",
            Self::Retained { .. } => "retained",
            Self::Shorten { .. } => "shorten_refused",
            Self::Forbidden { .. } => "forbidden",
            Self::Unauthorized => "unauthorized",
            Self::NotFound(_) | Self::BackupNotFound(_) | Self::NoCredential(_) => "not_found",
            Self::Quota { .. } => "quota_exceeded",
            Self::BodyStalled { .. } => "body_timeout",
            Self::TooManyUploads { .. } => "too_many_uploads",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::AuditUnavailable => "audit_unavailable",
            _ => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_is_disk_full() {
        let e = VaultError::io("write", "/v/tmp/x", std::io::Error::from_raw_os_error(28));
        assert!(matches!(e, VaultError::DiskFull { .. }));
        assert!(e.to_string().contains("no earlier backup was touched"));
    }
}
