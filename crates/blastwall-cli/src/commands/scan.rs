//! `blastwall scan`: find secrets, and above all production secrets, where they must not be.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use blastwall_scan::{
    Baseline, HumanSink, JsonLinesSink, Progress, Report, RuleSet, SarifSink, ScanOptions, Scanner,
    Severity, Sink, Targets, WallFile,
};
use indicatif::{HumanBytes, HumanCount, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::exit::Exit;
use crate::failure::Failure;

/// Arguments of `blastwall scan`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  blastwall scan .                                   # this folder, dotfiles and ignored files included
  blastwall scan --wall production.wall --env-vars --procs ~ /srv
  blastwall scan --system --wall production.wall --format sarif > scan.sarif
  blastwall scan . --baseline known.json --fail-on high

Exit codes: 0 clean, 1 findings at or above --fail-on, 2 the scan failed or could not read
everything it was asked to (unless --allow-incomplete), 3 a production secret outside production.")]
pub(crate) struct Args {
    /// Files and folders to scan [default: the current folder, unless --env-vars/--procs/--system]
    paths: Vec<PathBuf>,
    /// A wall file from `blastwall wall export`: any string that is one of its secrets is critical
    #[arg(long = "wall", value_name = "FILE")]
    walls: Vec<PathBuf>,
    /// Scan this process's environment variables
    #[arg(long)]
    env_vars: bool,
    /// Scan other processes' environments and command lines (`/proc/<pid>/environ`, `cmdline`)
    #[arg(long)]
    procs: bool,
    /// The whole filesystem from /, skipping /proc, /sys and /dev, plus every process
    #[arg(long)]
    system: bool,
    /// Output format
    #[arg(long, default_value = "human", value_parser = ["human", "json", "sarif"])]
    format: String,
    /// Lowest severity that fails the scan (exit 1)
    #[arg(long, default_value = "low", value_parser = ["critical", "high", "medium", "low"])]
    fail_on: String,
    /// Accept the findings listed in this file (from --write-baseline)
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Write the findings to this file as a baseline
    #[arg(long, value_name = "FILE")]
    write_baseline: Option<PathBuf>,
    /// Respect .gitignore and similar files (a wall scan does not by default)
    #[arg(long)]
    respect_ignore: bool,
    /// Exit 0/1 even when some files could not be read (they are still listed)
    #[arg(long)]
    allow_incomplete: bool,
    /// Worker threads [default: the number of CPUs]
    #[arg(long)]
    threads: Option<usize>,
}

/// Runs a scan; `verbose` (the global `-v`) lists every skipped and unreadable path, `quiet`
/// (the global `-q`) turns the progress line off.
pub(crate) fn run(args: Args, verbose: bool, quiet: bool) -> Result<Exit, Failure> {
    let rules = RuleSet::builtin()
        .map_err(|e| anyhow::Error::from(e).context("the built-in rules do not load"))?;
    let mut walls = Vec::new();
    for w in &args.walls {
        walls.push(WallFile::load(w).map_err(|e| {
            Failure::usage(
                format!("cannot use the wall file `{}`: {e}", w.display()),
                "export it again with `blastwall wall export --env ENV -o FILE`",
            )
        })?);
    }
    let mut options = if args.system {
        ScanOptions::system()
    } else {
        ScanOptions::default()
    };
    options.respect_ignore_files = args.respect_ignore;
    if let Some(t) = args.threads {
        options.threads = t;
    }
    let mut targets = Targets {
        paths: args.paths.clone(),
        env_vars: None,
        processes: args.procs || args.system,
    };
    if args.system {
        targets.paths = vec![PathBuf::from("/")];
    } else if targets.paths.is_empty() && !args.env_vars && !args.procs {
        targets.paths.push(PathBuf::from("."));
    }
    if args.env_vars || args.system {
        targets.env_vars = Some(
            std::env::vars_os()
                .map(|(k, v)| {
                    (
                        k.to_string_lossy().into_owned(),
                        v.to_string_lossy().into_owned(),
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        );
    }
    let mut scanner = Scanner::new(rules).with_walls(walls).with_options(options);
    if let Some(b) = &args.baseline {
        let baseline = Baseline::load(b).map_err(|e| {
            Failure::usage(
                format!("cannot use the baseline `{}`: {e}", b.display()),
                "write one with `--write-baseline FILE`",
            )
        })?;
        scanner = scanner.with_baseline(baseline);
    }
    let progress = wants_progress(
        quiet,
        std::io::stderr().is_terminal(),
        std::io::stdout().is_terminal(),
        &args.format,
    );
    let report = if progress {
        scan_showing_progress(&scanner, &targets)
    } else {
        scanner.scan(&targets)
    };
    if let Some(path) = &args.write_baseline {
        Baseline::from_findings(&report.findings)
            .save(path)
            .map_err(|e| {
                Failure::usage(
                    format!("cannot write the baseline `{}`: {e}", path.display()),
                    "check the folder exists and is writable",
                )
            })?;
    }
    let stdout = std::io::stdout();
    let color = stdout.is_terminal();
    {
        let lock = stdout.lock();
        let mut sink: Box<dyn Sink> = match args.format.as_str() {
            "json" => Box::new(JsonLinesSink::new(lock)),
            "sarif" => Box::new(SarifSink::new(lock)),
            _ => Box::new(HumanSink::new(lock, color, verbose)),
        };
        report
            .write_to(sink.as_mut())
            .map_err(|e| anyhow::Error::from(e).context("cannot write the report"))?;
    }
    let fail_on = match args.fail_on.as_str() {
        "critical" => Severity::Critical,
        "high" => Severity::High,
        "medium" => Severity::Medium,
        _ => Severity::Low,
    };
    if report.has_production_secret() {
        eprintln!("error: a production secret was found outside production");
        return Ok(Exit::ProductionSecret);
    }
    if report.count_at_or_above(fail_on) > 0 {
        return Ok(Exit::Failed);
    }
    if !report.summary.is_complete() && !args.allow_incomplete {
        eprintln!(
            "error: the scan could not read everything it was asked to, so it cannot say the wall holds"
        );
        eprintln!(
            "hint: the summary lists what was skipped (`-v` for every path); pass --allow-incomplete to accept that"
        );
        return Ok(Exit::Usage);
    }
    Ok(Exit::Clean)
}

/// Whether to draw a progress line: only on a terminal (stderr), never with `-q`, and not when
/// JSON or SARIF goes to a file or a pipe (a machine run, even if started from a terminal).
fn wants_progress(quiet: bool, stderr_tty: bool, stdout_tty: bool, format: &str) -> bool {
    !quiet && stderr_tty && (format == "human" || stdout_tty)
}

/// Runs the scan while another thread redraws a line on stderr with the files, bytes and
/// findings so far; the line is cleared when the scan ends, before the report is printed.
fn scan_showing_progress(scanner: &Scanner, targets: &Targets) -> Report {
    let progress = Progress::default();
    let done = AtomicBool::new(false);
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} scanning: {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let message = |p: &Progress| {
        let findings = p.findings();
        format!(
            "{} files, {}, {} finding{}",
            HumanCount(p.files()),
            HumanBytes(p.bytes()),
            HumanCount(findings),
            if findings == 1 { "" } else { "s" }
        )
    };
    bar.set_message(message(&progress));
    bar.tick();
    std::thread::scope(|s| {
        let ticker = s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                bar.set_message(message(&progress));
                bar.tick();
                std::thread::park_timeout(Duration::from_millis(100));
            }
        });
        let report = scanner.scan_with_progress(targets, &progress);
        done.store(true, Ordering::Relaxed);
        ticker.thread().unpark();
        let _ = ticker.join();
        bar.finish_and_clear();
        report
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_only_on_a_terminal_and_never_quiet() {
        // quiet, stderr a TTY, stdout a TTY, format
        assert!(wants_progress(false, true, true, "human"));
        assert!(wants_progress(false, true, false, "human"));
        assert!(wants_progress(false, true, true, "json"));
        assert!(!wants_progress(false, true, false, "json"));
        assert!(!wants_progress(false, true, false, "sarif"));
        assert!(!wants_progress(false, false, true, "human"));
        assert!(!wants_progress(true, true, true, "human"));
    }
}
