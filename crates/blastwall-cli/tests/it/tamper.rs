//! `log verify` against a store tampered with directly: edit, delete, reorder, truncate.

use sqlx::Connection;

use crate::support::{Bw, stdout};

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
