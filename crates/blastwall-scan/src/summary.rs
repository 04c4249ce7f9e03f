//! What a scan covered, and what it could not: a scan never skips silently.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why something was not scanned, or not completely.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum SkipReason {
    /// A symbolic link, not followed: its target is scanned where it lies, inside a scanned
    /// root, or (a regular file outside them) once, through another link to it.
    Symlink,
    /// A symbolic link to something outside every scanned root that is not a regular file (a
    /// directory, a special file), not followed: what it leads to was not scanned.
    SymlinkOutside {
        /// What the target is (`directory`, `named pipe`, …).
        kind: String,
    },
    /// A symbolic link loop, found while following links, or at the end of a link out of the
    /// scanned roots.
    SymlinkLoop,
    /// A named pipe: reading it could block forever.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A block or character device.
    Device,
    /// Some other kind of non-regular file.
    OtherType,
    /// Larger than the per-file size bound (a file `fstat` says is within it but that reads
    /// longer, such as a procfs file or one growing while read, is scanned up to the bound).
    TooLarge {
        /// The file's size in bytes; for a file read past the bound, one more than the bound (all
        /// that was read of it).
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// An archive nested deeper than the bound.
    ArchiveTooDeep {
        /// The depth bound.
        limit: u32,
    },
    /// An archive expanded past its bound (a bomb, or just very compressible): scanned up to it.
    ArchiveExpansion {
        /// The bound on expanded bytes.
        limit: u64,
    },
    /// An archive that could not be decoded (corrupt, or a format variant not supported).
    ArchiveUnreadable {
        /// What the decoder said.
        error: String,
    },
    /// Excluded by the scan's options (`--system` skips `/proc`, `/sys`, `/dev`).
    Excluded,
    /// A directory of a kernel pseudo file system (procfs, sysfs), not walked: its files are
    /// kernel state of unbounded or blocking reads, not stored data (process environments are
    /// scanned by a process scan).
    PseudoFileSystem {
        /// The file system type (`proc`, `sysfs`).
        kind: String,
    },
    /// An I/O error: permission denied, vanished, …
    Io {
        /// The error's text.
        error: String,
    },
}

impl SkipReason {
    /// Whether skipping this may have hidden content that could hold a secret. Special files,
    /// links and requested exclusions do not (a link's target is scanned where it lies, or
    /// through another link); a link out of the scanned roots to what is not scanned does.
    pub fn loses_content(&self) -> bool {
        !matches!(
            self,
            Self::Symlink
                | Self::Fifo
                | Self::Socket
                | Self::Device
                | Self::OtherType
                | Self::Excluded
                | Self::PseudoFileSystem { .. }
        )
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Symlink => f.write_str("symbolic link, not followed"),
            Self::SymlinkOutside { kind } => {
                write!(
                    f,
                    "symbolic link to a {kind} outside the scanned roots, not followed"
                )
            }
            Self::SymlinkLoop => f.write_str("symbolic link loop"),
            Self::Fifo => f.write_str("named pipe, not opened"),
            Self::Socket => f.write_str("socket, not opened"),
            Self::Device => f.write_str("device, not opened"),
            Self::OtherType => f.write_str("not a regular file"),
            Self::TooLarge { size, limit } => {
                write!(f, "{size} bytes, over the {limit}-byte bound")
            }
            Self::ArchiveTooDeep { limit } => write!(f, "archive nested deeper than {limit}"),
            Self::ArchiveExpansion { limit } => {
                write!(f, "archive expands past {limit} bytes, scanned up to there")
            }
            Self::ArchiveUnreadable { error } => write!(f, "archive unreadable: {error}"),
            Self::Excluded => f.write_str("excluded"),
            Self::PseudoFileSystem { kind } => {
                write!(f, "kernel pseudo file system `{kind}`, not walked")
            }
            Self::Io { error } => write!(f, "cannot read: {error}"),
        }
    }
}

/// One thing not scanned, or not completely.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Skipped {
    /// The path (with `!member` for archive members), variable or `/proc` file.
    pub path: String,
    /// Why.
    #[serde(flatten)]
    pub reason: SkipReason,
}

/// Counts and lists for a scan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Regular files opened and scanned.
    pub files_scanned: u64,
    /// Bytes read from files (compressed size for archives).
    pub bytes_scanned: u64,
    /// Members of archives scanned.
    pub archive_members_scanned: u64,
    /// Environment variables scanned.
    pub env_vars_scanned: u64,
    /// Processes whose environment or command line was scanned.
    pub processes_scanned: u64,
    /// Findings silenced by an inline `blastwall:allow`.
    pub suppressed_inline: u64,
    /// Findings accepted by the baseline.
    pub baselined: u64,
    /// What was not scanned on purpose (special files, links, size and archive bounds).
    pub skipped: Vec<Skipped>,
    /// What could not be read.
    pub unreadable: Vec<Skipped>,
}

impl Summary {
    /// Whether everything that could hold a secret was read: no unreadable entry, and no skip
    /// that loses content (see [`SkipReason::loses_content`]).
    pub fn is_complete(&self) -> bool {
        self.unreadable.is_empty() && !self.skipped.iter().any(|s| s.reason.loses_content())
    }

    /// Adds another summary's counts and lists to this one.
    pub fn absorb(&mut self, other: Summary) {
        self.files_scanned += other.files_scanned;
        self.bytes_scanned += other.bytes_scanned;
        self.archive_members_scanned += other.archive_members_scanned;
        self.env_vars_scanned += other.env_vars_scanned;
        self.processes_scanned += other.processes_scanned;
        self.suppressed_inline += other.suppressed_inline;
        self.baselined += other.baselined;
        self.skipped.extend(other.skipped);
        self.unreadable.extend(other.unreadable);
    }

    /// Sorts the lists, for stable output.
    pub fn sort(&mut self) {
        self.skipped.sort();
        self.unreadable.sort();
    }
}
