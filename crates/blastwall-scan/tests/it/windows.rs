//! Chunk boundaries: a secret is reported exactly once, at its own line and column, wherever
//! it sits relative to the end of a window, including when its keyword, its opening quote or
//! its URL's `://user:` lies in one window and the secret in the next.

use blastwall_core::{EnvName, Tier};
use blastwall_scan::{Location, ScanOptions, Scanner, WallFile};

use crate::support::{Rng, scanner, small_chunks};

/// A text of about `len` bytes with `line` starting at byte `at` (filler lines before it, and
/// after it), and the line number `line` is on.
fn text_with_line_at(at: usize, line: &str, len: usize) -> (Vec<u8>, u64) {
    let mut text = Vec::with_capacity(len + line.len() + 64);
    while text.len() + 12 < at {
        text.extend_from_slice(b"filler line\n");
    }
    if text.len() < at {
        // A short last filler line (at least the newline).
        text.extend(std::iter::repeat_n(b'#', at - text.len() - 1));
        text.push(b'\n');
    }
    assert_eq!(text.len(), at);
    let line_no = text.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    text.extend_from_slice(line.as_bytes());
    text.push(b'\n');
    while text.len() < len {
        text.extend_from_slice(b"tail line\n");
    }
    (text, line_no)
}

/// Scans `line` placed at each of `starts` and checks exactly one finding of `rule`, at the
/// line, the column (1-based, of the value at byte `value_at` of the line) and the offset.
fn slide(scanner: &Scanner, line: &str, value_at: usize, rule: &str, starts: &[usize]) {
    let opts = scanner.options();
    // Past the end of the window after the last start.
    let len = starts.iter().max().copied().unwrap_or(0) + 2 * opts.overlap + 4096;
    for &at in starts {
        let (text, line_no) = text_with_line_at(at, line, len);
        let report = scanner.scan_bytes("slid.txt", &text);
        let got: Vec<(String, u64, u64, u64)> = report
            .findings
            .iter()
            .map(|f| match &f.location {
                Location::File {
                    line,
                    column,
                    offset,
                    ..
                } => (f.rule.clone(), *line, *column, *offset),
                other => panic!("{other:?}"),
            })
            .collect();
        let want = (
            rule.to_owned(),
            line_no,
            value_at as u64 + 1,
            (at + value_at) as u64,
        );
        assert_eq!(got, [want], "line at byte {at} (chunk {})", opts.chunk_size);
    }
}

/// The starts around the ends of the first `windows` windows: a window reports the hits that
/// start in the next `chunk_size - overlap` bytes.
fn starts_around(opts: &ScanOptions, windows: usize, before: usize, after: usize) -> Vec<usize> {
    let step = opts.chunk_size - opts.overlap;
    (1..=windows)
        .flat_map(|k| (k * step - before)..=(k * step + after))
        .collect()
}

fn prod_wall(secrets: &[&str]) -> WallFile {
    WallFile::build(
        &EnvName::new("production").unwrap(),
        Tier::Prod,
        secrets.iter().map(|s| s.as_bytes()),
    )
    .unwrap()
}

const QUOTED: &str = "correct horse battery staple 42";
const URL_PASSWORD: &str = "Pl41nPr0dK3yZq8vN3kL";

fn lines() -> Vec<(String, usize, &'static str)> {
    let mut rng = Rng::new(31);
    vec![
        (
            format!("API_TOKEN={}", rng.alnum(32)),
            10,
            "generic.secret-assignment",
        ),
        (format!("say \"{QUOTED}\" twice"), 5, "wall.fingerprint"),
        (
            format!("x postgres://app:{URL_PASSWORD}@db/app"),
            17,
            "db.url-password",
        ),
    ]
}

#[test]
fn a_secret_across_a_window_end_is_reported_once_with_small_chunks() {
    let scanner = scanner()
        .with_walls([prod_wall(&[QUOTED, URL_PASSWORD])])
        .with_options(small_chunks());
    let starts = starts_around(scanner.options(), 2, 40, 5);
    for (line, value_at, rule) in lines() {
        slide(&scanner, &line, value_at, rule, &starts);
    }
}

#[test]
fn a_secret_across_a_window_end_is_reported_once_with_default_chunks() {
    let scanner = scanner().with_walls([prod_wall(&[QUOTED, URL_PASSWORD])]);
    // Fewer starts, as each scan reads a whole default chunk: the line starting just before the
    // window's end, and its value starting just before, at and just after it.
    let opts = scanner.options();
    let end = opts.chunk_size - opts.overlap;
    for (line, value_at, rule) in lines() {
        let v = end - value_at;
        slide(&scanner, &line, value_at, rule, &[end - 1, v - 1, v, v + 1]);
    }
}
