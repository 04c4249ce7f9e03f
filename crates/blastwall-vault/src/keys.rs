//! The age keys backups are encrypted to: the vault host keeps the identity (with the drill
//! runner), production holds only the recipient.

use std::fmt;
use std::str::FromStr;

use secrecy::ExposeSecret;

use crate::error::VaultError;

/// The private key that opens backups. `Debug` never shows it; `age` zeroizes it on drop.
#[derive(Clone)]
pub struct BackupIdentity(age::x25519::Identity);

impl BackupIdentity {
    /// A fresh key pair.
    pub fn generate() -> Self {
        Self(age::x25519::Identity::generate())
    }

    /// Parses an age key file's text (`# …` comment lines are skipped).
    pub fn parse(text: &str) -> Result<Self, VaultError> {
        text.lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .and_then(|l| age::x25519::Identity::from_str(l).ok())
            .map(Self)
            .ok_or(VaultError::BadKey {
                what: "identity",
                hint: "expected an `AGE-SECRET-KEY-1…` line, as `blastwall vault init` writes it",
            })
    }

    /// The key file's text in age's own format, so `age -d -i FILE` reads it.
    pub fn to_file_text(&self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(format!(
            "# blastwall backup identity; public key: {}\n{}\n",
            self.0.to_public(),
            self.0.to_string().expose_secret()
        ))
    }

    /// The public half.
    pub fn recipient(&self) -> BackupRecipient {
        BackupRecipient(self.0.to_public())
    }

    /// For `age::Decryptor::decrypt`.
    pub(crate) fn as_identity(&self) -> &dyn age::Identity {
        &self.0
    }
}

impl fmt::Debug for BackupIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BackupIdentity({}, ***)", self.0.to_public())
    }
}

/// The public key backups are encrypted to (`age1…`).
#[derive(Clone)]
pub struct BackupRecipient(age::x25519::Recipient);

impl BackupRecipient {
    /// Parses `age1…`.
    pub fn parse(text: &str) -> Result<Self, VaultError> {
        age::x25519::Recipient::from_str(text.trim())
            .map(Self)
            .map_err(|_| VaultError::BadKey {
                what: "recipient",
                hint: "expected `age1…`, as `blastwall vault recipient` prints it",
            })
    }

    /// For `age::Encryptor::with_recipients`.
    pub(crate) fn as_recipient(&self) -> &dyn age::Recipient {
        &self.0
    }
}

impl fmt::Display for BackupRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for BackupRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BackupRecipient({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_roundtrip_and_redacted_debug() {
        let id = BackupIdentity::generate();
        let back = BackupIdentity::parse(&id.to_file_text()).unwrap();
        assert_eq!(back.recipient().to_string(), id.recipient().to_string());
        assert!(!format!("{id:?}").contains("AGE-SECRET-KEY"));
        assert!(BackupRecipient::parse(&id.recipient().to_string()).is_ok());
        assert!(BackupRecipient::parse("age1nope").is_err());
    }
}
