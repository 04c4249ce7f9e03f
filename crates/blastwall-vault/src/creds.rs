//! The vault's own credentials: a role each, stored as digests, compared in constant time.
//!
//! They use core's credential format (`bwt_vault_…` for writers and readers, `bwm_vault_…` for
//! admins), so the scanner recognises a leaked one. Roles: a *writer* creates objects (and lists
//! them, so `backup list` works in production) and nothing else; a *reader* gets and lists, and
//! records drills; an *admin* lengthens retention and deletes what has expired. No role deletes
//! anything before its retain-until.

use std::fmt;
use std::path::{Path, PathBuf};

use blastwall_core::{Credential, CredentialKind, EnvName, TokenDigest};
use serde::{Deserialize, Serialize};

use crate::error::VaultError;
use crate::objects::write_atomic;

/// What a vault credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Create objects; list them. Never delete, overwrite, or change retention.
    Writer,
    /// Get and list objects; record drills.
    Reader,
    /// Lengthen retention and the policy; delete what has expired.
    Admin,
}

impl Role {
    /// Parses `writer`, `reader` or `admin`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "writer" => Some(Self::Writer),
            "reader" => Some(Self::Reader),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Writer => "writer",
            Self::Reader => "reader",
            Self::Admin => "admin",
        })
    }
}

/// A stored credential: never the secret, only its digest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialEntry {
    /// Its name (`prod-writer`), recorded as the writer of what it creates.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the credential text, hex.
    pub digest: String,
    /// When it was made.
    pub created: String,
    /// Bytes this writer may store in all (`None`: no quota).
    #[serde(default)]
    pub quota_bytes: Option<u64>,
}

/// The credentials file.
#[derive(Debug)]
pub struct Credentials {
    path: PathBuf,
    entries: Vec<CredentialEntry>,
    /// An exclusive lock on `<path>.lock` while this copy may be written back
    /// ([`Credentials::open_for_update`]).
    _lock: Option<std::fs::File>,
}

impl Credentials {
    /// Reads `path` (empty when it does not exist).
    pub fn open(path: &Path) -> Result<Self, VaultError> {
        let entries = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| VaultError::Corrupt {
                path: path.to_path_buf(),
                why: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(VaultError::io("read", path, e)),
        };
        Ok(Self {
            path: path.to_path_buf(),
            entries,
            _lock: None,
        })
    }

    /// Reads `path` holding an exclusive lock until the returned value is dropped, so that two
    /// commands changing credentials at once cannot write back each other's old list (a
    /// `credential add` running beside a `revoke` would bring the revoked credential back).
    pub fn open_for_update(path: &Path) -> Result<Self, VaultError> {
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| VaultError::io("open", &lock_path, e))?;
        lock.lock()
            .map_err(|e| VaultError::io("lock", &lock_path, e))?;
        let mut creds = Self::open(path)?;
        creds._lock = Some(lock);
        Ok(creds)
    }

    /// Every stored credential.
    pub fn entries(&self) -> &[CredentialEntry] {
        &self.entries
    }

    /// Makes and stores a new credential; the returned text is shown once and never stored.
    pub fn add(
        &mut self,
        name: &str,
        role: Role,
        quota_bytes: Option<u64>,
    ) -> Result<Credential, VaultError> {
        if self.entries.iter().any(|e| e.name == name) {
            return Err(VaultError::CredentialExists(name.to_owned()));
        }
        let cred = generate(role)?;
        self.entries.push(CredentialEntry {
            name: name.to_owned(),
            role,
            digest: cred.digest().to_hex(),
            created: crate::now().to_string(),
            quota_bytes,
        });
        self.save()?;
        Ok(cred)
    }

    /// Removes the credential named `name`: a running vault refuses it from its next request
    /// (it reads this file on every request). What it stored stays, under its name.
    pub fn revoke(&mut self, name: &str) -> Result<CredentialEntry, VaultError> {
        let at = self
            .entries
            .iter()
            .position(|e| e.name == name)
            .ok_or_else(|| VaultError::NoCredential(name.to_owned()))?;
        let removed = self.entries.remove(at);
        self.save()?;
        Ok(removed)
    }

    /// Replaces the secret of the credential named `name`, keeping its name, role and quota (so
    /// a writer keeps its sources and its usage): the old secret is refused from the next
    /// request; the returned one is shown once and never stored.
    pub fn rotate(&mut self, name: &str) -> Result<Credential, VaultError> {
        let entry = self
            .entries
            .iter_mut()
            .find(|e| e.name == name)
            .ok_or_else(|| VaultError::NoCredential(name.to_owned()))?;
        let cred = generate(entry.role)?;
        entry.digest = cred.digest().to_hex();
        entry.created = crate::now().to_string();
        self.save()?;
        Ok(cred)
    }

    fn save(&self) -> Result<(), VaultError> {
        let text = serde_json::to_vec_pretty(&self.entries)
            .map_err(|e| VaultError::Other(format!("cannot encode credentials: {e}")))?;
        write_atomic(&self.path, &text)
    }

    /// The entry whose digest matches `presented`, comparing with every entry in constant time.
    pub fn authenticate(&self, presented: &str) -> Option<&CredentialEntry> {
        let digest = Credential::parse(presented).ok()?.digest();
        let mut found = None;
        for e in &self.entries {
            if let Some(d) = TokenDigest::from_hex(&e.digest)
                && d.ct_eq(&digest)
                && found.is_none()
            {
                found = Some(e);
            }
        }
        found
    }
}

/// A fresh credential for `role`, in core's format.
pub fn generate(role: Role) -> Result<Credential, VaultError> {
    let env = EnvName::new(crate::CREDENTIAL_ENV)
        .map_err(|e| VaultError::Other(format!("vault credential environment: {e}")))?;
    let kind = match role {
        Role::Admin => CredentialKind::Admin,
        Role::Writer | Role::Reader => CredentialKind::Agent,
    };
    Credential::generate(kind, &env)
        .map_err(|e| VaultError::Other(format!("no randomness from the OS: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_authenticate() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("credentials.json");
        let mut c = Credentials::open(&p).unwrap();
        let w = c.add("prod-writer", Role::Writer, Some(10)).unwrap();
        let a = c.add("ops", Role::Admin, None).unwrap();
        assert!(w.expose().starts_with("bwt_vault_"));
        assert!(a.expose().starts_with("bwm_vault_"));
        let c = Credentials::open(&p).unwrap();
        assert_eq!(c.authenticate(w.expose()).unwrap().role, Role::Writer);
        assert_eq!(c.authenticate(a.expose()).unwrap().name, "ops");
        assert!(c.authenticate("bwt_vault_nope").is_none());
        let stored = std::fs::read_to_string(&p).unwrap();
        assert!(!stored.contains(w.expose()));
    }

    #[test]
    fn revoke_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        let mut c = Credentials::open(&p).unwrap();
        let w = c.add("w", Role::Writer, Some(10)).unwrap();
        let r = c.add("r", Role::Reader, None).unwrap();
        let w2 = Credentials::open(&p).unwrap().rotate("w").unwrap();
        let c = Credentials::open(&p).unwrap();
        assert!(c.authenticate(w.expose()).is_none());
        let e = c.authenticate(w2.expose()).unwrap();
        assert_eq!(
            (e.name.as_str(), e.role, e.quota_bytes),
            ("w", Role::Writer, Some(10))
        );
        let removed = Credentials::open(&p).unwrap().revoke("r").unwrap();
        assert_eq!(removed.name, "r");
        let mut c = Credentials::open(&p).unwrap();
        assert!(c.authenticate(r.expose()).is_none());
        assert_eq!(c.entries().len(), 1);
        assert!(matches!(c.revoke("r"), Err(VaultError::NoCredential(_))));
        assert!(matches!(c.rotate("nope"), Err(VaultError::NoCredential(_))));
    }

    /// A second update waits for the first and reads what it wrote: before, a `credential add`
    /// beside a `revoke` could write back the list with the revoked credential in it.
    #[test]
    fn updates_wait_for_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        let mut first = Credentials::open_for_update(&p).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p2 = p.clone();
        let second = std::thread::spawn(move || {
            let mut second = Credentials::open_for_update(&p2).unwrap();
            tx.send(second.entries().len()).unwrap();
            second.add("b", Role::Reader, None).unwrap();
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(rx.try_recv().is_err(), "the second update did not wait");
        first.add("a", Role::Reader, None).unwrap();
        drop(first);
        assert_eq!(rx.recv().unwrap(), 1);
        second.join().unwrap();
        assert_eq!(Credentials::open(&p).unwrap().entries().len(), 2);
    }

    #[test]
    fn names_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Credentials::open(&dir.path().join("c.json")).unwrap();
        c.add("x", Role::Reader, None).unwrap();
        assert!(matches!(
            c.add("x", Role::Writer, None),
            Err(VaultError::CredentialExists(_))
        ));
    }
}
