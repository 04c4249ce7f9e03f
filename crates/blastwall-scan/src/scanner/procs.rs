//! Environment variables and other processes' environments and command lines.
//!
//! Variables are scanned as `NAME=value`, so that rules that need the name (`AWS_SECRET_…=`) see
//! it, and each value (and each command-line argument), as it is, is a fingerprint candidate of
//! its own. The environment is passed in as a map: this crate never reads or changes its own
//! process environment.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::Path;

use crate::finding::Location;
use crate::scanner::Collector;
use crate::scanner::source::{ALLOW_MARKER, line_allows};
use crate::summary::SkipReason;

/// The most read from one `/proc/<pid>/environ` or `cmdline`.
const MAX_PROC_FILE: u64 = 4 << 20;

pub(super) fn scan_env_vars(col: &Collector<'_>, vars: &BTreeMap<String, String>) {
    for (name, value) in vars {
        col.summary(|s| s.env_vars_scanned += 1);
        let text = format!("{name}={value}");
        let value_start = name.len() + 1;
        let value_span = (value_start, text.len());
        for hit in col
            .engine()
            .scan_with_values(text.as_bytes(), &[value_span])
        {
            let suppressed = value_allows(value.as_bytes(), hit.start, value_start);
            col.add(&hit, Location::EnvVar { name: name.clone() }, suppressed);
        }
    }
}

pub(super) fn scan_processes(col: &Collector<'_>, proc_root: &Path) {
    let entries = match fs::read_dir(proc_root) {
        Ok(e) => e,
        Err(e) => return col.unreadable(proc_root.display().to_string(), &e),
    };
    let skip = col.options().skip_pid;
    let mut pids: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .filter(|&pid| Some(pid) != skip)
        .collect();
    pids.sort_unstable();
    for pid in pids {
        scan_process(col, proc_root, pid);
    }
}

fn scan_process(col: &Collector<'_>, proc_root: &Path, pid: u32) {
    let dir = proc_root.join(pid.to_string());
    let command = fs::read_to_string(dir.join("comm"))
        .map(|c| c.trim().to_owned())
        .unwrap_or_default();
    let mut scanned = false;
    match read_bounded(col, &dir.join("environ")) {
        Ok(environ) => {
            scanned = true;
            let vars = environ.split(|&b| b == 0).filter(|v| !v.is_empty());
            for (index, var) in vars.enumerate() {
                let text = String::from_utf8_lossy(var);
                // An entry without `=` may be a secret passed that way: never printed.
                let name = match text.split_once('=') {
                    Some((n, _)) => n.to_owned(),
                    None => format!("<entry {} without '='>", index + 1),
                };
                // The value as it is (after the first `=`; the whole entry without one).
                let value_start = memchr::memchr(b'=', var).map_or(0, |i| i + 1);
                let value = var.get(value_start..).unwrap_or(&[]);
                for hit in col
                    .engine()
                    .scan_with_values(var, &[(value_start, var.len())])
                {
                    let suppressed = value_allows(value, hit.start, value_start);
                    let location = Location::Process {
                        pid,
                        command: command.clone(),
                        var: Some(name.clone()),
                    };
                    col.add(&hit, location, suppressed);
                }
            }
        }
        Err(e) if vanished(&e) => return,
        Err(e) => col.unreadable(dir.join("environ").display().to_string(), &e),
    }
    match read_bounded(col, &dir.join("cmdline")) {
        Ok(cmdline) => {
            scanned = true;
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let text = args.join(" ");
            // Each argument as it is is a candidate too.
            let mut spans = Vec::with_capacity(args.len());
            let mut at = 0;
            for a in &args {
                spans.push((at, at + a.len()));
                at += a.len() + 1;
            }
            for hit in col.engine().scan_with_values(text.as_bytes(), &spans) {
                let suppressed = argument_allows(&args, &spans, hit.start);
                let location = Location::Process {
                    pid,
                    command: command.clone(),
                    var: None,
                };
                col.add(&hit, location, suppressed);
            }
        }
        Err(e) if vanished(&e) => {}
        Err(e) => col.unreadable(dir.join("cmdline").display().to_string(), &e),
    }
    if scanned {
        col.summary(|s| s.processes_scanned += 1);
    }
}

/// Whether the line of an environment value that holds the hit at `at` (in the text that
/// holds the value from `value_start`) carries the marker: a value may be a whole file of
/// many lines, and a marker on one of them silences that line only.
fn value_allows(value: &[u8], at: usize, value_start: usize) -> bool {
    line_allows(value, at.saturating_sub(value_start))
}

/// Whether the argument of a command line (`args` joined by spaces, each at its span) that
/// holds the hit at `at` carries the marker: a marker in one argument silences that one only.
fn argument_allows(args: &[String], spans: &[(usize, usize)], at: usize) -> bool {
    // The last argument that starts at or before the hit (a hit on a joining space belongs to
    // the argument before it).
    let index = spans.partition_point(|&(s, _)| s <= at).saturating_sub(1);
    args.get(index)
        .is_some_and(|a| memchr::memmem::find(a.as_bytes(), ALLOW_MARKER).is_some())
}

/// The process exited between listing and reading: nothing was there to miss.
fn vanished(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// Reads at most [`MAX_PROC_FILE`] bytes of `path`; a longer file is listed as cut there.
fn read_bounded(col: &Collector<'_>, path: &Path) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    fs::File::open(path)?
        .take(MAX_PROC_FILE + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > MAX_PROC_FILE {
        out.truncate(MAX_PROC_FILE as usize);
        col.skip(
            path.display().to_string(),
            SkipReason::TooLarge {
                size: MAX_PROC_FILE + 1,
                limit: MAX_PROC_FILE,
            },
        );
    }
    Ok(out)
}
