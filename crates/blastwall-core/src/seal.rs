//! Sealing upstream credentials to an environment's key.
//!
//! Each environment has an age X25519 key pair. Anyone holding the public half (the recipient,
//! `age1…`, kept in the store) can seal a credential for that environment; only a process given the
//! private half (the identity, in a 0600 file or an environment variable) can unseal it. A staging
//! gateway is simply never given the production identity: the wall is cryptographic, not an `if`.

use std::fmt;
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretBox, SecretString};

use crate::error::SealError;

/// An environment's private key. `Debug` never shows it; the key material is zeroized on drop by
/// the `age` crate.
pub struct EnvIdentity(age::x25519::Identity);

impl EnvIdentity {
    /// A fresh key pair from the OS's randomness.
    pub fn generate() -> Self {
        Self(age::x25519::Identity::generate())
    }

    /// Parses `AGE-SECRET-KEY-1…` text (comment lines starting with `#` are skipped, as age's key
    /// files have them).
    pub fn parse(text: &str) -> Result<Self, SealError> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or(SealError::BadIdentity)?;
        age::x25519::Identity::from_str(line)
            .map(Self)
            .map_err(|_| SealError::BadIdentity)
    }

    /// The key file's text, in age's own format, so `age -d -i FILE` reads it.
    pub fn to_file_text(&self) -> SecretString {
        let key = self.0.to_string();
        SecretString::from(format!(
            "# public key: {}\n{}\n",
            self.0.to_public(),
            key.expose_secret()
        ))
    }

    /// The public half.
    pub fn recipient(&self) -> EnvRecipient {
        EnvRecipient(self.0.to_public())
    }

    /// Opens a value sealed to this identity.
    pub fn unseal(&self, sealed: &[u8]) -> Result<SecretBox<Vec<u8>>, SealError> {
        let plain = age::decrypt(&self.0, sealed).map_err(|_| SealError::Decrypt)?;
        Ok(SecretBox::new(Box::new(plain)))
    }
}

impl fmt::Debug for EnvIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnvIdentity({}, ***)", self.0.to_public())
    }
}

/// An environment's public sealing key.
#[derive(Clone)]
pub struct EnvRecipient(age::x25519::Recipient);

impl EnvRecipient {
    /// Parses `age1…`.
    pub fn parse(text: &str) -> Result<Self, SealError> {
        age::x25519::Recipient::from_str(text.trim())
            .map(Self)
            .map_err(|_| SealError::BadRecipient(text.chars().take(80).collect()))
    }

    /// Seals `secret` so that only this recipient's identity can open it.
    pub fn seal(&self, secret: &[u8]) -> Result<Vec<u8>, SealError> {
        age::encrypt(&self.0, secret).map_err(|e| SealError::Encrypt(e.to_string()))
    }
}

impl fmt::Display for EnvRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for EnvRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnvRecipient({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_unseal() {
        let id = EnvIdentity::generate();
        let sealed = id.recipient().seal(b"rw_prod_secret").unwrap();
        assert!(!sealed.windows(14).any(|w| w == b"rw_prod_secret"));
        let opened = id.unseal(&sealed).unwrap();
        assert_eq!(opened.expose_secret().as_slice(), b"rw_prod_secret");
    }

    #[test]
    fn another_environment_key_cannot_unseal() {
        let prod = EnvIdentity::generate();
        let staging = EnvIdentity::generate();
        let sealed = prod.recipient().seal(b"rw_prod_secret").unwrap();
        assert!(matches!(staging.unseal(&sealed), Err(SealError::Decrypt)));
    }

    #[test]
    fn key_file_roundtrip() {
        let id = EnvIdentity::generate();
        let text = id.to_file_text();
        let back = EnvIdentity::parse(text.expose_secret()).unwrap();
        assert_eq!(back.recipient().to_string(), id.recipient().to_string());
        assert!(!format!("{id:?}").contains("AGE-SECRET-KEY"));
    }
}
