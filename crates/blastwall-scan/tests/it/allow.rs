//! Inline `blastwall:allow` silences only what it stands beside: the line in a text file, the
//! printable string in a binary file, the line of an environment value, the argument of a
//! command line. A marker elsewhere in the same file, value or command line does not.

use std::collections::BTreeMap;
use std::fs;

use blastwall_scan::Report;

use crate::support::{Rng, github_token, scanner, small_chunks};

/// Findings and inline suppressions of `report`.
fn counts(report: &Report) -> (usize, u64) {
    (report.findings.len(), report.summary.suppressed_inline)
}

/// A binary blob of NUL-separated strings, with no newline byte anywhere.
fn blob(strings: &[&str]) -> Vec<u8> {
    let mut out = b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00".to_vec();
    for s in strings {
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(b"\x00\x00\x01");
    }
    assert!(!out.contains(&b'\n'));
    out
}

#[test]
fn in_a_binary_file_the_marker_silences_only_its_own_string() {
    let token = github_token(&mut Rng::new(91));
    let other = blob(&[
        "comment: blastwall:allow this one",
        "padding string of the binary",
        &format!("GITHUB_TOKEN={token}"),
    ]);
    let same = blob(&[
        "padding string of the binary",
        &format!("GITHUB_TOKEN={token} # blastwall:allow"),
    ]);
    for chunks in [false, true] {
        let scanner = if chunks {
            scanner().with_options(small_chunks())
        } else {
            scanner()
        };
        let report = scanner.scan_bytes("tool.bin", &other);
        assert_eq!(counts(&report), (1, 0), "{:#?}", report.summary);
        let report = scanner.scan_bytes("tool.bin", &same);
        assert_eq!(counts(&report), (0, 1), "{:#?}", report.findings);
    }
}

#[test]
fn in_an_environment_value_the_marker_silences_only_its_own_line() {
    let token = github_token(&mut Rng::new(92));
    let vars = BTreeMap::from([(
        "CONFIG".to_owned(),
        format!("# blastwall:allow\nGITHUB_TOKEN={token}\n"),
    )]);
    assert_eq!(counts(&scanner().scan_env_vars(&vars)), (1, 0));
    let vars = BTreeMap::from([(
        "CONFIG".to_owned(),
        format!("debug=1\nGITHUB_TOKEN={token} # blastwall:allow\nport=1"),
    )]);
    assert_eq!(counts(&scanner().scan_env_vars(&vars)), (0, 1));
}

/// The same in another process: a line of an environment value, an argument of its command
/// line.
#[test]
fn in_a_process_the_marker_silences_only_its_own_line_or_argument() {
    let token = github_token(&mut Rng::new(93));
    let dir = tempfile::tempdir().unwrap();
    let process = |pid: &str, environ: String, cmdline: String| {
        let pid = dir.path().join(pid);
        fs::create_dir(&pid).unwrap();
        fs::write(pid.join("comm"), "agent\n").unwrap();
        fs::write(pid.join("environ"), environ).unwrap();
        fs::write(pid.join("cmdline"), cmdline).unwrap();
    };
    process(
        "5001",
        format!("CONFIG=# blastwall:allow\nGITHUB_TOKEN={token}\0"),
        format!("agent\0--note=blastwall:allow\0--token\0{token}\0"),
    );
    process(
        "5002",
        format!("CONFIG=a=1\nGITHUB_TOKEN={token} # blastwall:allow\nb=2\0"),
        format!("agent\0--note=x\0--token={token}#blastwall:allow\0--next\0"),
    );
    let report = scanner().scan_processes(dir.path());
    let places: Vec<String> = report
        .findings
        .iter()
        .map(|f| f.location.to_string())
        .collect();
    assert_eq!(
        places,
        [
            "process 5001 (agent) command line",
            "process 5001 (agent) environment variable CONFIG"
        ]
    );
    assert_eq!(report.summary.suppressed_inline, 2);
}
