//! The parallel walk over files and directories (the `ignore` crate's walker).
//!
//! Hidden files are scanned and ignore files are not respected unless asked: a wall scan looks
//! where `.gitignore` would hide things, because that is where secrets are left.
//!
//! Directories of kernel pseudo file systems (procfs, sysfs) are not walked, roots included:
//! their files report no size or read without end (`/proc/<pid>/pagemap`), and what they hold
//! is kernel state, not stored data. A file of one named as a root is read, within the size
//! bound.
//!
//! Symbolic links are not followed unless asked, but none is left unread without saying so: a
//! link whose target lies inside a scanned root is listed (the target is scanned where it
//! lies); a link to a regular file outside every root is scanned through, once per file however
//! many links reach it, its findings at `link -> target`; any other link out of the roots
//! (to a directory, a special file, nothing, a loop) is listed as content not scanned.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, FileType};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use ignore::{WalkBuilder, WalkState};

use crate::scanner::Collector;
use crate::scanner::source::{scan_file, scan_file_as};
use crate::summary::SkipReason;

pub(super) fn walk(col: &Collector<'_>, paths: &[PathBuf]) {
    let pseudo = Arc::new(pseudo_file_systems());
    let paths: Vec<&PathBuf> = paths
        .iter()
        .filter(|p| {
            let kind = std::fs::metadata(p)
                .ok()
                .filter(std::fs::Metadata::is_dir)
                .and_then(|m| pseudo.get(&m.dev()));
            if let Some(kind) = kind {
                col.skip(
                    p.display().to_string(),
                    SkipReason::PseudoFileSystem { kind: kind.clone() },
                );
            }
            kind.is_none()
        })
        .collect();
    let Some((first, rest)) = paths.split_first() else {
        return;
    };
    let opts = col.options();
    let links = Links::new(&paths, &opts.exclude);
    let respect = opts.respect_ignore_files;
    let mut builder = WalkBuilder::new(first);
    for p in rest {
        builder.add(p);
    }
    builder
        .hidden(false)
        .ignore(respect)
        .git_ignore(respect)
        .git_global(respect)
        .git_exclude(respect)
        .parents(respect)
        .require_git(false)
        .follow_links(opts.follow_symlinks)
        .same_file_system(opts.same_file_system)
        .threads(opts.threads);
    let excluded: Arc<Mutex<Vec<PathBuf>>> = Arc::default();
    let pseudo_met: Arc<Mutex<Vec<(PathBuf, String)>>> = Arc::default();
    if !opts.exclude.is_empty() || !pseudo.is_empty() {
        let exclude = opts.exclude.clone();
        let seen = Arc::clone(&excluded);
        let met = Arc::clone(&pseudo_met);
        builder.filter_entry(move |entry| {
            let hit = exclude.iter().any(|x| entry.path() == x.as_path());
            if hit && let Ok(mut s) = seen.lock() {
                s.push(entry.path().to_owned());
            }
            // One `stat` per directory (not per file), and only when such a mount exists.
            let kind =
                (!hit && !pseudo.is_empty() && entry.file_type().is_some_and(|t| t.is_dir()))
                    .then(|| entry.metadata().ok())
                    .flatten()
                    .and_then(|m| pseudo.get(&m.dev()).cloned());
            if let Some(kind) = &kind
                && let Ok(mut m) = met.lock()
            {
                m.push((entry.path().to_owned(), kind.clone()));
            }
            !hit && kind.is_none()
        });
    }
    builder.build_parallel().run(|| {
        Box::new(|result| {
            match result {
                Ok(entry) => {
                    let file_type = entry.file_type();
                    if file_type.is_some_and(|t| t.is_dir()) {
                        // Walked into.
                    } else if entry.depth() == 0 && is_link(entry.path()) {
                        scan_named_link(col, entry.path());
                    } else if !opts.follow_symlinks && file_type.is_some_and(|t| t.is_symlink()) {
                        links.judge(col, entry.path());
                    } else {
                        scan_file(col, entry.path(), file_type.is_some_and(|t| t.is_file()));
                    }
                }
                Err(err) => record_error(col, &err),
            }
            WalkState::Continue
        })
    });
    links.scan_outside(col);
    if let Ok(list) = excluded.lock() {
        for p in list.iter() {
            col.skip(p.display().to_string(), SkipReason::Excluded);
        }
    }
    if let Ok(list) = pseudo_met.lock() {
        for (p, kind) in list.iter() {
            col.skip(
                p.display().to_string(),
                SkipReason::PseudoFileSystem { kind: kind.clone() },
            );
        }
    }
}

/// The devices of the procfs and sysfs mounts (from `/proc/self/mountinfo`), with their type.
/// Empty when that cannot be read, which happens when no procfs is mounted.
fn pseudo_file_systems() -> BTreeMap<u64, String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines().filter_map(pseudo_mount).collect()
}

/// The device and type of one `mountinfo` line, if it is a procfs or sysfs mount:
/// `36 35 0:22 / /proc rw,nosuid - proc proc rw` (proc(5)).
fn pseudo_mount(line: &str) -> Option<(u64, String)> {
    let (mount, fs) = line.split_once(" - ")?;
    let kind = fs.split(' ').next()?;
    if kind != "proc" && kind != "sysfs" {
        return None;
    }
    let (major, minor) = mount.split(' ').nth(2)?.split_once(':')?;
    let (major, minor): (u64, u64) = (major.parse().ok()?, minor.parse().ok()?);
    // glibc's makedev(3): the device number `stat` reports.
    let dev = ((major & 0xffff_f000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0xff);
    Some((dev, kind.to_owned()))
}

fn is_link(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// A symbolic link named as a root is what the user asked to scan: its target is resolved and
/// scanned (checked and opened as any file, with no link left in its path), at the link's path.
fn scan_named_link(col: &Collector<'_>, link: &Path) {
    match std::fs::canonicalize(link) {
        Ok(target) => scan_file_as(col, &target, link),
        Err(e) => col.unreadable(link.display().to_string(), &e),
    }
}

/// The symbolic links met in a walk that does not follow links, judged against the scanned
/// roots, resolved.
struct Links {
    /// The roots, canonical.
    roots: Vec<PathBuf>,
    /// The excluded paths, as given and canonical.
    exclude: Vec<PathBuf>,
    /// Links to regular files outside every root, scanned after the walk in link order, so
    /// that each file is read once, at the same link on every run (the place is part of a
    /// finding's baseline id).
    outside: Mutex<Vec<OutsideLink>>,
}

/// A link to a regular file outside every root.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct OutsideLink {
    link: PathBuf,
    /// The target, canonical.
    target: PathBuf,
    /// The target's device and inode.
    file: (u64, u64),
}

impl Links {
    fn new(roots: &[&PathBuf], exclude: &[PathBuf]) -> Self {
        let resolved = |p: &PathBuf| fs::canonicalize(p).ok();
        Self {
            roots: roots.iter().copied().filter_map(resolved).collect(),
            exclude: exclude
                .iter()
                .cloned()
                .chain(exclude.iter().filter_map(resolved))
                .collect(),
            outside: Mutex::new(Vec::new()),
        }
    }

    fn inside(&self, target: &Path) -> bool {
        self.roots.iter().any(|r| target.starts_with(r))
    }

    /// Lists the link at `link`, or keeps it to be scanned through after the walk.
    fn judge(&self, col: &Collector<'_>, link: &Path) {
        let target = match fs::canonicalize(link) {
            Ok(t) => t,
            Err(e) => return self.judge_unresolved(col, link, &e),
        };
        if self.inside(&target) {
            return col.skip(link.display().to_string(), SkipReason::Symlink);
        }
        let shown = through(link, &target);
        if self.exclude.iter().any(|x| target.starts_with(x)) {
            return col.skip(shown, SkipReason::Excluded);
        }
        match fs::symlink_metadata(&target) {
            Ok(m) if m.is_file() => {
                if let Ok(mut out) = self.outside.lock() {
                    out.push(OutsideLink {
                        link: link.to_owned(),
                        target,
                        file: (m.dev(), m.ino()),
                    });
                }
            }
            Ok(m) => col.skip(
                shown,
                SkipReason::SymlinkOutside {
                    kind: kind_name(m.file_type()).to_owned(),
                },
            ),
            Err(e) => col.unreadable(shown, &e),
        }
    }

    /// A link that does not resolve (nothing at its end, a loop, a folder on the way that
    /// cannot be searched): judged by where it points itself. Inside a root, whatever is there
    /// is the walk's to meet; outside, its content (if any) is not read, and listed so.
    fn judge_unresolved(&self, col: &Collector<'_>, link: &Path, error: &std::io::Error) {
        let target = fs::read_link(link).ok().and_then(|t| {
            let folder = fs::canonicalize(link.parent()?).ok()?;
            Some(resolve_partly(&folder.join(t)))
        });
        let Some(target) = target else {
            return col.unreadable(link.display().to_string(), error);
        };
        if self.inside(&target) {
            return col.skip(link.display().to_string(), SkipReason::Symlink);
        }
        let shown = through(link, &target);
        if error.raw_os_error() == Some(libc::ELOOP) {
            col.skip(shown, SkipReason::SymlinkLoop);
        } else {
            col.unreadable(shown, error);
        }
    }

    /// Scans each regular file kept by [`Links::judge`] once, at the first link to it (in path
    /// order); the other links to it are listed.
    fn scan_outside(&self, col: &Collector<'_>) {
        let mut outside = match self.outside.lock() {
            Ok(mut o) => std::mem::take(&mut *o),
            Err(_) => return,
        };
        outside.sort();
        let mut seen = HashSet::new();
        for OutsideLink { link, target, file } in outside {
            let shown = through(&link, &target);
            if seen.insert(file) {
                scan_file_as(col, &target, Path::new(&shown));
            } else {
                col.skip(shown, SkipReason::Symlink);
            }
        }
    }
}

/// The place of what is read through a link: `link -> target`.
fn through(link: &Path, target: &Path) -> String {
    format!("{} -> {}", link.display(), target.display())
}

/// `path` with its longest ancestor that resolves made canonical, and the rest as written, `..`
/// taken lexically (nothing of the rest exists to be a link).
fn resolve_partly(path: &Path) -> PathBuf {
    for ancestor in path.ancestors() {
        let (Ok(mut out), Ok(rest)) = (fs::canonicalize(ancestor), path.strip_prefix(ancestor))
        else {
            continue;
        };
        for part in rest.components() {
            match part {
                Component::ParentDir => {
                    out.pop();
                }
                Component::Normal(name) => out.push(name),
                Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            }
        }
        return out;
    }
    path.to_owned()
}

/// What a link's target is, when it is not a regular file.
fn kind_name(ft: FileType) -> &'static str {
    if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "named pipe"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "device"
    } else {
        "special file"
    }
}

/// Lists a walk error with its path, as a symlink loop or as unreadable.
fn record_error(col: &Collector<'_>, err: &ignore::Error) {
    let (path, loop_child) = error_path(err);
    let shown = path.map_or_else(|| "<walk>".to_owned(), |p| p.display().to_string());
    if let Some(child) = loop_child {
        col.skip(child.display().to_string(), SkipReason::SymlinkLoop);
        return;
    }
    let io = match err.io_error() {
        Some(e) => std::io::Error::new(e.kind(), e.to_string()),
        None => std::io::Error::other(err.to_string()),
    };
    col.unreadable(shown, &io);
}

fn error_path(err: &ignore::Error) -> (Option<&Path>, Option<&Path>) {
    match err {
        ignore::Error::WithPath { path, err } => {
            let (inner, loop_child) = error_path(err);
            (inner.or(Some(path.as_path())), loop_child)
        }
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            error_path(err)
        }
        ignore::Error::Loop { child, .. } => (Some(child.as_path()), Some(child.as_path())),
        ignore::Error::Partial(errs) => errs.first().map_or((None, None), error_path),
        _ => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    /// With `--system` the root is `/`: every link's target is inside it, so none is read
    /// through its link (it is scanned where it lies, or excluded there).
    #[test]
    fn under_the_root_of_everything_every_target_is_inside() {
        let root = PathBuf::from("/");
        let links = Links::new(&[&root], &[]);
        assert!(links.inside(Path::new("/run/secrets/x")));
        assert!(links.inside(&fs::canonicalize("/proc/self/environ").unwrap()));
    }

    #[test]
    fn a_target_that_does_not_resolve_is_resolved_as_far_as_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let real = fs::canonicalize(dir.path()).unwrap();
        fs::create_dir(real.join("a")).unwrap();
        std::os::unix::fs::symlink(real.join("a"), real.join("link")).unwrap();
        assert_eq!(
            resolve_partly(&real.join("link/missing/../x.env")),
            real.join("a/x.env")
        );
        assert_eq!(
            resolve_partly(&real.join("a/../../out/x.env")),
            real.parent().unwrap().join("out/x.env")
        );
    }

    #[test]
    fn procfs_is_known_by_its_device() {
        let line = "36 35 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw";
        assert_eq!(pseudo_mount(line), Some((22, "proc".to_owned())));
        assert_eq!(pseudo_mount("24 1 8:1 / / rw - ext4 /dev/sda1 rw"), None);
        let proc_dev = std::fs::metadata("/proc/self").unwrap().dev();
        assert_eq!(
            pseudo_file_systems().get(&proc_dev).map(String::as_str),
            Some("proc")
        );
    }
}
