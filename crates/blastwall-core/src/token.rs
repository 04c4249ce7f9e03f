//! The bearer credential format: `<kind>_<env>_<random>_<checksum>`.
//!
//! A credential is recognisable offline, the way GitHub's tokens are: a fixed kind prefix, the
//! environment it is bound to, 30 base62 characters of OS randomness (178 bits), and a CRC32 of
//! everything before it, written as 6 base62 characters. A scanner can tell a real credential from
//! noise without asking anyone, and read its environment from it. The checksum protects against
//! typos and helps scanners; it is not a security boundary (the digest lookup is).
//!
//! Kinds: `bwt` (agent token), `bwa` (approver credential), `bwm` (admin credential). An agent token
//! is never accepted where another kind is required, because the kind is part of the format.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::environment::EnvName;
use crate::error::TokenFormatError;

/// Number of random base62 characters in a credential (178 bits of entropy).
pub const RANDOM_LEN: usize = 30;
/// Number of base62 characters of the CRC32 checksum.
pub const CHECKSUM_LEN: usize = 6;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The kind of a credential, carried by its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialKind {
    /// An agent's (or CI job's, or service's) gateway token: `bwt_`.
    Agent,
    /// A human approver's credential: `bwa_`.
    Approver,
    /// An administrator's credential: `bwm_`.
    Admin,
}

impl CredentialKind {
    /// The prefix that starts every credential of this kind, without the underscore.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Agent => "bwt",
            Self::Approver => "bwa",
            Self::Admin => "bwm",
        }
    }

    /// The kind for a prefix, if it is one of ours.
    pub fn from_prefix(prefix: &str) -> Option<Self> {
        match prefix {
            "bwt" => Some(Self::Agent),
            "bwa" => Some(Self::Approver),
            "bwm" => Some(Self::Admin),
            _ => None,
        }
    }

    /// Every kind, in a stable order.
    pub const ALL: [Self; 3] = [Self::Agent, Self::Approver, Self::Admin];
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Agent => "agent",
            Self::Approver => "approver",
            Self::Admin => "admin",
        })
    }
}

/// A credential in plain text. Its `Debug` and `Display` never show the secret.
///
/// Produced once by [`Credential::generate`] (then printed once to the person who asked for it) or
/// by [`Credential::parse`] on what a client presented.
pub struct Credential {
    secret: SecretString,
    kind: CredentialKind,
    env: EnvName,
}

impl Credential {
    /// Generates a fresh credential of `kind` bound to `env`, with randomness from the OS.
    pub fn generate(kind: CredentialKind, env: &EnvName) -> Result<Self, getrandom::Error> {
        let mut random = String::with_capacity(RANDOM_LEN);
        // Rejection sampling keeps every base62 character equally likely: 248 = 4 * 62.
        let mut buf = [0u8; 64];
        while random.len() < RANDOM_LEN {
            getrandom::fill(&mut buf)?;
            for &b in &buf {
                if b < 248 && random.len() < RANDOM_LEN {
                    random.push(char::from(BASE62[usize::from(b % 62)]));
                }
            }
        }
        buf.fill(0);
        let body = format!("{}_{}_{}", kind.prefix(), env.as_str(), random);
        let checksum = base62_checksum(body.as_bytes());
        Ok(Self {
            secret: SecretString::from(format!("{body}_{checksum}")),
            kind,
            env: env.clone(),
        })
    }

    /// Parses and checks the shape and checksum of a presented credential.
    ///
    /// Errors never contain the credential itself.
    pub fn parse(text: &str) -> Result<Self, TokenFormatError> {
        let parts = split_credential(text)?;
        Ok(Self {
            secret: SecretString::from(text.to_owned()),
            kind: parts.kind,
            env: parts.env,
        })
    }

    /// The kind this credential's prefix names.
    pub fn kind(&self) -> CredentialKind {
        self.kind
    }

    /// The environment this credential's prefix names.
    pub fn env(&self) -> &EnvName {
        &self.env
    }

    /// The digest under which the credential is stored and looked up.
    pub fn digest(&self) -> TokenDigest {
        TokenDigest::of(self.secret.expose_secret())
    }

    /// The credential text, for printing it once to the person who asked for it.
    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({}_{}_***)", self.kind.prefix(), self.env)
    }
}

/// What the shape of a credential says, without the secret part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialShape {
    /// The kind named by the prefix.
    pub kind: CredentialKind,
    /// The environment named by the prefix.
    pub env: EnvName,
}

/// Checks a string's credential shape and checksum offline (for scanners and quick refusals).
pub fn check_shape(text: &str) -> Result<CredentialShape, TokenFormatError> {
    let parts = split_credential(text)?;
    Ok(CredentialShape {
        kind: parts.kind,
        env: parts.env,
    })
}

struct Parts {
    kind: CredentialKind,
    env: EnvName,
}

fn split_credential(text: &str) -> Result<Parts, TokenFormatError> {
    let (body, checksum) = text.rsplit_once('_').ok_or(TokenFormatError::Shape)?;
    let mut it = body.splitn(3, '_');
    let prefix = it.next().ok_or(TokenFormatError::Shape)?;
    let env = it.next().ok_or(TokenFormatError::Shape)?;
    let random = it.next().ok_or(TokenFormatError::Shape)?;
    let kind = CredentialKind::from_prefix(prefix).ok_or(TokenFormatError::Prefix)?;
    let env = EnvName::new(env).map_err(|_| TokenFormatError::Shape)?;
    if random.len() != RANDOM_LEN || !random.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(TokenFormatError::Shape);
    }
    if checksum.len() != CHECKSUM_LEN || !checksum.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(TokenFormatError::Shape);
    }
    let expected = base62_checksum(body.as_bytes());
    if !bool::from(expected.as_bytes().ct_eq(checksum.as_bytes())) {
        return Err(TokenFormatError::Checksum);
    }
    Ok(Parts { kind, env })
}

/// CRC32 (IEEE) of `body`, as 6 base62 characters, most significant first.
pub fn base62_checksum(body: &[u8]) -> String {
    let mut n = u64::from(crc32fast::hash(body));
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

/// The SHA-256 digest of a credential: what the store keeps instead of the credential.
///
/// Credentials carry 178 bits of randomness, so an unsalted fast hash is the right tool (as
/// GitHub and others do); a password hash would only slow every request down.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// The digest of a credential's text.
    pub fn of(text: &str) -> Self {
        Self(Sha256::digest(text.as_bytes()).into())
    }

    /// The digest from its lowercase hex form, as stored.
    pub fn from_hex(hex_text: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_text, &mut out).ok()?;
        Some(Self(out))
    }

    /// Lowercase hex, as stored.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &Self) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenDigest({})", &self.to_hex()[..12])
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn env(name: &str) -> EnvName {
        EnvName::new(name).unwrap()
    }

    #[test]
    fn generated_credentials_parse_back() {
        for kind in CredentialKind::ALL {
            let c = Credential::generate(kind, &env("staging")).unwrap();
            let text = c.expose().to_owned();
            assert!(text.starts_with(&format!("{}_staging_", kind.prefix())));
            let parsed = Credential::parse(&text).unwrap();
            assert_eq!(parsed.kind(), kind);
            assert_eq!(parsed.env().as_str(), "staging");
            assert!(parsed.digest().ct_eq(&c.digest()));
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let c = Credential::generate(CredentialKind::Agent, &env("prod")).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains(&c.expose()[9..]));
    }

    #[test]
    fn a_flipped_character_fails_the_checksum() {
        let c = Credential::generate(CredentialKind::Agent, &env("staging")).unwrap();
        let mut bytes = c.expose().as_bytes().to_vec();
        let i = 15;
        bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(
            Credential::parse(&text).unwrap_err(),
            TokenFormatError::Checksum
        );
    }

    #[test]
    fn changing_the_environment_fails_the_checksum() {
        let c = Credential::generate(CredentialKind::Agent, &env("staging")).unwrap();
        let moved = c.expose().replacen("staging", "stagin2", 1);
        assert!(Credential::parse(&moved).is_err());
    }

    #[test]
    fn junk_is_refused() {
        for junk in [
            "",
            "bwt",
            "bwt__",
            "xyz_staging_abc_def",
            "bwt_staging_short_AAAAAA",
        ] {
            assert!(Credential::parse(junk).is_err(), "{junk}");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,120}") {
            let _ = Credential::parse(&s);
        }

        #[test]
        fn roundtrip_for_any_env(name in "[a-z][a-z0-9-]{0,20}") {
            let c = Credential::generate(CredentialKind::Agent, &env(&name)).unwrap();
            let shape = check_shape(c.expose()).unwrap();
            prop_assert_eq!(shape.env.as_str(), name.as_str());
        }
    }
}
