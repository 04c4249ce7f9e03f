//! The scanner: what a caller builds once (rules, wall files, options, baseline) and then points
//! at paths, environment variables and processes, getting a [`Report`] back.

mod procs;
mod source;
mod walk;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::baseline::Baseline;
use crate::engine::{Engine, Hit};
use crate::error::ScanError;
use crate::finding::{Finding, Location, Severity, finding_id};
use crate::fingerprint::WallFile;
use crate::rules::RuleSet;
use crate::sink::Sink;
use crate::summary::{SkipReason, Skipped, Summary};

/// Bounds and switches of a scan. [`ScanOptions::default`] is what `blastwall scan PATH` uses.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Files larger than this are skipped and listed (default 256 MiB).
    pub max_file_size: u64,
    /// Respect `.gitignore`, `.ignore` and git excludes (default no: a wall scan looks
    /// everywhere).
    pub respect_ignore_files: bool,
    /// Follow symbolic links (default no). Loops are detected and listed either way.
    pub follow_symlinks: bool,
    /// Stay on the file system of each root (default no).
    pub same_file_system: bool,
    /// Paths not to descend into (listed once each as excluded when met).
    pub exclude: Vec<PathBuf>,
    /// Walker threads; 0 means one per CPU.
    pub threads: usize,
    /// How many archive layers to open (gzip, tar, zip each count one; default 4).
    pub archive_max_depth: u32,
    /// The most an archive may expand, as a multiple of its size on disk (default 100).
    pub archive_max_ratio: u64,
    /// The most an archive may expand in total, in bytes (default 1 GiB).
    pub archive_max_bytes: u64,
    /// Bytes read and scanned at a time (default 8 MiB).
    pub chunk_size: usize,
    /// Bytes each window sees past its chunk's end, and keeps before its start as left
    /// context, so that a secret across a chunk boundary is seen whole, with its keyword
    /// (default 64 KiB; must be less than half of `chunk_size`).
    pub overlap: usize,
    /// The process to leave out of a process scan (default: this one).
    pub skip_pid: Option<u32>,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            max_file_size: 256 << 20,
            respect_ignore_files: false,
            follow_symlinks: false,
            same_file_system: false,
            exclude: Vec::new(),
            threads: 0,
            archive_max_depth: 4,
            archive_max_ratio: 100,
            archive_max_bytes: 1 << 30,
            chunk_size: 8 << 20,
            overlap: 64 << 10,
            skip_pid: Some(std::process::id()),
        }
    }
}

impl ScanOptions {
    /// Options for `blastwall scan --system`: the defaults, excluding `/proc`, `/sys` and `/dev`
    /// (each readable `/proc/<pid>/environ` is scanned by [`Scanner::scan_processes`] instead).
    pub fn system() -> Self {
        Self {
            exclude: vec!["/proc".into(), "/sys".into(), "/dev".into()],
            ..Self::default()
        }
    }

    fn normalized(mut self) -> Self {
        self.chunk_size = self.chunk_size.max(4096);
        self.overlap = self.overlap.clamp(256, self.chunk_size / 2 - 1);
        self
    }
}

/// What to scan in one call of [`Scanner::scan`].
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// Files and directories.
    pub paths: Vec<PathBuf>,
    /// Environment variables (the CLI passes `std::env::vars_os()` for `--env-vars`).
    pub env_vars: Option<BTreeMap<String, String>>,
    /// Whether to scan other processes' environments and command lines (`--procs`).
    pub processes: bool,
}

/// Live counters of a running scan, for a progress display: the walker threads update them as
/// they go ([`Scanner::scan_with_progress`]), and any thread may read them meanwhile. The
/// final, exact numbers are in the [`Report`]; these count findings before the baseline is
/// applied.
#[derive(Debug, Default)]
pub struct Progress {
    files: AtomicU64,
    bytes: AtomicU64,
    findings: AtomicU64,
}

impl Progress {
    /// Files opened for scanning so far.
    pub fn files(&self) -> u64 {
        self.files.load(Ordering::Relaxed)
    }

    /// Bytes of those files (their size on disk).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Findings so far (inline-suppressed ones not counted; baselined ones counted).
    pub fn findings(&self) -> u64 {
        self.findings.load(Ordering::Relaxed)
    }
}

/// A scan's findings and summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Findings, sorted by place, never holding a secret.
    pub findings: Vec<Finding>,
    /// Counts and what could not be scanned.
    pub summary: Summary,
}

impl Report {
    /// The highest severity found, if any.
    pub fn max_severity(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }

    /// How many findings are at or above `severity` (for `--fail-on`).
    pub fn count_at_or_above(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity >= severity)
            .count()
    }

    /// Whether a production secret was found outside production (a critical finding).
    pub fn has_production_secret(&self) -> bool {
        self.findings.iter().any(Finding::is_production_secret)
    }

    /// Writes every finding, then the summary, to `sink`.
    pub fn write_to(&self, sink: &mut dyn Sink) -> Result<(), ScanError> {
        for f in &self.findings {
            sink.finding(f).map_err(ScanError::Output)?;
        }
        sink.finish(&self.summary).map_err(ScanError::Output)
    }
}

/// Rules, wall files, options and an optional baseline, ready to scan.
#[derive(Debug, Clone)]
pub struct Scanner {
    rules: RuleSet,
    walls: Vec<WallFile>,
    options: ScanOptions,
    baseline: Option<Baseline>,
}

impl Scanner {
    /// A scanner with `rules`, no wall file, default options and no baseline.
    pub fn new(rules: RuleSet) -> Self {
        Self {
            rules,
            walls: Vec::new(),
            options: ScanOptions::default().normalized(),
            baseline: None,
        }
    }

    /// Adds wall files: every candidate is tested against each one's fingerprints.
    pub fn with_walls(mut self, walls: impl IntoIterator<Item = WallFile>) -> Self {
        self.walls.extend(walls);
        self
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: ScanOptions) -> Self {
        self.options = options.normalized();
        self
    }

    /// Findings whose id is in `baseline` are dropped from reports and counted as baselined.
    pub fn with_baseline(mut self, baseline: Baseline) -> Self {
        self.baseline = Some(baseline);
        self
    }

    /// The rules in use.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// The wall files in use.
    pub fn walls(&self) -> &[WallFile] {
        &self.walls
    }

    /// The options in use.
    pub fn options(&self) -> &ScanOptions {
        &self.options
    }

    /// Scans everything in `targets` and returns one report.
    pub fn scan(&self, targets: &Targets) -> Report {
        self.scan_with_progress(targets, &Progress::default())
    }

    /// [`Scanner::scan`], counting files, bytes and findings in `progress` as it goes, for a
    /// display on another thread.
    pub fn scan_with_progress(&self, targets: &Targets, progress: &Progress) -> Report {
        let mut collector = Collector::new(self);
        collector.progress = Some(progress);
        if !targets.paths.is_empty() {
            walk::walk(&collector, &targets.paths);
        }
        if let Some(vars) = &targets.env_vars {
            procs::scan_env_vars(&collector, vars);
        }
        if targets.processes {
            procs::scan_processes(&collector, std::path::Path::new("/proc"));
        }
        collector.finish()
    }

    /// Scans files and directories.
    pub fn scan_paths(&self, paths: &[PathBuf]) -> Report {
        self.scan(&Targets {
            paths: paths.to_vec(),
            ..Targets::default()
        })
    }

    /// Scans environment variables given as a map (never read from the process here).
    pub fn scan_env_vars(&self, vars: &BTreeMap<String, String>) -> Report {
        let collector = Collector::new(self);
        procs::scan_env_vars(&collector, vars);
        collector.finish()
    }

    /// Scans other processes' environments and command lines under `proc_root` (`/proc`).
    pub fn scan_processes(&self, proc_root: &std::path::Path) -> Report {
        let collector = Collector::new(self);
        procs::scan_processes(&collector, proc_root);
        collector.finish()
    }

    /// Scans an in-memory buffer as if it were the file `name` (archives and encodings
    /// included).
    pub fn scan_bytes(&self, name: &str, bytes: &[u8]) -> Report {
        let collector = Collector::new(self);
        source::scan_reader(
            &collector,
            PathBuf::from(name),
            &mut &bytes[..],
            bytes.len() as u64,
        );
        collector.finish()
    }
}

/// Shared state of one scan: the engine, and findings and summary filled by walker threads.
pub(crate) struct Collector<'a> {
    scanner: &'a Scanner,
    engine: Engine<'a>,
    findings: Mutex<Vec<Finding>>,
    summary: Mutex<Summary>,
    progress: Option<&'a Progress>,
}

impl<'a> Collector<'a> {
    fn new(scanner: &'a Scanner) -> Self {
        Self {
            scanner,
            engine: Engine::new(&scanner.rules, &scanner.walls),
            findings: Mutex::new(Vec::new()),
            summary: Mutex::new(Summary::default()),
            progress: None,
        }
    }

    /// Counts a file about to be scanned, in the summary and the live progress.
    pub(crate) fn file_scanned(&self, bytes: u64) {
        self.summary(|s| {
            s.files_scanned += 1;
            s.bytes_scanned += bytes;
        });
        if let Some(p) = self.progress {
            p.files.fetch_add(1, Ordering::Relaxed);
            p.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    pub(crate) fn options(&self) -> &ScanOptions {
        &self.scanner.options
    }

    pub(crate) fn engine(&self) -> &Engine<'a> {
        &self.engine
    }

    pub(crate) fn summary(&self, f: impl FnOnce(&mut Summary)) {
        if let Ok(mut s) = self.summary.lock() {
            f(&mut s);
        }
    }

    pub(crate) fn skip(&self, path: String, reason: SkipReason) {
        self.summary(|s| s.skipped.push(Skipped { path, reason }));
    }

    pub(crate) fn unreadable(&self, path: String, error: &std::io::Error) {
        let reason = SkipReason::Io {
            error: error.to_string(),
        };
        self.summary(|s| s.unreadable.push(Skipped { path, reason }));
    }

    /// Records a hit found at `location`; `suppressed` when its line carries `blastwall:allow`.
    pub(crate) fn add(&self, hit: &Hit, location: Location, suppressed: bool) {
        if suppressed {
            self.summary(|s| s.suppressed_inline += 1);
            return;
        }
        let rules = &self.scanner.rules;
        let rule = hit.rule.and_then(|i| rules.get(i));
        let (rule_id, provider, description) = match rule {
            Some(r) => (
                r.id().to_owned(),
                r.spec().provider.clone(),
                r.spec().name.clone(),
            ),
            None => {
                let env = hit.wall_env.clone().unwrap_or_default();
                (
                    "wall.fingerprint".to_owned(),
                    format!("wall:{env}"),
                    format!("a secret of environment `{env}` (fingerprint match)"),
                )
            }
        };
        let id = finding_id(&rule_id, &location.group_key(), &hit.digest);
        let finding = Finding {
            location,
            rule: rule_id,
            provider,
            description,
            confidence: hit.confidence,
            severity: hit.severity,
            redacted: hit.redacted.clone(),
            wall_env: hit.wall_env.clone(),
            token_env: hit.token_env.clone(),
            encoding: hit.encoding.map(str::to_owned),
            id,
        };
        if let Ok(mut f) = self.findings.lock() {
            f.push(finding);
        }
        if let Some(p) = self.progress {
            p.findings.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn finish(self) -> Report {
        let mut findings = self.findings.into_inner().unwrap_or_default();
        let mut summary = self.summary.into_inner().unwrap_or_default();
        findings.sort_by(|a, b| a.location.cmp(&b.location).then(a.rule.cmp(&b.rule)));
        if let Some(baseline) = &self.scanner.baseline {
            let before = findings.len();
            findings.retain(|f| !baseline.contains(f));
            summary.baselined += (before - findings.len()) as u64;
        }
        summary.sort();
        Report { findings, summary }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_what_the_report_says() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "nothing here\n").unwrap();
        std::fs::write(
            dir.path().join(".env"),
            "DB_PASSWORD=Zq8vN3kLp0Xw7RtY2mBc\n",
        )
        .unwrap();
        let scanner = Scanner::new(RuleSet::builtin().unwrap());
        let progress = Progress::default();
        let report = scanner.scan_with_progress(
            &Targets {
                paths: vec![dir.path().to_owned()],
                ..Targets::default()
            },
            &progress,
        );
        assert_eq!(progress.files(), report.summary.files_scanned);
        assert_eq!(progress.bytes(), report.summary.bytes_scanned);
        assert_eq!(progress.findings(), report.findings.len() as u64);
        assert_eq!(progress.files(), 2);
        assert!(progress.findings() >= 1);
    }
}
