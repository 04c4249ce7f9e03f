//! `log verify` against a store tampered with directly: edit, delete, reorder, truncate; and
//! what other commands do with a row they cannot read.

use sqlx::Connection;

use crate::support::{Bw, add_api_upstream, stderr, stdout};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A setup with a dozen audit entries.
fn populated() -> Bw {
    let bw = Bw::new();
    bw.ok(&["init"]);
    for name in ["qa", "dev", "perf", "demo"] {
        bw.ok(&["env", "add", name, "--tier", "nonprod"]);
    }
    for holder in ["a1", "a2", "a3", "a4"] {
        bw.ok(&[
            "token",
            "issue",
            "--env",
            "staging",
            "--owner",
            "o@x.io",
            "--holder",
            holder,
            "--scope",
            "railway:domain.*",
        ]);
    }
    let o = bw.run(&["log", "verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    bw
}

fn sql(bw: &Bw, statements: &[&str]) {
    let url = format!("sqlite://{}", bw.data().join("blastwall.db").display());
    block_on(async {
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        for s in statements {
            sqlx::query(s).execute(&mut c).await.unwrap();
        }
    });
}

fn verify_fails_with(bw: &Bw, expected: &str) {
    let o = bw.run(&["log", "verify"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "verify passed a tampered log: {}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains(expected),
        "expected `{expected}` in: {}",
        stdout(&o)
    );
}

#[test]
fn an_edited_entry_is_named() {
    let bw = populated();
    sql(
        &bw,
        &["UPDATE audit_log SET actor = 'cli:mallory' WHERE seq = 3"],
    );
    verify_fails_with(&bw, "audit entry 3 was altered");
}

#[test]
fn an_edited_detail_is_named() {
    let bw = populated();
    sql(&bw, &["UPDATE audit_log SET detail = '{}' WHERE seq = 9"]);
    verify_fails_with(&bw, "audit entry 9 was altered");
}

#[test]
fn a_deleted_entry_is_named() {
    let bw = populated();
    sql(&bw, &["DELETE FROM audit_log WHERE seq = 4"]);
    verify_fails_with(&bw, "audit entry 4 is missing");
}

#[test]
fn reordered_entries_are_found() {
    let bw = populated();
    sql(
        &bw,
        &[
            "UPDATE audit_log SET seq = -1 WHERE seq = 5",
            "UPDATE audit_log SET seq = 5 WHERE seq = 6",
            "UPDATE audit_log SET seq = 6 WHERE seq = -1",
        ],
    );
    verify_fails_with(&bw, "audit entry 5");
}

#[test]
fn a_truncated_tail_is_found_by_the_checkpoints() {
    let bw = populated();
    sql(&bw, &["DELETE FROM audit_log WHERE seq > 7"]);
    verify_fails_with(&bw, "truncated");
}

/// Ships the newest checkpoint the way the docs say (`log checkpoint >> FILE`); returns FILE.
fn ship_checkpoint(bw: &Bw) -> std::path::PathBuf {
    let line = bw.ok(&["log", "checkpoint"]);
    assert_eq!(line.lines().count(), 1, "{line}");
    let cp: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert!(cp["seq"].as_i64().unwrap() > 7, "{cp}");
    let file = bw.path().join("elsewhere.jsonl");
    // Twice, as a job that found nothing new appends it again: kept once.
    std::fs::write(&file, format!("# shipped by cron\n{line}{line}")).unwrap();
    file
}

fn verify_with(bw: &Bw, file: &std::path::Path) -> std::process::Output {
    bw.run(&["log", "verify", "--checkpoints", file.to_str().unwrap()])
}

/// Removes the tokens whose `token.issue` entries are gone, so the store matches the cut log
/// (what a careful tamperer would do; without it the check of the store names them).
const FORGET_CUT_TOKENS: &str = "DELETE FROM tokens WHERE id NOT IN \
     (SELECT target FROM audit_log WHERE action = 'token.issue')";

/// Cutting the end off together with the checkpoints that cover it (and the tokens it issued)
/// passes a check of the store alone (said as an unsigned tail); a checkpoint kept elsewhere
/// finds it.
#[test]
fn a_tail_cut_with_its_checkpoints_is_found_by_a_shipped_checkpoint() {
    let bw = populated();
    let file = ship_checkpoint(&bw);
    let o = verify_with(&bw, &file);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(" and 1 from `"), "{}", stdout(&o));
    sql(
        &bw,
        &[
            "DELETE FROM audit_log WHERE seq > 7",
            "DELETE FROM checkpoints WHERE seq > 7",
        ],
    );
    // Tokens whose issue was cut from the log are named by the check of the store.
    let o = bw.run(&["log", "verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("has no `token.issue` entry in the audit log"),
        "{}",
        stdout(&o)
    );
    sql(&bw, &[FORGET_CUT_TOKENS]);
    let o = bw.run(&["log", "verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let o = verify_with(&bw, &file);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("elsewhere.jsonl` line 2 does not hold: the log was truncated"),
        "{}",
        stdout(&o)
    );
}

/// History rewritten from entry 8 on by someone who can write the store and run `blastwall`
/// (so its new checkpoints carry a valid signature): only the shipped checkpoint tells.
#[test]
fn a_rewritten_history_is_found_by_a_shipped_checkpoint() {
    let bw = populated();
    let file = ship_checkpoint(&bw);
    sql(
        &bw,
        &[
            "DELETE FROM audit_log WHERE seq > 7",
            "DELETE FROM checkpoints WHERE seq > 7",
            FORGET_CUT_TOKENS,
        ],
    );
    for holder in ["b1", "b2", "b3", "b4", "b5", "b6"] {
        bw.ok(&[
            "token",
            "issue",
            "--env",
            "staging",
            "--owner",
            "o@x.io",
            "--holder",
            holder,
            "--scope",
            "railway:domain.*",
        ]);
    }
    let o = bw.run(&["log", "verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let o = verify_with(&bw, &file);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("does not match the log"),
        "{}",
        stdout(&o)
    );
    let o = bw.run(&[
        "log",
        "verify",
        "--json",
        "--checkpoints",
        file.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["ok"], false, "{report}");
}

/// A file of shipped checkpoints that is not one stops the check (exit 2) without quoting it:
/// a wrong file may hold a secret. An empty one proves nothing and is refused too.
#[test]
fn a_bad_checkpoint_file_is_refused_without_quoting_it() {
    let bw = populated();
    let file = bw.path().join("wrong.jsonl");
    std::fs::write(&file, "{\"seq\": 3}\n\"canary-secret-7f3e\"\n").unwrap();
    let o = verify_with(&bw, &file);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("line 1 of"), "{}", stderr(&o));
    std::fs::write(&file, "\"canary-secret-7f3e\"\n").unwrap();
    let o = verify_with(&bw, &file);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!stderr(&o).contains("canary"), "{}", stderr(&o));
    assert!(!stdout(&o).contains("canary"), "{}", stdout(&o));
    std::fs::write(&file, "# nothing yet\n\n").unwrap();
    let o = verify_with(&bw, &file);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("holds no checkpoint"), "{}", stderr(&o));
    let o = verify_with(&bw, &bw.path().join("missing.jsonl"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // No line break for 10 KB (a device, a wrong file): refused, not read whole.
    std::fs::write(&file, "x".repeat(10_000)).unwrap();
    let o = verify_with(&bw, &file);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("over 4096 bytes"), "{}", stderr(&o));
    // And `log checkpoint` with nothing signed says so (exit 2), printing no data.
    sql(&bw, &["DELETE FROM checkpoints"]);
    let o = bw.run(&["log", "checkpoint"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("no checkpoint signed"),
        "{}",
        stderr(&o)
    );
}

/// What `log checkpoint` prints is checked first: a row added by whoever can write the store, or
/// one naming entries the log no longer has, is a failed check (exit 1) with nothing on stdout,
/// so the file it is appended to never takes it.
#[test]
fn log_checkpoint_prints_only_a_checkpoint_that_holds() {
    let bw = populated();
    let good = bw.ok(&["log", "checkpoint"]);
    sql(
        &bw,
        &[
            "INSERT INTO checkpoints SELECT 999999, hash, at, key, signature FROM checkpoints WHERE seq = (SELECT MAX(seq) FROM checkpoints)",
        ],
    );
    let o = bw.run(&["log", "checkpoint"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    assert!(stderr(&o).contains("bad signature"), "{}", stderr(&o));
    // A row under another key is not the one handed out for this key.
    sql(
        &bw,
        &[
            "DELETE FROM checkpoints WHERE seq = 999999",
            &format!(
                "INSERT INTO checkpoints VALUES (999999, 'ab', 'x', '{}', 'cd')",
                "ef".repeat(32)
            ),
        ],
    );
    assert_eq!(bw.ok(&["log", "checkpoint"]), good);
    // The end of the log cut off under its newest checkpoint.
    let seq = serde_json::from_str::<serde_json::Value>(good.trim()).unwrap()["seq"]
        .as_i64()
        .unwrap();
    sql(&bw, &[&format!("DELETE FROM audit_log WHERE seq >= {seq}")]);
    let o = bw.run(&["log", "checkpoint"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    assert!(stderr(&o).contains("truncated"), "{}", stderr(&o));
}

/// The store's configuration is checked against what the log says was done: each change made
/// by writing the store directly, past the CLI and its audit entry, is named (exit 1), and a
/// store that only went through the CLI passes.
#[test]
fn configuration_written_past_the_log_is_named() {
    let bw = populated();
    let o = bw.run_stdin(&add_api_upstream("staging"), "upstream-secret-1");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = bw.run(&["log", "verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let cases: [(&str, &str); 7] = [
        (
            "UPDATE tokens SET scope = '[\"railway:*\"]' WHERE holder = 'a1'",
            "its scope is not the one its `token.issue` entry",
        ),
        (
            "UPDATE tokens SET expires_at = expires_at + 86400000000 WHERE holder = 'a2'",
            "its expiry is not the one",
        ),
        (
            "INSERT INTO tokens SELECT 'tok_00000000000000ff', kind, env, owner, 'mallory', scope, (CASE WHEN substr(digest, 1, 2) = 'ff' THEN '00' ELSE 'ff' END) || substr(digest, 3), created_at, expires_at, NULL, NULL FROM tokens WHERE holder = 'a3'",
            "token `tok_00000000000000ff` has no `token.issue` entry",
        ),
        (
            "UPDATE environments SET tier = 'nonprod' WHERE name = 'production'",
            "environment `production`: its tier is not",
        ),
        (
            "UPDATE upstreams SET base_url = 'https://attacker.example' WHERE name = 'api'",
            "upstream `api`: its base URL is not",
        ),
        (
            // Same length, other bytes: only the fingerprint in the log tells.
            "UPDATE credentials SET sealed = CAST(x'00' || substr(sealed, 2) AS BLOB) WHERE upstream = 'api'",
            "the credential of upstream `api` for `staging` is not the one",
        ),
        (
            "DELETE FROM tokens WHERE holder = 'a4'",
            "is not in the store",
        ),
    ];
    for (statement, expected) in cases {
        let copy = bw.path().join("blastwall.db.orig");
        std::fs::copy(bw.data().join("blastwall.db"), &copy).unwrap();
        sql(&bw, &[statement]);
        let o = bw.run(&["log", "verify"]);
        assert_eq!(o.status.code(), Some(1), "{statement}: {}", stdout(&o));
        assert!(
            stdout(&o).contains("the audit log verifies, but the store does not match it"),
            "{statement}: {}",
            stdout(&o)
        );
        assert!(stdout(&o).contains(expected), "{statement}: {}", stdout(&o));
        std::fs::copy(&copy, bw.data().join("blastwall.db")).unwrap();
        for side in ["blastwall.db-wal", "blastwall.db-shm"] {
            let _ = std::fs::remove_file(bw.data().join(side));
        }
    }
    // A revocation undone in the store.
    let id = bw.json(&["token", "list"])[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    bw.ok(&["token", "revoke", &id]);
    sql(
        &bw,
        &[&format!(
            "UPDATE tokens SET revoked_at = NULL WHERE id = '{id}'"
        )],
    );
    let o = bw.run(&["log", "verify", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(
        report["drift"][0]
            .as_str()
            .unwrap()
            .contains("but the store has it unrevoked"),
        "{report}"
    );
}

#[test]
fn a_forged_checkpoint_is_refused() {
    let bw = populated();
    sql(
        &bw,
        &[
            // Its first byte changed, always (replacing it with `ff` left one signature in 256
            // as it was, and the test failed when it did).
            "UPDATE checkpoints SET signature = (CASE WHEN substr(signature, 1, 2) = '00' THEN '11' ELSE '00' END) || substr(signature, 3) WHERE seq = (SELECT MAX(seq) FROM checkpoints)",
        ],
    );
    verify_fails_with(&bw, "bad signature");
}

#[test]
fn verify_against_another_key_fails() {
    let bw = populated();
    let o = bw.run(&["log", "verify", "--key", &"ab".repeat(32)]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
}

/// Every row of the PostgreSQL store as bytes (sealed values raw), for leak checks.
pub fn pg_dump_all(url: &str) -> Vec<u8> {
    block_on(async {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        let mut out = Vec::new();
        for table in [
            "environments",
            "upstreams",
            "credentials",
            "tokens",
            "audit_log",
            "checkpoints",
        ] {
            let rows: Vec<(String,)> =
                sqlx::query_as(&format!("SELECT CAST(t AS TEXT) FROM {table} t"))
                    .fetch_all(&mut c)
                    .await
                    .unwrap();
            for (r,) in rows {
                out.extend_from_slice(r.as_bytes());
                out.push(b'\n');
            }
        }
        let sealed: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT sealed FROM credentials")
            .fetch_all(&mut c)
            .await
            .unwrap();
        assert!(!sealed.is_empty());
        for (s,) in sealed {
            out.extend_from_slice(&s);
        }
        out
    })
}

/// The audit signing key's private seed, as its key file holds it.
fn audit_seed(bw: &Bw) -> String {
    std::fs::read_to_string(bw.data().join("keys/audit.key"))
        .unwrap()
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap()
        .to_owned()
}

/// The private seed passed as `--key` by mistake is never printed back: not in the refusal of a
/// malformed value, nor in the success line of a log with no checkpoint to prove it wrong.
#[test]
fn a_private_seed_passed_as_key_is_not_echoed() {
    let bw = populated();
    let seed = audit_seed(&bw);
    assert_eq!(seed.len(), 64);
    let echoed = |o: &std::process::Output| {
        let all = [stdout(o), stderr(o)].concat().to_ascii_lowercase();
        all.contains(&seed.to_ascii_lowercase())
    };
    // Malformed: a usage error that does not repeat it.
    for bad in [format!("{seed}0"), format!("{seed} x"), format!("0x{seed}")] {
        let o = bw.run(&["log", "verify", "--key", &bad]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(!echoed(&o), "{}", stderr(&o));
        assert!(stderr(&o).contains("`--key`"), "{}", stderr(&o));
    }
    // Well-formed, with checkpoints: recognised as the private key (its public half verifies
    // them), not reported as tampering, not echoed; the public half is given instead.
    let o = bw.run(&["log", "verify", "--key", &seed]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(!echoed(&o), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is the private audit signing key"),
        "{}",
        stderr(&o)
    );
    let public = bw.json(&["log", "verify"])["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        stderr(&o).contains(&format!("--key {public}")),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        bw.run(&["log", "verify", "--key", &public]).status.code(),
        Some(0)
    );
    // Another key that verifies nothing is still a failed check (exit 1).
    let other = "ab".repeat(32);
    let o = bw.run(&["log", "verify", "--key", &other]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    // The same with checkpoints kept outside the store, once the store has none: the shipped
    // ones are what its public half verifies.
    let file = ship_checkpoint(&bw);
    sql(&bw, &["DELETE FROM checkpoints"]);
    let o = bw.run(&[
        "log",
        "verify",
        "--key",
        &seed,
        "--checkpoints",
        file.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(!echoed(&o), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is the private audit signing key"),
        "{}",
        stderr(&o)
    );
    // With no checkpoint, nothing proves it is not a public key: it verifies nothing, and is
    // not printed as the key that did.
    sql(&bw, &["DELETE FROM checkpoints"]);
    let o = bw.run(&["log", "verify", "--key", &seed]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!echoed(&o), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("chain intact, no signed checkpoint to verify"),
        "{}",
        stdout(&o)
    );
    let o = bw.run(&["log", "verify", "--key", &seed, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!echoed(&o), "{}", stdout(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["checkpoints"], 0, "{report}");
    assert!(report["key"].is_null(), "{report}");
    // With its checkpoints deleted the log does not pass for one fully covered: every entry is
    // said to follow the newest checkpoint (there is none).
    assert!(report["signed_to"].is_null(), "{report}");
    assert_eq!(report["unsigned_tail"], report["entries"], "{report}");
    let o = bw.run(&["log", "verify", "--key", &seed]);
    let entries = report["entries"].as_i64().unwrap();
    assert!(
        stdout(&o).contains(&format!(
            "the last {entries} entries follow the newest checkpoint: their removal from the end would not show"
        )),
        "{}",
        stdout(&o)
    );
}

/// `token issue` prints the token before it looks up which upstreams have a credential (for a
/// note); if that look-up fails, the token is still issued: a warning, exit 0.
#[test]
fn a_token_is_issued_when_the_credential_look_up_fails() {
    let bw = Bw::new();
    bw.ok(&["init"]);
    let o = bw.run_stdin(&add_api_upstream("production"), "api-token-0123456789\n");
    assert!(o.status.success(), "{}", stderr(&o));
    // A time no timestamp can hold: listing the credentials fails.
    sql(
        &bw,
        &["UPDATE credentials SET created_at = 9223372036854775807"],
    );
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
    let token = stdout(&o);
    assert!(token.trim().starts_with("bwt_staging_"), "{token}");
    let err = stderr(&o);
    assert!(
        err.lines()
            .any(|l| l.starts_with("warning: the token is issued, but cannot tell")),
        "{err}"
    );
    assert!(!err.lines().any(|l| l.starts_with("error:")), "{err}");
    assert!(!err.contains(token.trim()), "{err}");
    // It is the token of a stored record.
    let shown = bw.json(&["token", "show", token.trim()]);
    assert_eq!(shown["env"], "staging", "{shown}");
}
