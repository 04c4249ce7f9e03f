//! The vault's local store: create-only, time-locked objects.
//!
//! Layout under the vault folder: `objects/<name>` (the bytes, read-only once written),
//! `meta/<name>.json` (size, SHA-256, received, retain-until, writer) and `tmp/` (uploads in
//! progress, emptied at start). A create writes the body to `tmp/`, fsyncs it, writes the meta
//! atomically, then renames the body into place and fsyncs the folder: an object is visible only
//! once its bytes are complete, so a crash mid-upload never leaves a partial object behind.
//! An existing name with the same bytes is a no-op (a retried upload); with other bytes, a conflict.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::VaultError;

/// Largest object name accepted.
pub const MAX_NAME: usize = 512;

/// What the vault records about an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// The object's name (`backups/appdb/…/part-000000`).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
    /// When the vault received it (RFC 3339).
    pub received: String,
    /// Nothing deletes it before this time (RFC 3339).
    pub retain_until: String,
    /// The name of the writer credential that created it.
    pub writer: String,
}

/// What a create did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A new object.
    New(ObjectMeta),
    /// The same bytes were already there (a retried upload).
    Existing(ObjectMeta),
}

/// The object store of one vault folder.
#[derive(Debug)]
pub struct ObjectStore {
    objects: PathBuf,
    meta: PathBuf,
    tmp: PathBuf,
    commit: tokio::sync::Mutex<()>,
}

impl ObjectStore {
    /// Opens the store under `root`, creating its folders and clearing `tmp/`.
    pub fn open(root: &Path) -> Result<Self, VaultError> {
        let s = Self {
            objects: root.join("objects"),
            meta: root.join("meta"),
            tmp: root.join("tmp"),
            commit: tokio::sync::Mutex::new(()),
        };
        for d in [&s.objects, &s.meta, &s.tmp] {
            std::fs::create_dir_all(d).map_err(|e| VaultError::io("create", d, e))?;
        }
        // Uploads that were cut short (a crash, a kill -9) never became visible; drop them.
        let entries = std::fs::read_dir(&s.tmp).map_err(|e| VaultError::io("list", &s.tmp, e))?;
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        Ok(s)
    }

    /// A fresh path in `tmp/` for an upload.
    pub fn temp_path(&self) -> Result<PathBuf, VaultError> {
        let mut r = [0u8; 12];
        getrandom::fill(&mut r).map_err(|e| VaultError::Other(format!("no randomness: {e}")))?;
        Ok(self.tmp.join(hex::encode(r)))
    }

    /// The meta of a visible object.
    pub fn get(&self, name: &str) -> Result<Option<ObjectMeta>, VaultError> {
        check_name(name)?;
        if !self.objects.join(name).is_file() {
            return Ok(None);
        }
        read_meta(&self.meta_path(name)).map(Some)
    }

    /// The path of a visible object's bytes.
    pub fn path_of(&self, name: &str) -> Result<PathBuf, VaultError> {
        check_name(name)?;
        let p = self.objects.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(VaultError::NotFound(name.to_owned()))
        }
    }

    /// Every visible object whose name starts with `prefix`, sorted by name.
    pub fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, VaultError> {
        let mut out = Vec::new();
        let mut stack = vec![self.meta.clone()];
        while let Some(d) = stack.pop() {
            let rd = match std::fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) => return Err(VaultError::io("list", &d, e)),
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let Ok(rel) = p.strip_prefix(&self.meta) else {
                    continue;
                };
                let Some(name) = rel.to_str().and_then(|n| n.strip_suffix(".json")) else {
                    continue;
                };
                if name.starts_with(prefix) && self.objects.join(name).is_file() {
                    out.push(read_meta(&p)?);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Makes the upload at `tmp` visible as `meta.name`, or refuses an overwrite.
    pub async fn commit(&self, tmp: &Path, meta: ObjectMeta) -> Result<Created, VaultError> {
        check_name(&meta.name)?;
        let _guard = self.commit.lock().await;
        if let Some(existing) = self.get(&meta.name)? {
            let _ = std::fs::remove_file(tmp);
            return if existing.sha256 == meta.sha256 {
                Ok(Created::Existing(existing))
            } else {
                Err(VaultError::Conflict { name: meta.name })
            };
        }
        let target = self.objects.join(&meta.name);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| VaultError::io("create", parent, e))?;
        }
        self.write_meta(&meta)?;
        std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o444))
            .map_err(|e| VaultError::io("protect", tmp, e))?;
        std::fs::rename(tmp, &target).map_err(|e| VaultError::io("rename", &target, e))?;
        if let Some(parent) = target.parent() {
            sync_dir(parent)?;
        }
        Ok(Created::New(meta))
    }

    /// Rewrites an object's meta (only to lengthen its retention: the caller checks).
    pub fn write_meta(&self, meta: &ObjectMeta) -> Result<(), VaultError> {
        let p = self.meta_path(&meta.name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| VaultError::io("create", parent, e))?;
        }
        let text = serde_json::to_vec_pretty(meta)
            .map_err(|e| VaultError::Other(format!("cannot encode object meta: {e}")))?;
        write_atomic(&p, &text)
    }

    /// Removes an object (the caller has checked that its retention has ended).
    pub fn remove(&self, name: &str) -> Result<(), VaultError> {
        let p = self.path_of(name)?;
        std::fs::remove_file(&p).map_err(|e| VaultError::io("delete", &p, e))?;
        let m = self.meta_path(name);
        std::fs::remove_file(&m).map_err(|e| VaultError::io("delete", &m, e))
    }

    fn meta_path(&self, name: &str) -> PathBuf {
        self.meta.join(format!("{name}.json"))
    }
}

/// Checks the name of an object to create: a valid name ([`check_name`]) of one of the shapes
/// clients write: `sources/<source>` (a registration), `backups/<source>/<id>/<file>` (a part
/// or a manifest), `canary/<name>` (an immutability probe). Anything else would let a writer
/// make a folder per segment (each costing the disk far more than the object is charged) or
/// take a name the vault's own folders need (`backups` as a file).
pub fn check_new_name(name: &str) -> Result<(), VaultError> {
    check_name(name)?;
    let segments: Vec<&str> = name.split('/').collect();
    let ok = matches!(
        segments.as_slice(),
        ["sources" | "canary", _] | ["backups", _, _, _]
    );
    if ok {
        Ok(())
    } else {
        Err(VaultError::UnexpectedName(name.chars().take(100).collect()))
    }
}

/// Checks an object name: segments of `[A-Za-z0-9._-]` separated by `/`, none `.` or `..`.
pub fn check_name(name: &str) -> Result<(), VaultError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && !seg.ends_with(".json")
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(VaultError::BadName(name.chars().take(100).collect()))
    }
}

fn read_meta(path: &Path) -> Result<ObjectMeta, VaultError> {
    let bytes = std::fs::read(path).map_err(|e| VaultError::io("read", path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| VaultError::Corrupt {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename, fsync folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), VaultError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(|e| VaultError::io("create", dir, e))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| VaultError::io("write", path, e))?;
    tmp.persist(path)
        .map_err(|e| VaultError::io("rename", path, e.error))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), VaultError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| VaultError::io("sync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, sha: &str) -> ObjectMeta {
        ObjectMeta {
            name: name.into(),
            size: 3,
            sha256: sha.into(),
            received: "2026-01-01T00:00:00Z".into(),
            retain_until: "2026-02-01T00:00:00Z".into(),
            writer: "w".into(),
        }
    }

    #[tokio::test]
    async fn create_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = ObjectStore::open(dir.path()).unwrap();
        let t = s.temp_path().unwrap();
        std::fs::write(&t, b"abc").unwrap();
        assert!(matches!(
            s.commit(&t, meta("b/x", "h1")).await.unwrap(),
            Created::New(_)
        ));
        let t = s.temp_path().unwrap();
        std::fs::write(&t, b"abc").unwrap();
        assert!(matches!(
            s.commit(&t, meta("b/x", "h1")).await.unwrap(),
            Created::Existing(_)
        ));
        let t = s.temp_path().unwrap();
        std::fs::write(&t, b"abd").unwrap();
        assert!(matches!(
            s.commit(&t, meta("b/x", "h2")).await,
            Err(VaultError::Conflict { .. })
        ));
        assert_eq!(std::fs::read(s.path_of("b/x").unwrap()).unwrap(), b"abc");
        assert_eq!(s.list("b/").unwrap().len(), 1);
        assert_eq!(s.list("c/").unwrap().len(), 0);
    }

    #[test]
    fn new_names_have_the_shapes_clients_write() {
        for good in [
            "sources/appdb",
            "backups/appdb/20260101T000000Z-0a0b0c/part-000001",
            "backups/appdb/20260101T000000Z-0a0b0c/manifest.age",
            "canary/20260101T000000Z-ab12",
        ] {
            assert!(check_new_name(good).is_ok(), "{good}");
        }
        let deep = format!("d0{}/x", "/a".repeat(250));
        for bad in [
            "backups",
            "sources",
            "canary",
            "a",
            "a/b",
            "sources/a/b",
            "backups/a/b",
            "backups/a/b/c/d",
            "canary/a/b",
            "other/a/b/c",
            deep.as_str(),
        ] {
            assert!(check_new_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        for good in ["a", "backups/app-db/2026.x/part-000001", "a_b"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "/a", "a//b", "../a", "a/..", "a b", "a/x.json", "a\\b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn leftovers_in_tmp_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let s = ObjectStore::open(dir.path()).unwrap();
        let t = s.temp_path().unwrap();
        std::fs::write(&t, b"partial").unwrap();
        drop(s);
        let s = ObjectStore::open(dir.path()).unwrap();
        assert!(!t.exists());
        assert!(s.list("").unwrap().is_empty());
    }
}
