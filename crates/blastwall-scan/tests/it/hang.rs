//! The cases that hang or mislead naive scanners: symlink loops, FIFOs, sockets, a huge sparse
//! file, an unreadable directory, a path that does not exist. Each scan must finish, and its
//! summary must say what it did not read.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use blastwall_scan::{Report, ScanOptions, SkipReason};

use crate::support::scanner;

/// Runs the scan on another thread and fails the test if it takes more than a minute.
fn scan_with_deadline(paths: Vec<PathBuf>, options: ScanOptions) -> Report {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let report = scanner().with_options(options).scan_paths(&paths);
        let _ = tx.send(report);
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the scan hung")
}

fn reasons(report: &Report) -> Vec<(String, SkipReason)> {
    report
        .summary
        .skipped
        .iter()
        .chain(&report.summary.unreadable)
        .map(|s| {
            let name = PathBuf::from(&s.path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, s.reason.clone())
        })
        .collect()
}

#[test]
fn special_files_and_loops_are_listed_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir(root.join("a")).unwrap();
    std::os::unix::fs::symlink("..", root.join("a/up")).unwrap();
    std::os::unix::fs::symlink("self", root.join("self")).unwrap();
    let status = Command::new("mkfifo")
        .arg(root.join("pipe"))
        .status()
        .unwrap();
    assert!(status.success());
    let _listener = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    let sparse = fs::File::create(root.join("sparse.img")).unwrap();
    sparse.set_len(1 << 30).unwrap();
    fs::write(root.join("a/ok.txt"), "nothing here\n").unwrap();

    let report = scan_with_deadline(vec![root.to_owned()], ScanOptions::default());
    let mut got = reasons(&report);
    got.sort();
    let mut want = vec![
        ("pipe".to_owned(), SkipReason::Fifo),
        ("self".to_owned(), SkipReason::Symlink),
        ("sock".to_owned(), SkipReason::Socket),
        (
            "sparse.img".to_owned(),
            SkipReason::TooLarge {
                size: 1 << 30,
                limit: 256 << 20,
            },
        ),
        ("up".to_owned(), SkipReason::Symlink),
    ];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(report.summary.files_scanned, 1);
    assert!(
        !report.summary.is_complete(),
        "a skipped large file loses content"
    );

    // Following links: the loop is detected and listed, not walked forever.
    let follow = ScanOptions {
        follow_symlinks: true,
        ..ScanOptions::default()
    };
    let report = scan_with_deadline(vec![root.to_owned()], follow);
    let got = reasons(&report);
    assert!(
        got.iter().any(|(_, r)| *r == SkipReason::SymlinkLoop),
        "{got:?}"
    );
    assert!(
        got.contains(&("pipe".to_owned(), SkipReason::Fifo)),
        "{got:?}"
    );
}

#[test]
fn a_sparse_gigabyte_within_the_bound_is_read_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.img");
    let f = fs::File::create(&path).unwrap();
    f.set_len(64 << 20).unwrap();
    let report = scan_with_deadline(vec![path], ScanOptions::default());
    assert_eq!(report.summary.files_scanned, 1);
    assert_eq!(report.summary.bytes_scanned, 64 << 20);
    assert!(report.findings.is_empty());
}

#[test]
fn unreadable_and_missing_paths_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let locked = root.join("locked");
    fs::create_dir(&locked).unwrap();
    fs::write(locked.join("inside.txt"), "nothing\n").unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    let missing = root.join("does-not-exist");

    let report = scan_with_deadline(vec![root.to_owned(), missing], ScanOptions::default());
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
    let unreadable: Vec<&str> = report
        .summary
        .unreadable
        .iter()
        .map(|s| s.path.as_str())
        .collect();
    assert!(
        unreadable.iter().any(|p| p.ends_with("does-not-exist")),
        "{unreadable:?}"
    );
    // Root (and CAP_DAC_OVERRIDE) reads a mode-000 directory anyway: then the file inside is
    // scanned; otherwise the directory is listed as unreadable. Either way nothing is silent.
    let root_can_read = fs::read_dir(&locked).is_ok();
    if root_can_read {
        assert_eq!(report.summary.files_scanned, 1);
    } else {
        assert!(
            unreadable.iter().any(|p| p.ends_with("locked")),
            "{unreadable:?}"
        );
    }
    assert!(!report.summary.is_complete());
}

#[test]
fn an_archive_bomb_stops_at_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.gz");
    let file = fs::File::create(&path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        std::io::Write::write_all(&mut gz, &zeros).unwrap();
    }
    gz.finish().unwrap();
    let report = scan_with_deadline(vec![path], ScanOptions::default());
    let got = reasons(&report);
    assert!(
        got.iter()
            .any(|(n, r)| n == "bomb.gz" && matches!(r, SkipReason::ArchiveExpansion { .. })),
        "{got:?}"
    );
}

/// What was read before an archive's expansion bound is scanned, not dropped: a token at the
/// start of a small gzip that expands past its bound is found, and the bound is listed.
#[test]
fn what_precedes_the_expansion_bound_is_scanned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.gz");
    let token = crate::support::github_token(&mut crate::support::Rng::new(41));
    let file = fs::File::create(&path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::best());
    std::io::Write::write_all(&mut gz, format!("GITHUB_TOKEN={token}\n").as_bytes()).unwrap();
    std::io::Write::write_all(&mut gz, &vec![b'a'; 4 << 20]).unwrap();
    gz.finish().unwrap();
    for options in [ScanOptions::default(), crate::support::small_chunks()] {
        let report = scan_with_deadline(vec![path.clone()], options);
        let rules: Vec<&str> = report.findings.iter().map(|f| f.rule.as_str()).collect();
        assert_eq!(rules, ["github.pat-classic"]);
        let got = reasons(&report);
        assert!(
            got.iter()
                .any(|(n, r)| n == "config.gz" && matches!(r, SkipReason::ArchiveExpansion { .. })),
            "{got:?}"
        );
    }
}

/// Reads are bounded by the per-file size bound, not by the size `fstat` reports: a procfs file
/// that says it is empty (`/proc/self/pagemap`, 256 GiB when read) stops at the bound and is
/// listed. A procfs directory is not walked.
#[test]
fn a_file_larger_than_its_stated_size_stops_at_the_bound() {
    let options = ScanOptions {
        max_file_size: 1 << 20,
        ..ScanOptions::default()
    };
    let report = scan_with_deadline(vec![PathBuf::from("/proc/self/pagemap")], options);
    assert_eq!(
        reasons(&report),
        [(
            "pagemap".to_owned(),
            SkipReason::TooLarge {
                size: (1 << 20) + 1,
                limit: 1 << 20
            }
        )]
    );
    assert!(!report.summary.is_complete());

    let report = scan_with_deadline(vec![PathBuf::from("/proc/self")], ScanOptions::default());
    assert_eq!(
        reasons(&report),
        [(
            "self".to_owned(),
            SkipReason::PseudoFileSystem {
                kind: "proc".to_owned()
            }
        )]
    );
    assert_eq!(report.summary.files_scanned, 0);
}
