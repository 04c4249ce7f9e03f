//! A directory source: a tar of the folder with entries in sorted order, each regular file hashed
//! (BLAKE3) as it is archived, so the facts describe exactly the bytes in the archive.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::VaultError;
use crate::facts::{FileFacts, rel_text, walk_sorted};
use crate::source::{Guard, Prepared, Producer, SourceSpec, stream_error};

/// Checks the folder exists.
pub fn prepare(spec: &SourceSpec) -> Result<Prepared, VaultError> {
    let root = std::path::PathBuf::from(&spec.location);
    if !root.is_dir() {
        return Err(VaultError::Source {
            source_name: spec.name.clone(),
            why: format!("`{}` is not a folder", root.display()),
        });
    }
    Ok(Prepared {
        facts: None,
        tools: [("tar".to_owned(), "tar crate 0.4 (GNU format)".to_owned())].into(),
        taken_at: crate::now(),
        producer: Producer::Tar(root),
        guard: Guard::None,
    })
}

/// Writes a tar of `root` to `w` (sorted entries); returns the facts of its regular files.
pub fn write_tar(root: &Path, w: &mut dyn Write) -> Result<Vec<FileFacts>, VaultError> {
    let mut builder = tar::Builder::new(w);
    builder.follow_symlinks(false);
    let mut facts = Vec::new();
    for rel in walk_sorted(root)? {
        let p = root.join(&rel);
        let meta = std::fs::symlink_metadata(&p).map_err(|e| VaultError::io("stat", &p, e))?;
        if meta.is_file() {
            let mut header = tar::Header::new_gnu();
            header.set_metadata(&meta);
            let size = meta.len();
            let file = std::fs::File::open(&p).map_err(|e| VaultError::io("open", &p, e))?;
            let mut reader = Hashing {
                inner: file.take(size),
                hasher: blake3::Hasher::new(),
                n: 0,
            };
            builder
                .append_data(&mut header, &rel, &mut reader)
                .map_err(|e| stream_error(&p, e))?;
            if reader.n != size {
                return Err(VaultError::Other(format!(
                    "`{}` changed size while it was archived; run the backup again",
                    p.display()
                )));
            }
            facts.push(FileFacts {
                path: rel_text(&rel),
                size,
                mode: meta.permissions().mode() & 0o7777,
                blake3: reader.hasher.finalize().to_hex().to_string(),
            });
        } else {
            builder
                .append_path_with_name(&p, &rel)
                .map_err(|e| stream_error(&p, e))?;
        }
    }
    builder
        .into_inner()
        .and_then(|w| w.flush())
        .map_err(|e| stream_error(root, e))?;
    Ok(facts)
}

/// Unpacks a tar into `dest` (which must be empty), keeping permissions.
pub fn unpack(tar_file: &Path, dest: &Path) -> Result<(), VaultError> {
    let f = std::fs::File::open(tar_file).map_err(|e| VaultError::io("open", tar_file, e))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(f));
    archive.set_preserve_permissions(true);
    archive.set_overwrite(false);
    archive
        .unpack(dest)
        .map_err(|e| VaultError::io("unpack into", dest, e))
}

struct Hashing<R> {
    inner: R,
    hasher: blake3::Hasher,
    n: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_roundtrip_keeps_facts() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("sub")).unwrap();
        std::fs::write(src.path().join("sub/b.txt"), b"bee").unwrap();
        std::fs::write(src.path().join("a.bin"), [0u8, 1, 2]).unwrap();
        std::fs::set_permissions(
            src.path().join("a.bin"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        let mut out = Vec::new();
        let facts = write_tar(src.path(), &mut out).unwrap();
        assert_eq!(facts, crate::facts::dir_facts(src.path()).unwrap());
        let work = tempfile::tempdir().unwrap();
        let t = work.path().join("x.tar");
        std::fs::write(&t, &out).unwrap();
        let dest = work.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        unpack(&t, &dest).unwrap();
        assert_eq!(crate::facts::dir_facts(&dest).unwrap(), facts);
    }
}
