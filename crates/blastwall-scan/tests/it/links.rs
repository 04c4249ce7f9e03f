//! Symbolic links met in a walk (links are not followed by default): a link whose target lies
//! inside a scanned root is listed, its target scanned where it lies; one whose target lies
//! outside every root is scanned through (a regular file, once however many links reach it) or
//! listed as content not scanned.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use blastwall_scan::{Report, ScanOptions, SkipReason};

use crate::support::{Rng, github_token, scanner};

fn scan(root: &Path) -> Report {
    let options = ScanOptions {
        threads: 2,
        ..ScanOptions::default()
    };
    scanner()
        .with_options(options)
        .scan_paths(&[root.to_owned()])
}

fn places(report: &Report) -> Vec<String> {
    report
        .findings
        .iter()
        .map(|f| f.location.group_key())
        .collect()
}

/// `(path, reason)` of every entry skipped or unreadable.
fn listed(report: &Report) -> Vec<(String, SkipReason)> {
    let mut out: Vec<(String, SkipReason)> = report
        .summary
        .skipped
        .iter()
        .chain(&report.summary.unreadable)
        .map(|s| (s.path.clone(), s.reason.clone()))
        .collect();
    out.sort();
    out
}

/// A tree `root/` beside a folder `outside/` holding `shared.env` (a token); both returned.
fn tree(seed: u64) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    fs::create_dir_all(root.join("app")).unwrap();
    fs::create_dir(&outside).unwrap();
    let mut rng = Rng::new(seed);
    fs::write(
        outside.join("shared.env"),
        format!("GITHUB_TOKEN={}\n", github_token(&mut rng)),
    )
    .unwrap();
    let outside = fs::canonicalize(&outside).unwrap();
    (dir, root, outside)
}

/// `link -> target`, the place of what is read through a link.
fn through(link: &Path, target: &Path) -> String {
    format!("{} -> {}", link.display(), target.display())
}

#[test]
fn a_link_to_a_file_outside_every_root_is_scanned_at_the_link() {
    let (_dir, root, outside) = tree(81);
    let link = root.join("app/.env");
    symlink("../../outside/shared.env", &link).unwrap();
    let report = scan(&root);
    assert_eq!(
        places(&report),
        [through(&link, &outside.join("shared.env"))],
        "{:#?}",
        report.summary
    );
    assert_eq!(report.summary.files_scanned, 1);
    assert!(report.summary.is_complete(), "{:#?}", report.summary);
}

#[test]
fn a_link_to_a_file_inside_a_root_is_listed_and_its_target_scanned_where_it_lies() {
    let (_dir, root, _outside) = tree(82);
    let mut rng = Rng::new(83);
    fs::write(
        root.join("real.env"),
        format!("GITHUB_TOKEN={}\n", github_token(&mut rng)),
    )
    .unwrap();
    symlink("../real.env", root.join("app/.env")).unwrap();
    let report = scan(&root);
    assert_eq!(
        places(&report),
        [root.join("real.env").display().to_string()]
    );
    assert_eq!(
        listed(&report),
        [(
            root.join("app/.env").display().to_string(),
            SkipReason::Symlink
        )]
    );
    assert!(report.summary.is_complete(), "{:#?}", report.summary);
}

/// Two links to one outside file: it is read once, at the first link's path (in path order, so
/// the same on every run); the other link is listed.
#[test]
fn two_links_to_one_outside_file_scan_it_once() {
    let (_dir, root, outside) = tree(84);
    let target = outside.join("shared.env");
    symlink(&target, root.join("app/.env")).unwrap();
    symlink("../outside/shared.env", root.join("b.env")).unwrap();
    for _ in 0..3 {
        let report = scan(&root);
        assert_eq!(
            places(&report),
            [through(&root.join("app/.env"), &target)],
            "{:#?}",
            report.summary
        );
        assert_eq!(report.summary.files_scanned, 1);
        assert_eq!(
            listed(&report),
            [(through(&root.join("b.env"), &target), SkipReason::Symlink)]
        );
        assert!(report.summary.is_complete(), "{:#?}", report.summary);
    }
}

/// An outside target that cannot be read as a file is listed as content not scanned: a
/// directory, a named pipe, a missing file, a loop.
#[test]
fn a_link_to_what_cannot_be_scanned_outside_is_listed_as_not_scanned() {
    type Make = dyn Fn(&Path) -> PathBuf;
    let cases: [(&str, &Make); 4] = [
        ("dir", &|out| out.to_owned()),
        ("pipe", &|out| {
            let pipe = out.join("pipe");
            let status = Command::new("mkfifo").arg(&pipe).status().unwrap();
            assert!(status.success());
            pipe
        }),
        ("missing", &|out| out.join("missing.env")),
        ("loop", &|out| {
            symlink("l2", out.join("l1")).unwrap();
            symlink("l1", out.join("l2")).unwrap();
            out.join("l1")
        }),
    ];
    for (name, make) in cases {
        let (_dir, root, outside) = tree(85);
        let target = make(&outside);
        let link = root.join(name);
        symlink(&target, &link).unwrap();
        let report = scan(&root);
        assert!(report.findings.is_empty(), "{name}: {:#?}", report.findings);
        let got = listed(&report);
        assert_eq!(got.len(), 1, "{name}: {got:?}");
        assert_eq!(got[0].0, through(&link, &target), "{name}: {got:?}");
        assert!(got[0].1.loses_content(), "{name}: {got:?}");
        assert!(!report.summary.is_complete(), "{name}: {got:?}");
        let outside = |kind: &str| SkipReason::SymlinkOutside {
            kind: kind.to_owned(),
        };
        match name {
            "dir" => assert_eq!(got[0].1, outside("directory")),
            "pipe" => assert_eq!(got[0].1, outside("named pipe")),
            "loop" => assert_eq!(got[0].1, SkipReason::SymlinkLoop),
            _ => assert!(matches!(got[0].1, SkipReason::Io { .. }), "{got:?}"),
        }
    }
}

/// A link inside a root that no longer resolves into it (a loop of links inside the tree, a
/// missing file beside it) is listed as before: there is nothing outside it to read.
#[test]
fn an_unresolvable_link_inside_a_root_is_listed_as_a_link() {
    let (_dir, root, _outside) = tree(86);
    symlink("self", root.join("self")).unwrap();
    symlink("gone.env", root.join("app/.env")).unwrap();
    let report = scan(&root);
    assert_eq!(
        listed(&report),
        [
            (
                root.join("app/.env").display().to_string(),
                SkipReason::Symlink
            ),
            (root.join("self").display().to_string(), SkipReason::Symlink),
        ]
    );
    assert!(report.summary.is_complete(), "{:#?}", report.summary);
}
