//! `blastwall scan` and `blastwall wall export` through the real binary.

use crate::support::{Bw, contains, stderr, stdout};

const PROD_SECRET: &str = "Zq8vN3kLp0Xw7RtY2mBc5HsJ9dFg4aUe";

#[test]
fn a_production_secret_with_no_known_format_is_found_by_fingerprint() {
    let bw = Bw::new();
    bw.ok(&["init"]);
    let o = bw.run_stdin(
        &[
            "upstream",
            "add",
            "railway",
            "--profile",
            "railway",
            "--base-url",
            "https://backboard.railway.com",
            "--env",
            "production",
            "--secret-stdin",
        ],
        PROD_SECRET,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let (_, prod_token) = {
        let t = bw.json(&[
            "token",
            "issue",
            "--env",
            "production",
            "--owner",
            "o@x.io",
            "--holder",
            "ci",
            "--scope",
            "railway:domain.read",
            "--ttl",
            "30m",
        ]);
        ((), t["token"].as_str().unwrap().to_owned())
    };
    let wall = bw.path().join("production.wall");
    let out = bw.json(&[
        "wall",
        "export",
        "--env",
        "production",
        "-o",
        wall.to_str().unwrap(),
    ]);
    assert_eq!(out["credentials"], 1);
    assert_eq!(out["tokens"], 1);
    let wall_bytes = std::fs::read(&wall).unwrap();
    assert!(
        !contains(&wall_bytes, PROD_SECRET.as_bytes()),
        "the wall file holds a secret"
    );
    assert!(!contains(&wall_bytes, prod_token.as_bytes()));

    // A staging host where the production credential leaked into an unrelated file.
    let host = bw.path().join("staging-host");
    std::fs::create_dir_all(host.join("app/scripts")).unwrap();
    std::fs::write(host.join("app/README.md"), "nothing to see\n").unwrap();
    std::fs::write(
        host.join("app/scripts/.env.old"),
        format!("DEPLOY_KEY={PROD_SECRET}\n"),
    )
    .unwrap();
    let o = bw.run(&[
        "scan",
        "--wall",
        wall.to_str().unwrap(),
        "--format",
        "json",
        host.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(text.contains(".env.old"), "{text}");
    assert!(text.contains("critical"), "{text}");
    assert!(!text.contains(PROD_SECRET), "the report printed the secret");
    assert!(!contains(&o.stderr, PROD_SECRET.as_bytes()));

    // The same host, clean.
    std::fs::remove_file(host.join("app/scripts/.env.old")).unwrap();
    let o = bw.run(&[
        "scan",
        "--wall",
        wall.to_str().unwrap(),
        host.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn known_formats_fail_the_scan_and_sarif_is_written() {
    let bw = Bw::new();
    let dir = bw.path().join("repo");
    std::fs::create_dir(&dir).unwrap();
    // A GitHub classic token with a valid checksum, made up for the test.
    std::fs::write(
        dir.join("deploy.sh"),
        "export GITHUB_TOKEN=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\n",
    )
    .unwrap();
    let o = bw.run(&["scan", "--format", "sarif", dir.to_str().unwrap()]);
    let sarif: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{sarif}");
    assert!(!contains(
        &o.stdout,
        b"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"
    ));
    // A GitHub token is high, not critical: --fail-on critical passes, --fail-on high fails.
    let o = bw.run(&["scan", dir.to_str().unwrap(), "--fail-on", "critical"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = bw.run(&["scan", dir.to_str().unwrap(), "--fail-on", "high"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    // Accepted through a baseline.
    let base = bw.path().join("baseline.json");
    let _ = bw.run(&[
        "scan",
        dir.to_str().unwrap(),
        "--write-baseline",
        base.to_str().unwrap(),
    ]);
    let o = bw.run(&[
        "scan",
        dir.to_str().unwrap(),
        "--baseline",
        base.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn wall_export_needs_the_environment_key() {
    let bw = Bw::new();
    bw.ok(&["init"]);
    std::fs::rename(
        bw.data().join("keys/production.key"),
        bw.path().join("away.key"),
    )
    .unwrap();
    let wall = bw.path().join("p.wall");
    let o = bw.run(&[
        "wall",
        "export",
        "--env",
        "production",
        "-o",
        wall.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("sealed"), "{}", stderr(&o));
    assert!(!wall.exists());
}

#[test]
fn scan_refuses_a_bad_wall_file() {
    let bw = Bw::new();
    std::fs::write(bw.path().join("bad.wall"), "not a wall file").unwrap();
    let o = bw.run(&["scan", "--wall", "bad.wall", "."]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("bad.wall"));
}

/// A tree with one finding (a GitHub token with a valid checksum, made up for the test).
fn tree_with_a_finding(bw: &Bw) -> std::path::PathBuf {
    let dir = bw.path().join("repo");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("deploy.sh"),
        "export GITHUB_TOKEN=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\n",
    )
    .unwrap();
    dir
}

#[test]
fn a_scan_off_a_terminal_draws_no_progress() {
    let bw = Bw::new();
    tree_with_a_finding(&bw);
    for format in ["human", "json", "sarif"] {
        let o = bw.run(&["scan", "--format", format, "repo"]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        insta::assert_snapshot!(format!("scan_stderr_not_a_tty_{format}"), stderr(&o));
    }
}

/// The binary as a shell word, for `script`.
fn bin() -> String {
    let bin = std::env::var_os("BLASTWALL_TEST_BIN")
        .map_or_else(|| assert_cmd::cargo::cargo_bin("blastwall"), Into::into);
    format!("'{}'", bin.display())
}

/// Runs `command` under `script` (util-linux), which gives it a pseudo-terminal for stdin,
/// stdout and stderr; what the terminal showed. `None` when `script` is not installed.
fn on_a_terminal(bw: &Bw, command: &str) -> Option<String> {
    let o = std::process::Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TERM", "xterm")
        .current_dir(bw.path())
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&o.stdout).into_owned())
}

#[test]
fn a_scan_on_a_terminal_shows_progress_unless_quiet_or_piped() {
    let bw = Bw::new();
    tree_with_a_finding(&bw);
    let Some(shown) = on_a_terminal(&bw, &format!("{} scan repo", bin())) else {
        eprintln!("skipped: `script` (util-linux) is not installed");
        return;
    };
    assert!(shown.contains("scanning: "), "{shown:?}");
    assert!(shown.contains(" files, "), "{shown:?}");
    // The report is still printed, after the progress line is cleared.
    assert!(shown.contains("github.pat-classic"), "{shown:?}");
    let quiet = on_a_terminal(&bw, &format!("{} -q scan repo", bin())).unwrap();
    assert!(!quiet.contains("scanning: "), "{quiet:?}");
    assert!(quiet.contains("github.pat-classic"), "{quiet:?}");
    let piped = on_a_terminal(
        &bw,
        &format!("{} scan --format json repo > out.json", bin()),
    )
    .unwrap();
    assert!(!piped.contains("scanning: "), "{piped:?}");
    let json = std::fs::read_to_string(bw.path().join("out.json")).unwrap();
    assert!(json.contains("github.pat-classic"), "{json}");
    assert!(!json.contains("scanning: "), "{json}");
}

/// A baseline written without a wall file does not silence a production secret that a wall
/// file finds later in the same place: the scan still exits 3.
#[test]
fn a_baseline_without_walls_does_not_silence_a_production_secret() {
    let bw = Bw::new();
    let dir = bw.path().join("repo");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join(".env"), format!("DB_PASSWORD={PROD_SECRET}\n")).unwrap();
    let base = bw.path().join("baseline.json");
    let o = bw.run(&[
        "scan",
        dir.to_str().unwrap(),
        "--write-baseline",
        base.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let o = bw.run(&[
        "scan",
        dir.to_str().unwrap(),
        "--baseline",
        base.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));

    let wall = bw.path().join("production.wall");
    blastwall_scan::WallFile::build(
        &blastwall_core::EnvName::new("production").unwrap(),
        blastwall_core::Tier::Prod,
        [PROD_SECRET.as_bytes()],
    )
    .unwrap()
    .save(&wall)
    .unwrap();
    let o = bw.run(&[
        "scan",
        dir.to_str().unwrap(),
        "--wall",
        wall.to_str().unwrap(),
        "--baseline",
        base.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("\"severity\":\"critical\""),
        "{}",
        stdout(&o)
    );
}

/// A link out of the scanned tree is read through: its findings are at `link -> target`, and a
/// link out to a folder is listed as not scanned, so the scan is not complete.
#[test]
fn a_link_out_of_the_tree_is_scanned_through_or_listed() {
    let bw = Bw::new();
    let shared = bw.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(
        shared.join(".env"),
        "GITHUB_TOKEN=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\n",
    )
    .unwrap();
    let repo = bw.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    std::os::unix::fs::symlink("../shared/.env", repo.join(".env")).unwrap();
    let o = bw.run(&["scan", "--format", "json", "repo"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let target = std::fs::canonicalize(shared.join(".env")).unwrap();
    assert_eq!(lines.len(), 2, "{}", stdout(&o));
    assert_eq!(
        lines[0]["location"]["path"],
        format!("repo/.env -> {}", target.display()),
        "{}",
        stdout(&o)
    );
    assert_eq!(lines[1]["complete"], true, "{}", stdout(&o));

    std::os::unix::fs::symlink("../shared", repo.join("conf")).unwrap();
    let o = bw.run(&["scan", "--format", "json", "repo"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("\"reason\":\"symlink_outside\""), "{text}");
    assert!(text.contains("\"complete\":false"), "{text}");
}
