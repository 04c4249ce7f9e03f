//! Everything written to stdout goes through here (the only module allowed to print).
//!
//! stdout carries data (tables, JSON); diagnostics and logs go to stderr.

#![expect(
    clippy::print_stdout,
    reason = "this module is the one place that writes stdout"
)]

use std::io::Write;

use serde::Serialize;

/// Prints a line of data.
pub(crate) fn line(text: &str) {
    println!("{text}");
}

/// Set by `-q`: [`note`]s are not printed.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes [`note`] print nothing (`-q`: errors only).
pub(crate) fn set_quiet(quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
}

/// Prints a line for the person at the terminal, on stderr (not data): what was done, what to
/// know. `-q` silences it; errors go through [`crate::failure::Failure`] instead.
pub(crate) fn note(text: &str) {
    if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("{text}");
    }
}

/// Prints a value as pretty JSON.
pub(crate) fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    println!("{text}");
    Ok(())
}

/// Prints rows as a left-aligned table with a header.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let render = |cells: Vec<&str>| -> String {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = *w));
            }
        }
        out.trim_end().to_owned()
    };
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let _ = writeln!(lock, "{}", render(header.to_vec()));
    for row in rows {
        let _ = writeln!(lock, "{}", render(row.iter().map(String::as_str).collect()));
    }
}
