//! Baselines: findings a team has accepted, so that a scan reports only new ones.
//!
//! A baseline lists finding ids ([`Finding::id`]: a hash of the rule, the place without line and
//! column, and the value), so an accepted secret stays accepted when lines move, and a new secret
//! in the same file is still reported. No secret is written to a baseline.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ScanError;
use crate::finding::Finding;

/// The `format` field of a baseline file.
pub const BASELINE_FORMAT: &str = "blastwall-baseline";
/// The baseline format version this crate reads and writes.
pub const BASELINE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    rule: String,
    location: String,
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
                };
                (e.id.clone(), e)
            })
            .collect();
        Self { entries }
    }

    /// Whether `finding` is accepted.
    pub fn contains(&self, finding: &Finding) -> bool {
        self.entries.contains_key(&finding.id)
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
        if repr.format != BASELINE_FORMAT || repr.version != BASELINE_VERSION {
            return Err(bad(format!(
                "expected format `{BASELINE_FORMAT}` version {BASELINE_VERSION}"
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
