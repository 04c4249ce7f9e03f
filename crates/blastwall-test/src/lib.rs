//! Dev-only test harness shared by the workspace's test suites: temporary folders and a
//! throwaway PostgreSQL cluster ([`PgCluster`]) started from the system's `initdb` and `pg_ctl`
//! on a free loopback port, and a throwaway S3 with IAM ([`MotoServer`], moto's server from a
//! venv), so no test depends on a server that happens to be running.
//!
//! It is a dev-dependency only; `anyhow` is allowed here because only tests call it.

use std::path::Path;

use anyhow::Context;
use tempfile::TempDir;

pub mod fake;
pub mod moto;
pub mod pg;

pub use fake::{FakeUpstream, Seen};
pub use moto::{AwsKey, MotoServer};
pub use pg::PgCluster;

/// A fresh temporary folder, removed when dropped.
pub fn temp_dir() -> anyhow::Result<TempDir> {
    tempfile::Builder::new()
        .prefix("blastwall-test-")
        .tempdir()
        .context("cannot create a temporary folder")
}

/// Whether `needle` occurs anywhere in the bytes of `file` (for secret-leak checks).
pub fn file_contains(file: &Path, needle: &[u8]) -> anyhow::Result<bool> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read `{}`", file.display()))?;
    Ok(!needle.is_empty() && bytes.windows(needle.len()).any(|w| w == needle))
}

/// Whether `needle` occurs in any file under `dir`, recursively; returns the first such file.
pub fn find_in_tree(dir: &Path, needle: &[u8]) -> anyhow::Result<Option<std::path::PathBuf>> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("cannot list `{}`", d.display()))?
        {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() && file_contains(&path, needle)? {
                return Ok(Some(path));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_needle_in_a_tree() {
        let dir = temp_dir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/b.bin"), b"xx canary-123 yy").unwrap();
        assert_eq!(
            find_in_tree(dir.path(), b"canary-123").unwrap(),
            Some(dir.path().join("a/b.bin"))
        );
        assert_eq!(find_in_tree(dir.path(), b"canary-456").unwrap(), None);
    }
}
