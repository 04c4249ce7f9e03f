//! Human output: findings grouped by place, redacted, coloured on a terminal; then a summary that
//! says what could not be scanned.

use std::io::{self, Write};

use crate::finding::{Finding, Location, Severity};
use crate::sink::Sink;
use crate::summary::Summary;

/// How many skipped or unreadable entries are listed when not verbose.
const LIST_LIMIT: usize = 10;

/// Writes a grouped, redacted report for people.
#[derive(Debug)]
pub struct HumanSink<W: Write> {
    out: W,
    color: bool,
    verbose: bool,
    group: Option<String>,
    counts: [usize; 4],
}

impl<W: Write> HumanSink<W> {
    /// A sink writing to `out`; `color` adds ANSI colours (the CLI sets it on a TTY), `verbose`
    /// lists every skipped and unreadable entry instead of the first few.
    pub fn new(out: W, color: bool, verbose: bool) -> Self {
        Self {
            out,
            color,
            verbose,
            group: None,
            counts: [0; 4],
        }
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

fn severity_code(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "1;31",
        Severity::High => "31",
        Severity::Medium => "33",
        Severity::Low => "36",
    }
}

impl<W: Write> Sink for HumanSink<W> {
    fn finding(&mut self, f: &Finding) -> io::Result<()> {
        let group = f.location.group_key();
        if self.group.as_deref() != Some(group.as_str()) {
            if self.group.is_some() {
                writeln!(self.out)?;
            }
            let title = match &f.location {
                Location::File { .. } => group.clone(),
                other => other.to_string(),
            };
            let title = self.paint("1", &title);
            writeln!(self.out, "{title}")?;
            self.group = Some(group);
        }
        if let Some(c) = self.counts.get_mut(f.severity as usize) {
            *c += 1;
        }
        let place = match &f.location {
            Location::File { line, column, .. } => format!("{line}:{column}"),
            _ => "-".to_owned(),
        };
        let severity = self.paint(severity_code(f.severity), &format!("{:<8}", f.severity));
        let mut extra = String::new();
        if let Some(env) = &f.wall_env {
            extra.push_str(&format!(" · a secret of `{env}`"));
        }
        if let Some(env) = &f.token_env {
            extra.push_str(&format!(" · token of environment `{env}`"));
        }
        if let Some(enc) = &f.encoding {
            extra.push_str(&format!(" · {enc}-encoded"));
        }
        writeln!(
            self.out,
            "  {place:<9} {severity} {}  {}  {} [{}]{extra}",
            f.rule, f.redacted, f.description, f.confidence
        )
    }

    fn finish(&mut self, s: &Summary) -> io::Result<()> {
        if self.group.is_some() {
            writeln!(self.out)?;
        }
        let total: usize = self.counts.iter().sum();
        let [low, medium, high, critical] = self.counts;
        let head = if total == 0 {
            self.paint("32", "no secrets found")
        } else {
            self.paint(
                "1",
                &format!(
                    "{total} finding(s): {critical} critical, {high} high, {medium} medium, {low} low"
                ),
            )
        };
        writeln!(self.out, "{head}")?;
        writeln!(
            self.out,
            "scanned {} file(s) ({} bytes), {} archive member(s), {} environment variable(s), {} process(es)",
            s.files_scanned,
            s.bytes_scanned,
            s.archive_members_scanned,
            s.env_vars_scanned,
            s.processes_scanned
        )?;
        if s.suppressed_inline > 0 || s.baselined > 0 {
            writeln!(
                self.out,
                "silenced {} inline (blastwall:allow), {} by the baseline",
                s.suppressed_inline, s.baselined
            )?;
        }
        for (title, list) in [("skipped", &s.skipped), ("unreadable", &s.unreadable)] {
            if list.is_empty() {
                continue;
            }
            writeln!(self.out, "{title}: {}", list.len())?;
            let shown = if self.verbose { list.len() } else { LIST_LIMIT };
            for item in list.iter().take(shown) {
                writeln!(self.out, "  {}: {}", item.path, item.reason)?;
            }
            if list.len() > shown {
                writeln!(
                    self.out,
                    "  … and {} more (hint: `--verbose` lists them all)",
                    list.len() - shown
                )?;
            }
        }
        if !s.is_complete() {
            let warn = self.paint(
                "33",
                "the scan is incomplete: some content could not be read (listed above)",
            );
            writeln!(self.out, "{warn}")?;
        }
        self.out.flush()
    }
}
