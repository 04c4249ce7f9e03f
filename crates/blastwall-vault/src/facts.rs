//! Integrity facts: what a backup's source looked like at dump time, recomputed after a restore.
//!
//! Databases: per table, the row count and an order-independent digest of the rows (a sum of
//! per-row hashes, so a restore that returns rows in another order still matches), plus the
//! engine's own integrity check where there is one. Directories: per file, path, size, mode and
//! BLAKE3.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::VaultError;

/// The facts of one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Facts {
    /// A database: tables by qualified name.
    Tables {
        /// Per table facts.
        tables: BTreeMap<String, TableFacts>,
        /// The engine's integrity check result (`ok`), where there is one.
        #[serde(default)]
        integrity: Option<String>,
    },
    /// A directory: its regular files, sorted by path.
    Files {
        /// Per file facts.
        files: Vec<FileFacts>,
    },
}

/// One table's facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableFacts {
    /// Number of rows.
    pub rows: u64,
    /// Order-independent digest of the rows.
    pub digest: String,
}

/// One file's facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFacts {
    /// Path relative to the source folder, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// BLAKE3 of the content, hex.
    pub blake3: String,
}

/// An order-independent digest: the wrapping sum of the first 16 bytes of each item's BLAKE3.
#[derive(Debug, Default, Clone, Copy)]
pub struct SumDigest(u128);

impl SumDigest {
    /// Adds one item.
    pub fn add(&mut self, item: &[u8]) {
        let h = blake3::hash(item);
        let mut first = [0u8; 16];
        first.copy_from_slice(&h.as_bytes()[..16]);
        self.0 = self.0.wrapping_add(u128::from_be_bytes(first));
    }

    /// The digest as hex.
    pub fn hex(self) -> String {
        format!("{:032x}", self.0)
    }
}

/// The differences between recorded and restored facts, one line each (empty: they agree).
pub fn compare(recorded: &Facts, restored: &Facts) -> Vec<String> {
    let mut out = Vec::new();
    match (recorded, restored) {
        (
            Facts::Tables { tables: a, .. },
            Facts::Tables {
                tables: b,
                integrity,
            },
        ) => {
            for (name, fa) in a {
                match b.get(name) {
                    None => out.push(format!("table `{name}` is missing after the restore")),
                    Some(fb) if fb.rows != fa.rows => out.push(format!(
                        "table `{name}`: {} rows recorded, {} restored",
                        fa.rows, fb.rows
                    )),
                    Some(fb) if fb.digest != fa.digest => {
                        out.push(format!("table `{name}`: same row count, different content"))
                    }
                    Some(_) => {}
                }
            }
            for name in b.keys().filter(|n| !a.contains_key(*n)) {
                out.push(format!("table `{name}` appeared after the restore"));
            }
            if let Some(i) = integrity
                && i != "ok"
            {
                out.push(format!("integrity check: {i}"));
            }
        }
        (Facts::Files { files: a }, Facts::Files { files: b }) => {
            let bm: BTreeMap<&str, &FileFacts> = b.iter().map(|f| (f.path.as_str(), f)).collect();
            let am: BTreeMap<&str, &FileFacts> = a.iter().map(|f| (f.path.as_str(), f)).collect();
            for f in a {
                match bm.get(f.path.as_str()) {
                    None => out.push(format!("file `{}` is missing after the restore", f.path)),
                    Some(g) if g.size != f.size || g.blake3 != f.blake3 => {
                        out.push(format!("file `{}`: content differs", f.path));
                    }
                    Some(g) if g.mode != f.mode => out.push(format!(
                        "file `{}`: mode {:o} recorded, {:o} restored",
                        f.path, f.mode, g.mode
                    )),
                    Some(_) => {}
                }
            }
            for f in b.iter().filter(|f| !am.contains_key(f.path.as_str())) {
                out.push(format!("file `{}` appeared after the restore", f.path));
            }
        }
        _ => out.push("the restored target is not of the source's kind".into()),
    }
    out
}

/// The facts of every regular file under `root`, sorted by path (symlinks are not followed).
pub fn dir_facts(root: &Path) -> Result<Vec<FileFacts>, VaultError> {
    let mut out = Vec::new();
    for rel in walk_sorted(root)? {
        let p = root.join(&rel);
        let meta = std::fs::symlink_metadata(&p).map_err(|e| VaultError::io("stat", &p, e))?;
        if !meta.is_file() {
            continue;
        }
        let mut hasher = blake3::Hasher::new();
        let mut f = std::fs::File::open(&p).map_err(|e| VaultError::io("open", &p, e))?;
        let size = std::io::copy(&mut f, &mut hasher).map_err(|e| VaultError::io("read", &p, e))?;
        out.push(FileFacts {
            path: rel_text(&rel),
            size,
            mode: meta.permissions().mode() & 0o7777,
            blake3: hasher.finalize().to_hex().to_string(),
        });
    }
    Ok(out)
}

/// Every entry under `root` (files, folders, symlinks), relative, in sorted depth-first order.
pub fn walk_sorted(root: &Path) -> Result<Vec<std::path::PathBuf>, VaultError> {
    let mut out = Vec::new();
    walk_into(root, Path::new(""), &mut out)?;
    Ok(out)
}

fn walk_into(root: &Path, rel: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<(), VaultError> {
    let dir = root.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| VaultError::io("list", &dir, e))?
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let r = rel.join(&name);
        let p = root.join(&r);
        let is_dir = std::fs::symlink_metadata(&p)
            .map_err(|e| VaultError::io("stat", &p, e))?
            .is_dir();
        out.push(r.clone());
        if is_dir {
            walk_into(root, &r, out)?;
        }
    }
    Ok(())
}

/// A relative path as `/`-separated text.
pub fn rel_text(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_digest_is_order_independent() {
        let mut a = SumDigest::default();
        let mut b = SumDigest::default();
        a.add(b"1");
        a.add(b"2");
        b.add(b"2");
        b.add(b"1");
        assert_eq!(a.hex(), b.hex());
        b.add(b"3");
        assert_ne!(a.hex(), b.hex());
    }

    #[test]
    fn compare_reports_differences() {
        let t = |rows, d: &str| TableFacts {
            rows,
            digest: d.into(),
        };
        let a = Facts::Tables {
            tables: [
                ("public.a".into(), t(2, "x")),
                ("public.b".into(), t(1, "y")),
            ]
            .into(),
            integrity: None,
        };
        let b = Facts::Tables {
            tables: [
                ("public.a".into(), t(1, "x")),
                ("public.c".into(), t(1, "y")),
            ]
            .into(),
            integrity: Some("ok".into()),
        };
        let d = compare(&a, &b);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(compare(&a, &a).is_empty());
    }

    #[test]
    fn dir_facts_sorted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("b/z"), b"z").unwrap();
        std::fs::write(dir.path().join("a"), b"a").unwrap();
        let f = dir_facts(dir.path()).unwrap();
        let paths: Vec<_> = f.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a", "b/z"]);
    }
}
