//! Blastwall's backup vault and the backups it keeps (issue 6, guardrail three).
//!
//! This crate owns the vault server ([`server`]) and its local, create-only, time-locked object
//! store ([`objects`]) with its own credentials ([`creds`]), trusted clock ([`clock`]) and
//! hash-chained audit log ([`log`]); the backup sources that take a consistent dump and its
//! integrity facts ([`source`]); the pipeline that compresses, encrypts and uploads a dump in
//! fixed-size parts ([`pipeline`]); and the drills that restore a backup into a scratch target and
//! compare the facts ([`drill`]). It leaves argument parsing and printing to `blastwall-cli`, and
//! the main store and its audit log to `blastwall-store`.
//!
//! A backup is one whole artifact in a standard format (`pg_dump -Fc`, an SQLite database file, a
//! tar), compressed with zstd and encrypted with age, split into parts named
//! `backups/<source>/<id>/part-NNNNNN`, plus an encrypted `manifest.age` written last: a backup
//! without its manifest is not a backup, so an interrupted upload is never listed.

pub mod client;
pub mod clock;
pub mod creds;
pub mod data;
pub mod drill;
pub mod error;
pub mod facts;
pub mod keys;
pub mod log;
pub mod manifest;
pub mod objects;
pub mod pipeline;
pub mod s3;
pub mod scratch;
pub mod server;
pub mod source;
pub mod store;
pub mod tls;

pub use error::VaultError;

/// The environment name used in vault credentials (`bwt_vault_…`, `bwm_vault_…`).
pub const CREDENTIAL_ENV: &str = "vault";

/// A `Result` with [`VaultError`].
pub type Result<T, E = VaultError> = std::result::Result<T, E>;

/// Now, as an RFC 3339 UTC timestamp.
pub(crate) fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

/// The SHA-256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
