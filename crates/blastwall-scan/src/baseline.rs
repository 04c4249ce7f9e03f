//! Baselines: findings a team has accepted, so that a scan reports only new ones.
//!
//! A baseline lists finding ids ([`Finding::id`]: a hash of the rule, the place without line and
//! column, and the value), so an accepted secret stays accepted when lines move, and a new secret
//! in the same file is still reported. No secret is written to a baseline.
//!
//! An entry also records the finding's severity and the wall environment whose fingerprint it
//! matched, and accepts the finding only as it was: the same value found later with a higher
//! severity (a prod wall file now lists it) or by another wall is reported. Entries of version 1
//! files record neither: they are taken as high, without a wall, so they never silence a
//! critical finding or a fingerprint match.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ScanError;
use crate::finding::{Finding, Severity};

/// The `format` field of a baseline file.
pub const BASELINE_FORMAT: &str = "blastwall-baseline";
/// The baseline format version this crate writes; it reads this one and version 1.
pub const BASELINE_VERSION: u32 = 2;
/// The oldest baseline format version this crate reads.
const OLDEST_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    rule: String,
    location: String,
    /// The severity accepted; absent in version 1 files, read as high.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    severity: Option<Severity>,
    /// The environment of the wall whose fingerprint the accepted finding matched, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wall_env: Option<String>,
}

impl Entry {
    /// Whether this entry accepts `finding` (whose id it has): no more severe than recorded,
    /// and a fingerprint match only of the wall recorded.
    fn accepts(&self, finding: &Finding) -> bool {
        let severity = self.severity.unwrap_or(Severity::High);
        finding.severity <= severity
            && (finding.wall_env.is_none() || finding.wall_env == self.wall_env)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Repr {
    format: String,
    version: u32,
    findings: Vec<Entry>,
}

/// A set of accepted findings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baseline {
    entries: BTreeMap<String, Entry>,
}

impl Baseline {
    /// A baseline accepting every one of `findings`.
    pub fn from_findings<'a>(findings: impl IntoIterator<Item = &'a Finding>) -> Self {
        let entries = findings
            .into_iter()
            .map(|f| {
                let e = Entry {
                    id: f.id.clone(),
                    rule: f.rule.clone(),
                    location: f.location.group_key(),
                    severity: Some(f.severity),
                    wall_env: f.wall_env.clone(),
                };
                (e.id.clone(), e)
            })
            .collect();
        Self { entries }
    }

    /// Whether `finding` is accepted: its id is listed, it is no more severe than when it was
    /// accepted, and it matches no wall other than the one it matched then.
    pub fn contains(&self, finding: &Finding) -> bool {
        self.entries
            .get(&finding.id)
            .is_some_and(|e| e.accepts(finding))
    }

    /// The number of accepted findings.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is accepted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The baseline as JSON.
    pub fn to_json(&self) -> String {
        let repr = Repr {
            format: BASELINE_FORMAT.into(),
            version: BASELINE_VERSION,
            findings: self.entries.values().cloned().collect(),
        };
        // INVARIANT: strings and numbers always serialize.
        serde_json::to_string_pretty(&repr).unwrap_or_default() + "\n"
    }

    /// Reads a baseline from JSON; `path` names it in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, ScanError> {
        let bad = |message: String| ScanError::BaselineFormat {
            path: path.to_owned(),
            message,
        };
        let repr: Repr = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if repr.format != BASELINE_FORMAT
            || !(OLDEST_VERSION..=BASELINE_VERSION).contains(&repr.version)
        {
            return Err(bad(format!(
                "expected format `{BASELINE_FORMAT}` version {OLDEST_VERSION} to {BASELINE_VERSION}"
            )));
        }
        Ok(Self {
            entries: repr
                .findings
                .into_iter()
                .map(|e| (e.id.clone(), e))
                .collect(),
        })
    }

    /// Writes the baseline file.
    pub fn save(&self, path: &Path) -> Result<(), ScanError> {
        fs::write(path, self.to_json()).map_err(|source| ScanError::BaselineIo {
            path: path.to_owned(),
            source,
        })
    }

    /// Reads a baseline file.
    pub fn load(path: &Path) -> Result<Self, ScanError> {
        let text = fs::read_to_string(path).map_err(|source| ScanError::BaselineIo {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json(&text, path)
    }
}
