//! Errors of the core crate.

use thiserror::Error;

/// A value given by a person (flag, config key, argument) did not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid {what} `{value}`\nhint: {hint}")]
pub struct ParseError {
    /// What was being parsed ("environment name", "duration").
    pub what: &'static str,
    /// The value as given (never a secret: secrets are not parsed through this type).
    pub value: String,
    /// What to do instead.
    pub hint: String,
}

impl ParseError {
    /// A parse error for `value`, with a hint.
    pub fn new(what: &'static str, value: &str, hint: impl Into<String>) -> Self {
        // Bound what we echo back: a value pasted by mistake may be long.
        let value: String = value.chars().take(80).collect();
        Self {
            what,
            value,
            hint: hint.into(),
        }
    }
}

/// A presented credential is not of our format. Never carries the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TokenFormatError {
    /// Not `<kind>_<env>_<random>_<checksum>`.
    #[error("not a Blastwall credential (expected `bwt_<env>_<random>_<checksum>`)")]
    Shape,
    /// The prefix is not one of `bwt`, `bwa`, `bwm`.
    #[error("unknown credential prefix (expected `bwt_`, `bwa_` or `bwm_`)")]
    Prefix,
    /// The checksum does not match: a typo or a truncated copy.
    #[error("credential checksum does not match (a typo or a truncated copy?)")]
    Checksum,
}

/// Sealing or unsealing a credential failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SealError {
    /// The recipient (public key) text is not an age X25519 recipient.
    #[error("invalid sealing key `{0}`: expected an age X25519 recipient (`age1…`)")]
    BadRecipient(String),
    /// The identity (private key) is not an age X25519 identity.
    #[error("invalid environment key: expected an age X25519 identity (`AGE-SECRET-KEY-1…`)")]
    BadIdentity,
    /// Encryption failed.
    #[error("sealing failed: {0}")]
    Encrypt(String),
    /// The sealed value could not be opened with this identity (wrong environment key, or tampered).
    #[error("cannot unseal: the value was not sealed to this environment's key, or was altered")]
    Decrypt,
}

/// The audit chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ChainError {
    /// An entry's stored hash is not the hash of its content and predecessor.
    #[error("audit entry {seq} was altered: its hash does not match its content")]
    Altered {
        /// The entry's sequence number.
        seq: i64,
    },
    /// An entry's `prev_hash` is not the previous entry's hash.
    #[error("audit entry {seq} does not follow entry {prev}: an entry was removed or reordered")]
    Broken {
        /// The entry's sequence number.
        seq: i64,
        /// The sequence number of the entry before it in the log.
        prev: i64,
    },
    /// Sequence numbers are not consecutive.
    #[error("audit entry {expected} is missing (found {found} after {prev})")]
    Gap {
        /// The expected sequence number.
        expected: i64,
        /// The one found.
        found: i64,
        /// The previous one.
        prev: i64,
    },
    /// A checkpoint's signature does not verify.
    #[error("checkpoint at entry {seq} has a bad signature")]
    BadSignature {
        /// The entry the checkpoint covers.
        seq: i64,
    },
    /// A checkpoint names an entry whose hash differs.
    #[error("checkpoint at entry {seq} does not match the log: entries up to {seq} were altered")]
    CheckpointMismatch {
        /// The entry the checkpoint covers.
        seq: i64,
    },
    /// A checkpoint names an entry that is no longer in the log.
    #[error(
        "the log was truncated: checkpoint covers entry {seq} but the log ends at entry {last}"
    )]
    Truncated {
        /// The entry the checkpoint covers.
        seq: i64,
        /// The last entry present.
        last: i64,
    },
}
