//! What a scan reports: [`Finding`]s with their [`Location`], [`Severity`] and [`Confidence`].
//!
//! A finding never holds the secret it found: only a short redacted prefix (for a person to
//! recognise it) and an identity hash (for baselines), which is not keyed: see [`Finding::id`]
//! for what it reveals about a low-entropy value. See [`redact`].

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How bad a finding is. Ordered: `Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Probably harmless alone (a publishable key, a test-mode key).
    Low,
    /// A credential of a lesser kind, or a generic secret found by entropy.
    Medium,
    /// A live credential of a known provider.
    High,
    /// A production secret outside production: a fingerprint match or a prod-tier Blastwall token.
    Critical,
}

impl Severity {
    /// The lowercase name, as in rule files and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    /// Parses a lowercase name (`low`, `medium`, `high`, `critical`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "low" => Some(Self::Low),
            "medium" => Some(Self::Medium),
            "high" => Some(Self::High),
            "critical" => Some(Self::Critical),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How sure the scanner is that a finding is a real secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    /// A generic pattern whose value passed an entropy floor.
    Entropy,
    /// A provider-specific pattern (and structure check, for keys and JWTs).
    Pattern,
    /// A pattern whose embedded checksum is correct (GitHub, npm, Blastwall).
    Checksum,
    /// The value is, byte for byte, a secret listed in a loaded wall file.
    Fingerprint,
}

impl Confidence {
    /// The lowercase name, as in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Entropy => "entropy",
            Self::Pattern => "pattern",
            Self::Checksum => "checksum",
            Self::Fingerprint => "fingerprint",
        }
    }
}

impl fmt::Display for Confidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a finding is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Location {
    /// In a file, or in a member of an archive file.
    File {
        /// The file on disk.
        path: PathBuf,
        /// Members inside archives, outermost first (`["backup.tar.gz", "app/.env"]` reads as
        /// "inside the gzip, in the tar member `app/.env`"); empty for a plain file.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        members: Vec<String>,
        /// 1-based line (of the decoded text for UTF-16 files; of the extracted strings for
        /// binary files).
        line: u64,
        /// 1-based column in characters.
        column: u64,
        /// Byte offset of the value in the (decoded) content.
        offset: u64,
    },
    /// In a variable of the environment given to the scan.
    EnvVar {
        /// The variable's name.
        name: String,
    },
    /// In another process's environment or command line.
    Process {
        /// The process id.
        pid: u32,
        /// The process's command name (`/proc/<pid>/comm`), if readable.
        command: String,
        /// The variable's name, or `None` for the command line.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        var: Option<String>,
    },
}

impl Location {
    /// A file path for grouping and SARIF, if the finding is in a file.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Self::File { path, .. } => Some(path),
            _ => None,
        }
    }

    /// The place without line and column, used to group findings and in baselines:
    /// `path`, `path!member`, `env:NAME`, `pid:42:NAME`, `pid:42:cmdline`.
    pub fn group_key(&self) -> String {
        match self {
            Self::File { path, members, .. } => {
                let mut s = path.display().to_string();
                for m in members {
                    s.push('!');
                    s.push_str(m);
                }
                s
            }
            Self::EnvVar { name } => format!("env:{name}"),
            Self::Process { pid, var, .. } => match var {
                Some(v) => format!("pid:{pid}:{v}"),
                None => format!("pid:{pid}:cmdline"),
            },
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { line, column, .. } => {
                write!(f, "{}:{line}:{column}", self.group_key())
            }
            Self::EnvVar { name } => write!(f, "environment variable {name}"),
            Self::Process {
                pid, command, var, ..
            } => match var {
                Some(v) => write!(f, "process {pid} ({command}) environment variable {v}"),
                None => write!(f, "process {pid} ({command}) command line"),
            },
        }
    }
}

/// One secret found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Where it is.
    pub location: Location,
    /// The id of the rule that matched (`github.pat-classic`), or `wall.fingerprint` for a value
    /// found only by its fingerprint.
    pub rule: String,
    /// The provider the secret belongs to (`github`, `aws`, or the wall's environment).
    pub provider: String,
    /// A one-line description (the rule's name).
    pub description: String,
    /// How sure the scanner is.
    pub confidence: Confidence,
    /// How bad it is.
    pub severity: Severity,
    /// A short prefix of the value followed by `***`: never the secret.
    pub redacted: String,
    /// The environment of the wall file whose fingerprint matched, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_env: Option<String>,
    /// The environment named by a Blastwall credential, if the value is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// How the value was encoded where it was found (`base64`), if not plain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// A stable identity of this finding (rule, place and a hash of the value), for baselines and
    /// SARIF `partialFingerprints`. A truncated SHA-256, unkeyed so that it is the same on every
    /// machine: it does not reveal a high-entropy secret, but whoever holds a report can test
    /// guesses at a low-entropy one (a weak password) offline, at SHA-256's speed, knowing the
    /// rule and the place. Share reports of findings as you would the scanned files.
    pub id: String,
}

impl Finding {
    /// Whether this finding is a production secret outside production (the critical case).
    pub fn is_production_secret(&self) -> bool {
        self.severity == Severity::Critical
    }
}

/// A short, safe prefix of a secret: at most 6 characters and at most a quarter of its length,
/// followed by `***`. Control and non-ASCII characters are replaced by `?`.
pub fn redact(secret: &[u8]) -> String {
    let keep = (secret.len() / 4).min(6);
    let mut out: String = secret
        .iter()
        .take(keep)
        .map(|&b| {
            if b.is_ascii_graphic() {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect();
    out.push_str("***");
    out
}

/// The identity hash of a finding: SHA-256 over the rule, the place and the value, truncated to
/// 128 bits, in hex.
pub(crate) fn finding_id(rule: &str, place: &str, secret: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"blastwall-finding-v1\0");
    h.update(rule.as_bytes());
    h.update([0]);
    h.update(place.as_bytes());
    h.update([0]);
    h.update(secret);
    let digest = h.finalize();
    hex::encode(digest.get(..16).unwrap_or(&[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_a_short_prefix_only() {
        assert_eq!(
            redact(b"ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
            "ghp_ab***"
        );
        assert_eq!(redact(b"hunter22"), "hu***");
        assert_eq!(redact(b"abc"), "***");
        assert_eq!(redact(b"\x00\x01\xffabcdefgh"), "??***");
    }

    #[test]
    fn severities_are_ordered() {
        assert!(Severity::Critical > Severity::High);
        assert!(Severity::Low < Severity::Medium);
        assert_eq!(Severity::parse("high"), Some(Severity::High));
    }

    #[test]
    fn locations_display_with_members() {
        let loc = Location::File {
            path: PathBuf::from("a.tar.gz"),
            members: vec!["app/.env".into()],
            line: 3,
            column: 5,
            offset: 40,
        };
        assert_eq!(loc.to_string(), "a.tar.gz!app/.env:3:5");
    }
}
