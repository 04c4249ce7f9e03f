//! The records the store keeps: credentials (as digests), upstreams and their sealed
//! credentials. Times are `jiff::Timestamp` (UTC instants).

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::environment::EnvName;
use crate::operation::OperationPattern;
use crate::principal::PrincipalName;
use crate::token::{CredentialKind, TokenDigest};

/// A token's public identifier, `tok_` and 16 hex characters: safe to log, print and audit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenId(pub String);

impl TokenId {
    /// A fresh random id.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b)?;
        Ok(Self(format!("tok_{}", hex::encode(b))))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An issued credential, as stored: the secret itself is never stored, only its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id.
    pub id: TokenId,
    /// Agent token, approver or admin credential.
    pub kind: CredentialKind,
    /// The environment it is bound to.
    pub env: EnvName,
    /// The named human who answers for it.
    pub owner: PrincipalName,
    /// Who holds it (an agent, a CI job, a person).
    pub holder: PrincipalName,
    /// What it may do, as operation patterns.
    pub scope: Vec<OperationPattern>,
    /// When it was issued.
    pub created_at: Timestamp,
    /// When it stops working (always set).
    pub expires_at: Timestamp,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
    /// When it was last used, if ever.
    pub last_used_at: Option<Timestamp>,
    /// SHA-256 of the credential text.
    #[serde(skip)]
    pub digest: Option<TokenDigest>,
}

/// Whether a token works now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenState {
    /// Usable.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
}

impl TokenState {
    /// The state as text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

impl fmt::Display for TokenState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TokenRecord {
    /// The state at `now`: revocation wins over expiry; expiry takes effect at the instant.
    pub fn state(&self, now: Timestamp) -> TokenState {
        if self.revoked_at.is_some() {
            TokenState::Revoked
        } else if now >= self.expires_at {
            TokenState::Expired
        } else {
            TokenState::Active
        }
    }
}

/// An API the gateway fronts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamRecord {
    /// Its name, as in `/proxy/<name>/…` (same rules as environment names).
    pub name: EnvName,
    /// The catalog profile that classifies its requests.
    pub profile: String,
    /// Base URL requests are forwarded to.
    pub base_url: String,
    /// When it was added.
    pub created_at: Timestamp,
}

/// An upstream credential sealed to one environment's key.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedCredential {
    /// The upstream.
    pub upstream: EnvName,
    /// The environment whose key it is sealed to.
    pub env: EnvName,
    /// The age ciphertext.
    pub sealed: Vec<u8>,
    /// The recipient it was sealed to (so a key rotation can be detected).
    pub recipient: String,
    /// When it was stored.
    pub created_at: Timestamp,
}

impl SealedCredential {
    /// SHA-256 of the sealed bytes, in hex: names this ciphertext in the audit log (it reveals
    /// nothing of the credential, which only the environment's key opens), so a credential
    /// swapped in the store past the log shows.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&self.sealed))
    }
}

impl fmt::Debug for SealedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SealedCredential({} in {}, {} bytes sealed)",
            self.upstream,
            self.env,
            self.sealed.len()
        )
    }
}
