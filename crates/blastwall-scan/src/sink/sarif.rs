//! SARIF 2.1.0 output, for code scanning interfaces. Findings are buffered and the log is written
//! in [`Sink::finish`]. Skipped and unreadable entries become tool execution notifications, so
//! that a consumer sees that the scan was incomplete.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde_json::{Value, json};

use crate::finding::{Finding, Location, Severity};
use crate::sink::Sink;
use crate::summary::Summary;

/// The SARIF schema this sink writes.
pub const SARIF_SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

/// Writes one SARIF 2.1.0 log with one run.
#[derive(Debug)]
pub struct SarifSink<W: Write> {
    out: W,
    findings: Vec<Finding>,
}

impl<W: Write> SarifSink<W> {
    /// A sink writing to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            findings: Vec::new(),
        }
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.out
    }
}

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low => "note",
    }
}

/// GitHub code scanning reads `security-severity` (0–10) to rank security results.
fn security_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "9.8",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "3.0",
    }
}

/// Percent-encodes a path into a relative URI reference.
fn uri(path: &std::path::Path) -> String {
    let text = path.to_string_lossy();
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if path.is_absolute() {
        format!("file://{out}")
    } else {
        out
    }
}

fn result(f: &Finding, rule_index: usize) -> Value {
    let mut text = format!("{} ({}): {}", f.description, f.confidence, f.redacted);
    if let Some(env) = &f.wall_env {
        text.push_str(&format!("; a secret of environment `{env}`"));
    }
    if let Some(env) = &f.token_env {
        text.push_str(&format!("; a token of environment `{env}`"));
    }
    let location = match &f.location {
        Location::File {
            path,
            members,
            line,
            column,
            ..
        } => {
            if !members.is_empty() {
                text.push_str(&format!("; inside `{}`", members.join("!")));
            }
            json!({
                "physicalLocation": {
                    "artifactLocation": { "uri": uri(path) },
                    "region": { "startLine": (*line).max(1), "startColumn": (*column).max(1) }
                }
            })
        }
        other => json!({
            "logicalLocations": [{ "name": other.group_key(), "kind": "variable" }]
        }),
    };
    json!({
        "ruleId": f.rule,
        "ruleIndex": rule_index,
        "level": level(f.severity),
        "message": { "text": text },
        "locations": [location],
        "partialFingerprints": { "blastwallFinding/v1": f.id },
        "properties": {
            "severity": f.severity.as_str(),
            "confidence": f.confidence.as_str(),
            "provider": f.provider,
            "redacted": f.redacted,
        }
    })
}

impl<W: Write> Sink for SarifSink<W> {
    fn finding(&mut self, finding: &Finding) -> io::Result<()> {
        self.findings.push(finding.clone());
        Ok(())
    }

    fn finish(&mut self, summary: &Summary) -> io::Result<()> {
        // One rule entry per rule id used, with the highest severity seen for it.
        let mut rules: BTreeMap<&str, &Finding> = BTreeMap::new();
        for f in &self.findings {
            let e = rules.entry(f.rule.as_str()).or_insert(f);
            if f.severity > e.severity {
                *e = f;
            }
        }
        let index: BTreeMap<&str, usize> = rules.keys().enumerate().map(|(i, k)| (*k, i)).collect();
        let rule_values: Vec<Value> = rules
            .values()
            .map(|f| {
                json!({
                    "id": f.rule,
                    "name": f.rule,
                    "shortDescription": { "text": f.description },
                    "defaultConfiguration": { "level": level(f.severity) },
                    "properties": {
                        "provider": f.provider,
                        "security-severity": security_severity(f.severity),
                        "tags": ["security", "secret"],
                    }
                })
            })
            .collect();
        let results: Vec<Value> = self
            .findings
            .iter()
            .map(|f| result(f, index.get(f.rule.as_str()).copied().unwrap_or(0)))
            .collect();
        let notifications: Vec<Value> = summary
            .skipped
            .iter()
            .map(|s| (s, "note"))
            .chain(summary.unreadable.iter().map(|s| (s, "warning")))
            .map(|(s, lvl)| {
                json!({
                    "level": lvl,
                    "message": { "text": format!("{}: {}", s.path, s.reason) },
                })
            })
            .collect();
        let log = json!({
            "$schema": SARIF_SCHEMA,
            "version": "2.1.0",
            "runs": [{
                "tool": {
                    "driver": {
                        "name": "blastwall",
                        "semanticVersion": env!("CARGO_PKG_VERSION"),
                        "rules": rule_values,
                    }
                },
                "results": results,
                "invocations": [{
                    "executionSuccessful": true,
                    "toolExecutionNotifications": notifications,
                    "properties": {
                        "complete": summary.is_complete(),
                        "filesScanned": summary.files_scanned,
                        "bytesScanned": summary.bytes_scanned,
                    }
                }],
                "columnKind": "unicodeCodePoints",
            }]
        });
        serde_json::to_writer_pretty(&mut self.out, &log).map_err(io::Error::other)?;
        writeln!(self.out)?;
        self.out.flush()
    }
}
