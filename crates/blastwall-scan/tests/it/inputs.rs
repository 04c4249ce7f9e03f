//! Inputs other than files: environment variables passed as a map, other processes'
//! environments and command lines under `/proc`, and in-memory buffers.

use std::collections::BTreeMap;
use std::fs;
use std::process::{Command, Stdio};

use blastwall_core::{EnvName, Tier};
use blastwall_scan::{Location, Severity, WallFile};

use crate::support::{Rng, blastwall_token, github_token, scanner};

#[test]
fn environment_variables_are_scanned_by_name() {
    let mut rng = Rng::new(11);
    let prod_secret = "correct-horse-battery-staple-42";
    let wall = WallFile::build(
        &EnvName::new("production").unwrap(),
        Tier::Prod,
        [prod_secret.as_bytes()],
    )
    .unwrap();
    let mut vars = BTreeMap::new();
    vars.insert("GH_TOKEN".to_owned(), github_token(&mut rng));
    vars.insert("LEGACY".to_owned(), prod_secret.to_owned());
    vars.insert("BW".to_owned(), blastwall_token(&mut rng, "staging"));
    vars.insert("HOME".to_owned(), "/root".to_owned());
    let report = scanner().with_walls([wall]).scan_env_vars(&vars);
    let got: Vec<(String, String, Severity)> = report
        .findings
        .iter()
        .map(|f| match &f.location {
            Location::EnvVar { name } => (name.clone(), f.rule.clone(), f.severity),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "BW".to_owned(),
                "blastwall.credential".to_owned(),
                Severity::High
            ),
            (
                "GH_TOKEN".to_owned(),
                "github.pat-classic".to_owned(),
                Severity::High
            ),
            (
                "LEGACY".to_owned(),
                "wall.fingerprint".to_owned(),
                Severity::Critical
            ),
        ]
    );
    assert_eq!(report.summary.env_vars_scanned, 4);
}

#[test]
fn a_fake_proc_tree_is_scanned() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(12);
    let token = github_token(&mut rng);
    let pid = dir.path().join("4242");
    fs::create_dir(&pid).unwrap();
    fs::write(pid.join("comm"), "agent\n").unwrap();
    fs::write(
        pid.join("environ"),
        format!("PATH=/usr/bin\0GITHUB_TOKEN={token}\0"),
    )
    .unwrap();
    fs::write(
        pid.join("cmdline"),
        format!("git\0clone\0https://x:{token}@github.com/a/b\0"),
    )
    .unwrap();
    fs::create_dir(dir.path().join("self")).unwrap();
    let report = scanner().scan_processes(dir.path());
    let places: Vec<String> = report
        .findings
        .iter()
        .map(|f| f.location.to_string())
        .collect();
    assert_eq!(
        places,
        [
            "process 4242 (agent) command line",
            "process 4242 (agent) environment variable GITHUB_TOKEN"
        ]
    );
    assert_eq!(report.summary.processes_scanned, 1);
}

#[test]
fn a_real_child_process_environment_is_scanned() {
    let mut rng = Rng::new(13);
    let token = github_token(&mut rng);
    let mut child = Command::new("sleep")
        .arg("30")
        .env("LEAKED_TOKEN", &token)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let report = scanner().scan_processes(std::path::Path::new("/proc"));
    child.kill().unwrap();
    child.wait().unwrap();
    let found = report.findings.iter().any(|f| {
        matches!(&f.location, Location::Process { pid, var: Some(v), .. }
            if *pid == child.id() && v == "LEAKED_TOKEN")
    });
    assert!(found, "{:#?}", report.findings);
}

#[test]
fn bytes_are_scanned_like_a_file() {
    let mut rng = Rng::new(14);
    let text = format!("line one\nkey: {}\n", github_token(&mut rng));
    let report = scanner().scan_bytes("memory.txt", text.as_bytes());
    assert_eq!(report.findings.len(), 1);
    let Location::File { line, column, .. } = &report.findings[0].location else {
        panic!()
    };
    assert_eq!((*line, *column), (2, 6));
}

#[test]
fn files_read_one_after_another_on_one_thread_keep_their_own_bytes() {
    // One walker thread reuses its read buffer from file to file: a short file read after a
    // long one must not see the long one's tail (here, a secret past the short file's end).
    let mut rng = Rng::new(15);
    let dir = tempfile::tempdir().unwrap();
    let mut long = "x".repeat(200_000);
    long.push_str(&format!("\nkey: {}\n", github_token(&mut rng)));
    for (name, content) in [("a-long.txt", long.as_str()), ("b-short.txt", "short\n")] {
        fs::write(dir.path().join(name), content).unwrap();
    }
    for order in [["a-long.txt", "b-short.txt"], ["b-short.txt", "a-long.txt"]] {
        let paths: Vec<_> = order.iter().map(|n| dir.path().join(n)).collect();
        let options = blastwall_scan::ScanOptions {
            threads: 1,
            ..Default::default()
        };
        let report = scanner().with_options(options).scan_paths(&paths);
        let places: Vec<String> = report
            .findings
            .iter()
            .map(|f| match &f.location {
                Location::File { path, line, .. } => format!("{}:{line}", path.display()),
                other => format!("{other:?}"),
            })
            .collect();
        let expected = format!("{}:2", dir.path().join("a-long.txt").display());
        assert_eq!(places, [expected], "{order:?}");
    }
}

/// Binary files, several windows each, scanned one after another by one thread: the buffers the
/// printable runs are gathered in are reused from window to window, and each finding must still
/// point at its own file and offset, with nothing carried over from the window before.
#[test]
fn binary_windows_reuse_buffers_without_mixing_them() {
    let mut rng = Rng::new(23);
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    for i in 0..6 {
        let noise = |rng: &mut Rng, n: usize| -> Vec<u8> {
            rng.bytes(n)
                .into_iter()
                .map(|b| if b.is_ascii_graphic() { 0 } else { b })
                .collect()
        };
        // The earlier files are longer, so a later, shorter window reuses a longer buffer.
        let mut bin = noise(&mut rng, 20_000 - i * 3000);
        let token = github_token(&mut rng);
        let offset = bin.len() + 1;
        bin.push(0);
        bin.extend_from_slice(token.as_bytes());
        bin.push(0);
        bin.extend(noise(&mut rng, 500));
        let name = format!("tool{i}.bin");
        fs::write(dir.path().join(&name), bin).unwrap();
        expected.push((name, offset as u64));
    }
    let options = blastwall_scan::ScanOptions {
        threads: 1,
        ..crate::support::small_chunks()
    };
    let report = scanner()
        .with_options(options)
        .scan_paths(&[dir.path().to_owned()]);
    let mut got: Vec<(String, u64)> = report
        .findings
        .iter()
        .map(|f| match &f.location {
            Location::File { path, offset, .. } => (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                *offset,
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    got.sort();
    assert_eq!(got, expected);
}

/// A listed production secret that starts or ends with punctuation the candidate extraction
/// trims (`;` `,` `)` `(` …) is still fingerprinted: in an environment variable, a `/proc`
/// environment, a `.env` line, and a quoted string.
#[test]
fn a_listed_secret_with_punctuation_at_its_ends_is_fingerprinted() {
    let secrets = ["Xk9#mQ2$vL7&pR4;", "(vL7&pR4;Xk9#mQ2$", "two words, then;"];
    let wall = WallFile::build(
        &EnvName::new("production").unwrap(),
        Tier::Prod,
        secrets.iter().map(|s| s.as_bytes()),
    )
    .unwrap();
    let scanner = scanner().with_walls([wall]);
    let one_critical = |report: &blastwall_scan::Report, what: &str| {
        assert_eq!(report.findings.len(), 1, "{what}: {:#?}", report.findings);
        let f = &report.findings[0];
        assert_eq!(f.severity, Severity::Critical, "{what}");
        assert_eq!(
            f.confidence,
            blastwall_scan::Confidence::Fingerprint,
            "{what}"
        );
        assert_eq!(f.wall_env.as_deref(), Some("production"), "{what}");
    };
    for secret in secrets {
        let vars = BTreeMap::from([("DB_PASSWORD".to_owned(), secret.to_owned())]);
        one_critical(&scanner.scan_env_vars(&vars), &format!("env var {secret}"));

        let dir = tempfile::tempdir().unwrap();
        let pid = dir.path().join("77");
        fs::create_dir(&pid).unwrap();
        fs::write(pid.join("comm"), "app\n").unwrap();
        fs::write(
            pid.join("environ"),
            format!("HOME=/\0DB_PASSWORD={secret}\0"),
        )
        .unwrap();
        fs::write(pid.join("cmdline"), "app\0").unwrap();
        one_critical(
            &scanner.scan_processes(dir.path()),
            &format!("/proc environ {secret}"),
        );

        for line in [
            format!("DB_PASSWORD={secret}\n"),
            format!("DB_PASSWORD=\"{secret}\"\n"),
            format!("db_password = \"{secret}\";\n"),
            format!("call(\"{secret}\")\n"),
        ] {
            let text = format!("# settings\n{line}");
            one_critical(&scanner.scan_bytes(".env", text.as_bytes()), &line);
        }
    }
}

/// Tar members that hold a file's data under another type than regular are scanned: GNU sparse
/// (`S`, what `tar -S` writes for a file with holes) and contiguous (`7`). A member of another
/// type that carries data is listed, not skipped silently.
#[test]
fn sparse_and_contiguous_tar_members_are_scanned() {
    let mut rng = Rng::new(51);
    let dir = tempfile::tempdir().unwrap();
    let token = github_token(&mut rng);
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let sparse = src.join("disk.img");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::File::create(&sparse).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        writeln!(f, "GITHUB_TOKEN={token}").unwrap();
        f.set_len(2 << 20).unwrap();
    }
    let out = dir.path().join("sparse.tar");
    let status = Command::new("tar")
        .arg("-cSf")
        .arg(&out)
        .arg("-C")
        .arg(&src)
        .arg("disk.img")
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = fs::read(&out).unwrap();
    assert_eq!(bytes[156], b'S', "tar -S wrote a GNU sparse member");
    let report = scanner().scan_bytes("sparse.tar", &bytes);
    let rules: Vec<&str> = report.findings.iter().map(|f| f.rule.as_str()).collect();
    assert_eq!(rules, ["github.pat-classic"], "{:#?}", report.summary);

    let content = format!("GITHUB_TOKEN={token}\n");
    let mut builder = tar::Builder::new(Vec::new());
    for (name, kind) in [
        ("contiguous.env", tar::EntryType::Continuous),
        ("vendor.bin", tar::EntryType::new(b'X')),
    ] {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, name, content.as_bytes())
            .unwrap();
    }
    let bytes = builder.into_inner().unwrap();
    let report = scanner().scan_bytes("kinds.tar", &bytes);
    let places: Vec<String> = report
        .findings
        .iter()
        .map(|f| f.location.group_key())
        .collect();
    assert_eq!(places, ["kinds.tar!contiguous.env"]);
    let skipped: Vec<&str> = report
        .summary
        .skipped
        .iter()
        .map(|s| s.path.as_str())
        .collect();
    assert_eq!(skipped, ["kinds.tar!vendor.bin"]);
    assert!(!report.summary.is_complete());
}

/// An environ entry without `=` is never printed (it may be a secret passed that way); an
/// environ or command line over the read bound, and a UTF-16 archive member over the file size
/// bound, are listed as cut rather than silently truncated.
#[test]
fn proc_entries_without_a_name_are_not_printed_and_cuts_are_listed() {
    let mut rng = Rng::new(61);
    let token = github_token(&mut rng);
    let dir = tempfile::tempdir().unwrap();
    let pid = dir.path().join("4343");
    fs::create_dir(&pid).unwrap();
    fs::write(pid.join("comm"), "agent\n").unwrap();
    let mut environ = format!("PATH=/usr/bin\0{token}\0").into_bytes();
    environ.extend(std::iter::repeat_n(b'a', 5 << 20));
    fs::write(pid.join("environ"), environ).unwrap();
    fs::write(pid.join("cmdline"), "agent\0").unwrap();
    let report = scanner().scan_processes(dir.path());
    let places: Vec<String> = report
        .findings
        .iter()
        .map(|f| f.location.to_string())
        .collect();
    assert_eq!(
        places,
        ["process 4343 (agent) environment variable <entry 2 without '='>"]
    );
    assert!(!format!("{report:?}").contains(&token[4..16]));
    let skipped: Vec<(String, String)> = report
        .summary
        .skipped
        .iter()
        .map(|s| (s.path.clone(), s.reason.to_string()))
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].0.ends_with("4343/environ"), "{skipped:?}");
    assert!(!report.summary.is_complete());

    // A UTF-16 member longer than the file size bound.
    let text: Vec<u8> = format!("GITHUB_TOKEN={token}\n{}", "z".repeat(40_000))
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "notes.txt", &text[..])
        .unwrap();
    let bytes = builder.into_inner().unwrap();
    let options = blastwall_scan::ScanOptions {
        max_file_size: 64 << 10,
        ..Default::default()
    };
    let report = scanner()
        .with_options(options)
        .scan_bytes("utf16.tar", &bytes);
    assert_eq!(report.findings.len(), 1);
    let skipped: Vec<&str> = report
        .summary
        .skipped
        .iter()
        .map(|s| s.path.as_str())
        .collect();
    assert_eq!(skipped, ["utf16.tar!notes.txt"]);
}

/// A symbolic link named as a root is followed: that is what the user asked to scan. Its
/// findings are at the link's path.
#[test]
fn a_link_named_as_a_root_is_followed() {
    let mut rng = Rng::new(71);
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("real.env"),
        format!("GITHUB_TOKEN={}\n", github_token(&mut rng)),
    )
    .unwrap();
    let link = dir.path().join("current.env");
    std::os::unix::fs::symlink("real.env", &link).unwrap();
    let report = scanner().scan_paths(std::slice::from_ref(&link));
    let places: Vec<String> = report
        .findings
        .iter()
        .map(|f| f.location.group_key())
        .collect();
    assert_eq!(
        places,
        [link.display().to_string()],
        "{:#?}",
        report.summary
    );
    assert!(report.summary.is_complete(), "{:#?}", report.summary);
}
