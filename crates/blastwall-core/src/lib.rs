//! Blastwall's domain: environments and tiers, the credential format, operations and decisions,
//! the configuration struct, sealing of upstream credentials, and the audit chain's canonical
//! encoding and verification.
//!
//! This crate does no I/O and has no async: storing, serving and scanning belong to the crates
//! that depend on it (`blastwall-store`, `blastwall-gateway`, `blastwall-scan`, …).

pub mod audit;
pub mod config;
pub mod env;
pub mod environment;
pub mod error;
pub mod operation;
pub mod principal;
pub mod record;
pub mod seal;
pub mod token;

pub use environment::{EnvName, Environment, Tier};
pub use error::{ChainError, ParseError, SealError, TokenFormatError};
pub use token::{Credential, CredentialKind, TokenDigest};

/// Parses a human duration (`8h`, `30m`, `1h 30m`) as the CLI and config take it.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, ParseError> {
    humantime::parse_duration(text.trim())
        .map_err(|_| ParseError::new("duration", text, "write it like `8h`, `30m` or `1h 30m`"))
}

/// Lowercase hex of `bytes`, as digests are written in the store, the audit log and output
/// (`hex::encode` goes through a `char` iterator; this writes the bytes straight into the string).
pub fn hex_lower(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    // INVARIANT: `out` is exactly twice as long as `bytes` (the only error `encode_to_slice`
    // has) and hex digits are ASCII; were either ever false, the slower encoder still gives the
    // right text, never an empty one.
    if hex::encode_to_slice(bytes, &mut out).is_err() {
        return hex::encode(bytes);
    }
    String::from_utf8(out).unwrap_or_else(|_| hex::encode(bytes))
}

/// An error and its sources on one line (`outer: inner: cause`), for logs and messages that must
/// keep the underlying reason ("disk full", "certificate expired") which a top-level message
/// leaves to its source.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Formats a duration the way [`parse_duration`] reads it, in days, hours, minutes, seconds and
/// milliseconds (`1000d`, `8h`, `1h 30m`, `250ms`): never in months or years, whose length
/// varies (`1000d` would read `2years 8months 25days 23h 31m 12s`).
pub fn format_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    let parts = [
        (secs / 86_400, "d"),
        (secs % 86_400 / 3_600, "h"),
        (secs % 3_600 / 60, "m"),
        (secs % 60, "s"),
        (u64::from(d.subsec_millis()), "ms"),
    ];
    let text: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if text.is_empty() {
        "0s".to_owned()
    } else {
        text.join(" ")
    }
}

/// Serde helper: a `Duration` as whole seconds.
pub(crate) mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_format_as_they_parse_without_months_or_years() {
        use std::time::Duration;
        for (d, text) in [
            (Duration::from_secs(1000 * 86_400), "1000d"),
            (Duration::from_secs(8 * 3_600), "8h"),
            (Duration::from_secs(5_400), "1h 30m"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(90_500), "1m 30s 500ms"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(super::format_duration(d), text);
            assert_eq!(super::parse_duration(text).unwrap(), d);
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("store operation failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn error_chains_keep_every_source() {
        let e = Outer(std::io::Error::other("disk full"));
        assert_eq!(e.to_string(), "store operation failed");
        assert_eq!(super::error_chain(&e), "store operation failed: disk full");
        let plain = std::io::Error::other("locked");
        assert_eq!(super::error_chain(&plain), "locked");
    }

    #[test]
    fn hex_lower_is_hex_encode() {
        for bytes in [&b""[..], b"\x00", b"\xff\x10\xab", &[7u8; 32]] {
            assert_eq!(super::hex_lower(bytes), hex::encode(bytes));
        }
    }
}
