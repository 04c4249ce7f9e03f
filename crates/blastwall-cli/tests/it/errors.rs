//! Refusals and errors: one clear line, a hint, the right exit code, never a secret.

use crate::support::{Bw, add_api_upstream, contains, stderr, stdout};

/// Runs a failing command and returns "exit N\n<stderr>" with the temp path masked.
fn failure(bw: &Bw, args: &[&str], stdin: Option<&str>) -> String {
    let o = match stdin {
        Some(s) => bw.run_stdin(args, s),
        None => bw.run(args),
    };
    assert!(!o.status.success(), "blastwall {args:?} succeeded");
    let err = stderr(&o)
        .replace(&bw.path().display().to_string(), "[TMP]")
        .lines()
        // Debug logs are on in tests; keep only what a user reads.
        .filter(|l| l.starts_with("error:") || l.starts_with("hint:") || l.starts_with("  "))
        .collect::<Vec<_>>()
        .join("\n");
    format!("exit {}\n{err}", o.status.code().unwrap_or(-1))
}

fn issue<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["token", "issue"];
    v.extend_from_slice(extra);
    v
}

#[test]
fn refusals() {
    let bw = Bw::new();
    insta::assert_snapshot!("no_config", failure(&bw, &["env", "list"], None));
    bw.ok(&["init"]);
    insta::assert_snapshot!("init_twice", failure(&bw, &["init"], None));
    let base = ["--env", "staging", "--owner", "o@x.io", "--holder", "agent"];
    insta::assert_snapshot!(
        "ttl_over_max",
        failure(
            &bw,
            &issue(&[&base[..], &["--scope", "railway:*", "--ttl", "9h"]].concat()),
            None
        )
    );
    insta::assert_snapshot!("no_scope", failure(&bw, &issue(&base), None));
    insta::assert_snapshot!(
        "scope_matches_nothing",
        failure(
            &bw,
            &issue(&[&base[..], &["--scope", "railway:nosuch.*"]].concat()),
            None
        )
    );
    insta::assert_snapshot!(
        "scope_of_explicit_operations_only",
        failure(
            &bw,
            &issue(&[&base[..], &["--scope", "railway:bucket_credentials.*"]].concat()),
            None
        )
    );
    insta::assert_snapshot!(
        "scope_names_no_profile",
        failure(
            &bw,
            &issue(&[&base[..], &["--scope", "echo:*"]].concat()),
            None
        )
    );
    insta::assert_snapshot!(
        "bad_scope",
        failure(
            &bw,
            &issue(&[&base[..], &["--scope", "railway"]].concat()),
            None
        )
    );
    insta::assert_snapshot!(
        "unknown_env",
        failure(
            &bw,
            &issue(&[
                "--env",
                "prod",
                "--owner",
                "o@x.io",
                "--holder",
                "a",
                "--scope",
                "railway:*"
            ]),
            None
        )
    );
    insta::assert_snapshot!(
        "no_owner",
        failure(
            &bw,
            &issue(&["--env", "staging", "--holder", "a", "--scope", "railway:*"]),
            None
        )
    );
    insta::assert_snapshot!(
        "bad_duration",
        failure(
            &bw,
            &issue(&[&base[..], &["--scope", "railway:*", "--ttl", "soon"]].concat()),
            None
        )
    );
    insta::assert_snapshot!(
        "unknown_profile",
        failure(
            &bw,
            &[
                "upstream",
                "add",
                "x",
                "--profile",
                "nosuch",
                "--base-url",
                "https://x.io"
            ],
            None
        )
    );
    insta::assert_snapshot!(
        "url_with_credentials",
        failure(
            &bw,
            &[
                "upstream",
                "add",
                "x",
                "--profile",
                "rest",
                "--base-url",
                "https://u:p@x.io"
            ],
            None
        )
    );
    insta::assert_snapshot!(
        "empty_secret",
        failure(
            &bw,
            &[
                "upstream",
                "add",
                "x",
                "--profile",
                "rest",
                "--base-url",
                "https://x.io",
                "--env",
                "staging",
                "--secret-stdin",
            ],
            Some("\n")
        )
    );
    insta::assert_snapshot!(
        "unknown_token",
        failure(&bw, &["token", "show", "tok_0000"], None)
    );
    insta::assert_snapshot!(
        "bad_env_name",
        failure(&bw, &["env", "add", "Bad_Name", "--tier", "prod"], None)
    );
    insta::assert_snapshot!(
        "bad_tier",
        failure(&bw, &["env", "add", "qa", "--tier", "live"], None)
    );
}

#[test]
fn nothing_half_done_after_a_refusal() {
    let bw = Bw::new();
    bw.ok(&["init"]);
    let before = bw.json(&["log", "tail"]).as_array().unwrap().len();
    let _ = bw.run(&[
        "upstream",
        "add",
        "x",
        "--profile",
        "nosuch",
        "--base-url",
        "https://x.io",
    ]);
    let _ = bw.run(&[
        "token",
        "issue",
        "--env",
        "staging",
        "--owner",
        "o",
        "--holder",
        "a",
        "--scope",
        "railway:*",
        "--ttl",
        "9h",
    ]);
    let _ = bw.run_stdin(
        &[
            "upstream",
            "add",
            "x",
            "--profile",
            "rest",
            "--base-url",
            "https://x.io",
            "--env",
            "nope",
            "--secret-stdin",
        ],
        "secret",
    );
    assert_eq!(bw.json(&["log", "tail"]).as_array().unwrap().len(), before);
    assert!(
        bw.json(&["upstream", "list"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(bw.json(&["token", "list"]).as_array().unwrap().is_empty());
}

#[test]
fn a_pasted_token_is_not_echoed() {
    let bw = Bw::new();
    bw.ok(&["init"]);
    let t = bw.json(&[
        "token",
        "issue",
        "--env",
        "staging",
        "--owner",
        "o@x.io",
        "--holder",
        "a",
        "--scope",
        "railway:*",
    ]);
    let token = t["token"].as_str().unwrap();
    // The token itself names it (e.g. one found leaked in a file), and is never echoed.
    let o = bw.run(&["token", "show", token, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!contains(&o.stderr, token.as_bytes()));
    assert!(!contains(&o.stdout, token.as_bytes()));
    assert!(contains(&o.stdout, t["id"].as_str().unwrap().as_bytes()));
    // A damaged one is refused, and not echoed either.
    let damaged = &token[..token.len() - 1];
    let o = bw.run(&["token", "show", damaged]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!contains(&o.stderr, damaged.as_bytes()));
    assert!(!contains(&o.stdout, damaged.as_bytes()));
    // A leaked token can be revoked with what was found.
    let o = bw.run(&["token", "revoke", token]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!contains(&o.stderr, token.as_bytes()));
    assert!(!contains(&o.stdout, token.as_bytes()));
    let shown = bw.json(&["token", "show", t["id"].as_str().unwrap()]);
    assert_eq!(shown["state"], "revoked", "{shown}");
}

/// A damaged token is not echoed however it was pasted: after a `Bearer ` or a space, with a
/// typo in it; an argument that is not shaped like a token id is not echoed either (it may be
/// some other secret). A whole token after `Bearer ` is found.
#[test]
fn a_damaged_token_is_not_echoed_however_it_was_pasted() {
    let bw = Bw::new();
    bw.ok(&["init"]);
    let (token, id) = crate::gateway::issue(&bw, "staging", "railway:*", "1h");
    let (token, id) = (token.as_str(), id.as_str());
    // bwt_staging_<random>_<checksum>
    let random = token
        .strip_prefix("bwt_staging_")
        .unwrap()
        .rsplit_once('_')
        .unwrap()
        .0;
    // A typo in the middle of the random part: the checksum no longer matches.
    let mut typo = token.as_bytes().to_vec();
    let at = "bwt_staging_".len() + random.len() / 2;
    typo[at] = if typo[at] == b'x' { b'y' } else { b'x' };
    let typo = String::from_utf8(typo).unwrap();
    let leaks = |o: &std::process::Output| {
        let all = [stderr(o), stdout(o)].concat();
        random
            .as_bytes()
            .windows(8)
            .any(|w| all.contains(std::str::from_utf8(w).unwrap()))
    };
    for arg in [
        format!("Bearer {typo}"),
        format!(" {typo}"),
        format!("\t{typo} "),
        format!("Authorization: Bearer {typo}"),
        format!("token={token}"),
    ] {
        for cmd in ["show", "revoke", "test"] {
            let o = bw.run(&["token", cmd, &arg]);
            assert_eq!(o.status.code(), Some(2), "{cmd} {arg:?}: {}", stderr(&o));
            assert!(!leaks(&o), "{cmd} {arg:?}: {}", stderr(&o));
            assert!(
                stderr(&o).contains("neither a token id nor a whole, valid token"),
                "{cmd} {arg:?}: {}",
                stderr(&o)
            );
        }
    }
    // Something else altogether (a provider's key pasted by mistake) is not echoed either.
    let other = "sk-live-51HcKq2eZvKYlo2C0123456789";
    let o = bw.run(&["token", "show", other]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!stderr(&o).contains("51HcKq2eZvKYlo2C"), "{}", stderr(&o));
    assert!(stderr(&o).contains("the argument"), "{}", stderr(&o));
    // The whole token as copied from a header names it.
    let shown = bw.json(&["token", "show", &format!("Bearer {token}")]);
    assert_eq!(shown["id"], id, "{shown}");
    let o = bw.run(&["token", "revoke", &format!("  Bearer {token}\n")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!leaks(&o), "{}", stderr(&o));
    assert_eq!(bw.json(&["token", "show", id])["state"], "revoked");
}

#[test]
fn a_bad_config_names_the_key_and_file() {
    let bw = Bw::new();
    std::fs::write(
        bw.path().join("blastwall.toml"),
        "[store]\nurl = \"sqlite://x.db\"\nuser = \"me\"\n",
    )
    .unwrap();
    insta::assert_snapshot!("bad_config_key", failure(&bw, &["env", "list"], None));
    std::fs::write(
        bw.path().join("blastwall.toml"),
        "[store]\nurl = \"mysql://u:hunter2@x/db\"\n",
    )
    .unwrap();
    let out = failure(&bw, &["env", "list"], None);
    assert!(!out.contains("hunter2"), "{out}");
    insta::assert_snapshot!("bad_store_url", out);
}

#[test]
fn an_unreachable_store_is_a_clear_error() {
    let bw = Bw::new();
    bw.ok(&["init"]);
    let mut bw = bw;
    bw.extra_env.push((
        "BLASTWALL_STORE_URL".into(),
        "postgres://bw:hunter2@127.0.0.1:1/bw".into(),
    ));
    let o = bw.run(&["env", "list"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("error:"), "{err}");
}

/// A store file that went missing is refused, not quietly recreated empty (which would start
/// over without the tokens, credentials and audit chain the old one held).
#[test]
fn a_missing_store_file_is_refused_not_recreated() {
    let bw = Bw::new();
    bw.ok(&["init"]);
    let db = bw.data().join("blastwall.db");
    std::fs::rename(&db, bw.path().join("moved.db")).unwrap();
    for args in [&["env", "list"][..], &["log", "verify"], &["serve"]] {
        insta::assert_snapshot!("missing_store", failure(&bw, args, None));
        assert!(!db.exists(), "`blastwall {args:?}` created a new store");
    }
    std::fs::rename(bw.path().join("moved.db"), &db).unwrap();
    bw.ok(&["env", "list"]);
}

/// Another environment's key copied over an environment's key file is not "present": `env
/// list` says whose it is not, and the gateway does not start with it (it would open none of
/// the environment's credentials, and its refusals would send the operator to re-seal them).
#[test]
fn a_key_of_another_environment_is_not_taken_for_the_right_one() {
    let bw = Bw::new();
    bw.ok(&["init"]);
    let keys = bw.data().join("keys");
    std::fs::copy(keys.join("production.key"), keys.join("staging.key")).unwrap();
    let list = bw.json(&["env", "list"]);
    let staging = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "staging")
        .unwrap()
        .clone();
    assert_eq!(staging["key"], "invalid", "{staging}");
    assert!(
        staging["key_detail"]
            .as_str()
            .unwrap()
            .contains("is not environment `staging`'s key"),
        "{staging}"
    );
    insta::assert_snapshot!("key_of_another_env", failure(&bw, &["serve"], None));
}

/// `-q` leaves only errors on stderr; half-given options and unknown environments are refused,
/// not ignored or answered with an empty list.
#[test]
fn quiet_and_half_given_options() {
    let bw = Bw::new();
    bw.ok(&["init"]);
    // Without -q: a token for an environment with no credential yet says it reaches nothing.
    let o = bw.run(&[
        "token",
        "issue",
        "--env",
        "staging",
        "--owner",
        "o@x.io",
        "--holder",
        "a",
        "--scope",
        "railway:domain.*",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no upstream has a credential in staging"),
        "{}",
        stderr(&o)
    );
    let o = bw.run(&[
        "-q",
        "token",
        "issue",
        "--env",
        "staging",
        "--owner",
        "o@x.io",
        "--holder",
        "a",
        "--scope",
        "railway:domain.*",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.lines()
            .all(|l| l.trim().is_empty() || l.contains("DEBUG")),
        "{err}"
    );
    // `--secret-stdin` without `--env` would seal nothing.
    let o = bw.run_stdin(
        &[
            "upstream",
            "add",
            "gh",
            "--profile",
            "github",
            "--base-url",
            "https://api.github.com",
            "--secret-stdin",
        ],
        "ghp_x",
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--env"), "{}", stderr(&o));
    let o = bw.run(&["token", "list", "--env", "nope"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("unknown environment `nope`"),
        "{}",
        stderr(&o)
    );
}

/// `log verify` names the checkpoint key it trusted, so it can be passed as `--key` where the
/// signing key is not; a malformed `--key` is a usage error, not a report of tampering.
#[test]
fn log_verify_names_its_key_and_refuses_a_malformed_one() {
    let bw = Bw::new();
    bw.ok(&["init"]);
    let report = bw.json(&["log", "verify"]);
    assert_eq!(report["ok"], true);
    let key = report["key"].as_str().unwrap().to_owned();
    assert_eq!(key.len(), 64);
    for bad in ["zz", "abcd"] {
        let o = bw.run(&["log", "verify", "--key", bad]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(!stdout(&o).contains("FAILED"), "{}", stdout(&o));
    }
    std::fs::rename(
        bw.data().join("keys/audit.key"),
        bw.path().join("audit.key"),
    )
    .unwrap();
    let o = bw.run(&["log", "verify"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--key"), "{}", stderr(&o));
    let again = bw.json(&["log", "verify", "--key", &key]);
    assert_eq!(again["ok"], true, "{again}");
}

/// A credential that cannot go in a header, or that is too short to be told from ordinary text
/// when the gateway masks it in responses, is refused when it is sealed, not by every request.
#[test]
fn a_credential_a_header_cannot_carry_is_refused_when_sealed() {
    let bw = Bw::new();
    bw.ok(&["init"]);
    let add = add_api_upstream("staging");
    for (secret, why) in [
        (
            "bad\u{1}credential-0123",
            "bytes an HTTP header cannot carry",
        ),
        ("crédential-0123456", "bytes an HTTP header cannot carry"),
        ("line-one\nline-two", "bytes an HTTP header cannot carry"),
        ("cc", "under 8 characters"),
    ] {
        let o = bw.run_stdin(&add, secret);
        assert_eq!(o.status.code(), Some(2), "{secret:?}");
        let err = stderr(&o);
        assert!(err.contains(why), "{secret:?}: {err}");
        // (Two letters are everywhere in the debug log.)
        assert!(secret.len() < 8 || !err.contains(secret), "{err}");
    }
    let list = bw.json(&["upstream", "list"]);
    assert!(list.as_array().unwrap().is_empty(), "{list}");
    let o = bw.run_stdin(&add, "api-token-0123456789\n");
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A credential with spaces or tabs at either end is refused, not trimmed (a tool holding
/// secrets does not quietly change one) and not echoed; the line end of a file is still dropped.
#[test]
fn a_credential_with_spaces_around_it_is_refused_not_trimmed() {
    let bw = Bw::new();
    bw.ok(&["init"]);
    let add = add_api_upstream("staging");
    let secret = "api-token-0123456789";
    for piped in [
        format!(" {secret}"),
        format!("{secret} "),
        format!("\t{secret}\n"),
        format!("{secret}\t\r\n"),
        format!("{secret} \n"),
        "   \n".to_owned(),
    ] {
        let o = bw.run_stdin(&add, &piped);
        assert_eq!(o.status.code(), Some(2), "{piped:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("starts or ends with a space or a tab"),
            "{piped:?}: {err}"
        );
        assert!(!contains(&o.stderr, secret.as_bytes()), "{err}");
        assert!(!contains(&o.stdout, secret.as_bytes()));
    }
    insta::assert_snapshot!(
        "secret_with_spaces",
        failure(&bw, &add, Some(&format!("{secret} \n")))
    );
    let list = bw.json(&["upstream", "list"]);
    assert!(list.as_array().unwrap().is_empty(), "{list}");
    // A file's line end, either kind, is not part of the credential.
    for piped in [format!("{secret}\r\n"), format!("{secret}\n")] {
        let o = bw.run_stdin(&add, &piped);
        assert!(o.status.success(), "{piped:?}: {}", stderr(&o));
    }
}

#[test]
fn config_show_redacts() {
    let mut bw = Bw::new();
    bw.ok(&["init"]);
    bw.extra_env.push((
        "BLASTWALL_STORE_URL".into(),
        "postgres://bw:hunter2@db.internal/bw".into(),
    ));
    let out = bw
        .ok(&["config", "show"])
        .replace(&bw.path().display().to_string(), "[TMP]");
    assert!(!out.contains("hunter2"));
    insta::assert_snapshot!("config_show", out);
}
