//! The whole foundation session of issue 3, on SQLite and on PostgreSQL.

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::support::{Bw, all_files, contains, stderr, stdout};

const PROD_CANARY: &str = "rw_PROD_canary_7f3a9c1e5b2d4f6a8c0e";
const STAGING_CANARY: &str = "rw_STAGING_canary_1b3d5f7a9c2e4f6a";

/// Runs the session; returns every stdout/stderr it produced and the issued token.
fn session(bw: &Bw, init: &[&str]) -> (Vec<u8>, String) {
    let mut outputs = Vec::new();
    let mut keep = |o: &std::process::Output| {
        outputs.extend_from_slice(&o.stdout);
        outputs.extend_from_slice(&o.stderr);
    };

    let mut args = vec!["init"];
    args.extend_from_slice(init);
    let o = bw.run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    keep(&o);
    for key in ["staging.key", "production.key", "audit.key"] {
        let meta = std::fs::metadata(bw.data().join("keys").join(key)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{key}");
    }

    let envs = bw.json(&["env", "list"]);
    let envs = envs.as_array().unwrap();
    assert_eq!(envs.len(), 2);
    let prod = envs.iter().find(|e| e["name"] == "production").unwrap();
    assert_eq!(prod["tier"], "prod");
    assert_eq!(prod["max_token_ttl_secs"], 3600);
    assert_eq!(prod["key"], "present");
    let staging = envs.iter().find(|e| e["name"] == "staging").unwrap();
    assert_eq!(staging["tier"], "nonprod");
    assert_eq!(staging["max_token_ttl_secs"], 8 * 3600);

    bw.ok(&[
        "env",
        "add",
        "qa",
        "--tier",
        "nonprod",
        "--max-token-ttl",
        "24h",
    ]);
    let envs = bw.json(&["env", "list"]);
    let qa = envs
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "qa")
        .unwrap();
    assert_eq!(qa["max_token_ttl_secs"], 24 * 3600);
    let o = bw.run(&["env", "add", "qa", "--tier", "nonprod"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));

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
        &format!("{PROD_CANARY}\n"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    keep(&o);
    let o = bw.run_stdin(
        &[
            "upstream",
            "add",
            "railway",
            "--env",
            "staging",
            "--secret-stdin",
        ],
        STAGING_CANARY,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    keep(&o);

    let ups = bw.json(&["upstream", "list"]);
    let railway = &ups.as_array().unwrap()[0];
    assert_eq!(railway["name"], "railway");
    assert_eq!(railway["profile"], "railway");
    let mut creds: Vec<&str> = railway["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    creds.sort_unstable();
    assert_eq!(creds, ["production", "staging"]);

    let issued = bw.json(&[
        "token",
        "issue",
        "--env",
        "staging",
        "--owner",
        "jer@pocketos.com",
        "--holder",
        "cursor-agent",
        "--scope",
        "railway:domain.*",
        "--ttl",
        "8h",
    ]);
    let token = issued["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("bwt_staging_"), "{token}");
    let id = issued["id"].as_str().unwrap().to_owned();
    assert_eq!(issued["state"], "active");
    assert!(!issued["operations"].as_array().unwrap().is_empty());

    let listed = bw.json(&["token", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["owner"], "jer@pocketos.com");
    assert_eq!(listed[0]["holder"], "cursor-agent");
    assert_eq!(listed[0]["scope"][0], "railway:domain.*");
    let shown = bw.json(&["token", "show", &id]);
    assert_eq!(shown["env"], "staging");
    assert!(
        bw.json(&["token", "list", "--env", "production"])
            .as_array()
            .unwrap()
            .is_empty()
    );

    let o = bw.run(&["token", "revoke", &id]);
    assert!(o.status.success(), "{}", stderr(&o));
    keep(&o);
    // Another process sees the revocation at once.
    assert_eq!(bw.json(&["token", "show", &id])["state"], "revoked");
    let again = bw.json(&["token", "revoke", &id]);
    assert_eq!(again["already_revoked"], true);

    let tail = bw.json(&["log", "tail", "-n", "100"]);
    let actions: Vec<&str> = tail
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "env.add",
            "env.add",
            "env.add",
            "upstream.add",
            "credential.add",
            "credential.add",
            "token.issue",
            "token.revoke",
        ]
    );
    let o = bw.run(&["log", "verify"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("8 entries"), "{}", stdout(&o));
    keep(&o);

    let o = bw.run(&["config", "show"]);
    assert!(o.status.success());
    keep(&o);
    (outputs, token)
}

fn assert_no_leak(bw: &Bw, outputs: &[u8], token: &str, extra: &[(String, Vec<u8>)]) {
    let secrets = [PROD_CANARY, STAGING_CANARY, token];
    // The token itself was printed once, on purpose, by `token issue`; the other outputs and every
    // file must not contain any secret.
    for s in &secrets[..2] {
        assert!(
            !contains(outputs, s.as_bytes()),
            "a secret reached the output"
        );
    }
    let random_part = &token[token.len() - 37..];
    for (path, bytes) in all_files(bw.path()) {
        for s in secrets.iter().copied().chain([random_part]) {
            assert!(
                !contains(&bytes, s.as_bytes()),
                "a secret is in {}",
                path.display()
            );
        }
    }
    for (what, bytes) in extra {
        for s in secrets.iter().copied().chain([random_part]) {
            assert!(!contains(bytes, s.as_bytes()), "a secret is in {what}");
        }
    }
}

#[test]
fn foundation_session_on_sqlite() {
    let bw = Bw::new();
    let (outputs, token) = session(&bw, &[]);
    assert_no_leak(&bw, &outputs, &token, &[]);
}

#[test]
fn foundation_session_on_postgres() {
    let pg = blastwall_test::PgCluster::start().unwrap();
    let url = pg.url();
    let bw = Bw::new();
    let (outputs, token) = session(&bw, &["--store-url", &url]);
    let dump = crate::tamper::pg_dump_all(&url);
    assert_no_leak(
        &bw,
        &outputs,
        &token,
        &[("the PostgreSQL store".into(), dump)],
    );
}

#[test]
fn a_process_without_the_production_key_sees_it_sealed() {
    let bw = Bw::new();
    bw.ok(&["init"]);
    bw.run_stdin(
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
        PROD_CANARY,
    );
    // The production key leaves this host (as it must on a staging host).
    let key = bw.data().join("keys/production.key");
    let moved = bw.path().join("elsewhere.key");
    std::fs::rename(&key, &moved).unwrap();
    let envs = bw.json(&["env", "list"]);
    let prod = envs
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "production")
        .unwrap();
    assert_eq!(prod["key"], "sealed");
    let staging = envs
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "staging")
        .unwrap();
    assert_eq!(staging["key"], "present");
    // Adding a production credential needs only the public key, so it still works here.
    bw.run_stdin(
        &[
            "upstream",
            "add",
            "railway",
            "--env",
            "production",
            "--secret-stdin",
        ],
        PROD_CANARY,
    );

    let o = bw.run(&["upstream", "check", "railway", "--env", "production"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stdout(&o).contains("sealed"), "{}", stdout(&o));
    let o = bw.run(&["upstream", "check", "railway", "--env", "staging"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));

    // With the key given through its variable, the credential opens.
    let text = std::fs::read_to_string(&moved).unwrap();
    let mut bw2 = Bw {
        dir: bw.dir,
        extra_env: Vec::new(),
    };
    bw2.extra_env
        .push(("BLASTWALL_ENV_KEY_PRODUCTION".into(), text));
    let o = bw2.run(&["upstream", "check", "railway", "--env", "production"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(!contains(&o.stdout, PROD_CANARY.as_bytes()));
    assert!(!contains(&o.stderr, PROD_CANARY.as_bytes()));

    // The staging key cannot open the production credential even if it is named as production's.
    let staging_key = std::fs::read_to_string(bw2.data().join("keys/staging.key")).unwrap();
    bw2.extra_env = vec![("BLASTWALL_ENV_KEY_PRODUCTION".into(), staging_key)];
    let o = bw2.run(&["upstream", "check", "railway", "--env", "production"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("is not environment `production`'s key"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn expiry_takes_effect_at_once() {
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
        "--ttl",
        "1s",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let shown = bw.json(&["token", "show", t["id"].as_str().unwrap()]);
    assert_eq!(shown["state"], "expired");
}

#[test]
fn credential_kinds_have_their_own_prefixes() {
    let bw = Bw::new();
    bw.ok(&["init"]);
    for (kind, prefix) in [
        ("approver", "bwa_production_"),
        ("admin", "bwm_production_"),
    ] {
        let t = bw.json(&[
            "token",
            "issue",
            "--env",
            "production",
            "--owner",
            "o@x.io",
            "--holder",
            "h",
            "--kind",
            kind,
            "--ttl",
            "30m",
        ]);
        assert!(t["token"].as_str().unwrap().starts_with(prefix));
        assert_eq!(t["kind"], kind);
    }
    let _: Value = bw.json(&["token", "list"]);
}

#[test]
fn the_demo_replays_the_incident_and_every_step_behaves() {
    let bw = Bw::new();
    let o = bw.run(&["demo"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(!out.contains('✗'), "{out}");
    assert!(out.contains("railway:volume.delete"), "{out}");
    assert!(out.contains("every step behaved"), "{out}");
    assert!(out.matches('✓').count() >= 12, "{out}");
}
