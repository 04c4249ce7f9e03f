//! Issue 6: backups to a vault the writer cannot delete from, and drills that prove the data came
//! back. The real binary on both sides: a vault host (its own folder, `vault serve` on loopback)
//! and a production folder holding only the writer credential and the public key.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::support::{Bw, stderr, stdout};

/// A vault host: its folder, its credentials, its running server.
struct VaultHost {
    bw: Bw,
    child: Option<Child>,
    url: String,
    writer: String,
    reader: String,
    admin: String,
    log: Arc<Mutex<Vec<u8>>>,
    /// `--tls-cert` and `--tls-key` (a self-signed certificate) when it serves HTTPS.
    tls: Option<(PathBuf, PathBuf)>,
    /// More arguments for `vault serve`.
    serve_args: Vec<String>,
    /// `TMPDIR` for `vault serve` (its drills' work folders).
    tmpdir: Option<PathBuf>,
}

impl Drop for VaultHost {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl VaultHost {
    fn new(extra: &[&str]) -> Self {
        Self::build(extra, false)
    }

    /// A vault serving HTTPS with a fresh self-signed certificate for `127.0.0.1` and
    /// `localhost`; its drill runner trusts it with `--ca-file`.
    fn https(extra: &[&str]) -> Self {
        Self::build(extra, true)
    }

    /// The PEM certificate an HTTPS vault serves (its own CA).
    fn cert(&self) -> &Path {
        &self.tls.as_ref().unwrap().0
    }

    fn build(extra: &[&str], https: bool) -> Self {
        let bw = Bw::new();
        let tls = https.then(|| {
            let ck = rcgen::generate_simple_self_signed(vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
            ])
            .unwrap();
            let (cert, key) = (bw.path().join("vault.crt"), bw.path().join("vault.key"));
            std::fs::write(&cert, ck.cert.pem()).unwrap();
            std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
            (cert, key)
        });
        let data = bw.path().join("vault");
        let d = data.to_str().unwrap();
        let mut args = vec!["vault", "init", "--data", d, "--min-retention", "30d"];
        args.extend_from_slice(extra);
        bw.ok(&args);
        let cred = |name: &str, role: &str| {
            bw.ok(&[
                "vault",
                "credential",
                "add",
                name,
                "--role",
                role,
                "--data",
                d,
            ])
            .trim()
            .to_owned()
        };
        let writer = cred("prod-writer", "writer");
        let reader = cred("drills", "reader");
        let admin = cred("ops", "admin");
        let mut v = Self {
            bw,
            child: None,
            url: String::new(),
            writer,
            reader,
            admin,
            log: Arc::new(Mutex::new(Vec::new())),
            tls,
            serve_args: Vec::new(),
            tmpdir: None,
        };
        v.start();
        // The drill runner lives here: a reader target and the identity.
        let key = v.data().join("keys/backup.key");
        let mut args = vec![
            "backup",
            "target",
            "add",
            "vault",
            "--url",
            &v.url,
            "--credential-stdin",
            "--identity",
            key.to_str().unwrap(),
        ];
        if let Some((cert, _)) = &v.tls {
            args.extend(["--ca-file", cert.to_str().unwrap()]);
        }
        let o = v.bw.run_stdin(&args, &v.reader);
        assert!(o.status.success(), "{}", stderr(&o));
        v
    }

    fn data(&self) -> PathBuf {
        self.bw.path().join("vault")
    }

    fn start(&mut self) {
        let listen = if self.url.is_empty() {
            "127.0.0.1:0".to_owned()
        } else {
            self.url
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .to_owned()
        };
        let mut cmd = self.bw.std_cmd();
        cmd.args(["vault", "serve", "--data"])
            .arg(self.data())
            .args(["--listen", &listen]);
        if let Some((cert, key)) = &self.tls {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        cmd.args(&self.serve_args);
        if let Some(t) = &self.tmpdir {
            cmd.env("TMPDIR", t);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = self.log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.split("listening on ").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.trim().to_owned());
                }
                let mut l = sink.lock().unwrap();
                l.extend_from_slice(line.as_bytes());
                l.push(b'\n');
            }
        });
        self.url = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("vault did not start: {}", self.log_text()));
        self.child = Some(child);
    }

    /// Restarts `vault serve` on the same address with `args` added.
    fn serve_with(&mut self, args: &[&str]) {
        self.kill9();
        self.serve_args = args.iter().map(|a| (*a).to_owned()).collect();
        self.start();
    }

    /// Stops `vault serve` with SIGTERM and waits for it to end.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while c.try_wait().unwrap().is_none() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "vault serve did not stop"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-KILL", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    /// Every drill recorded in the vault.
    fn drills(&self) -> Vec<Value> {
        std::fs::read_to_string(self.data().join("drills.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits (up to a minute) for a drill record that `pred` accepts, and returns it.
    fn wait_for_drill(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(d) = self.drills().into_iter().rev().find(|d| pred(d)) {
                return d;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no such drill in {:#?}\n{}",
                self.drills(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log_text(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    fn drill(&self, source: &str, extra: &[&str]) -> std::process::Output {
        let mut args = vec!["backup", "drill", source, "--latest-only"];
        args.extend_from_slice(extra);
        self.bw.run(&args)
    }

    /// The vault's objects under `backups/<source>/<id>/`.
    fn backup_dir(&self, source: &str, id: &str) -> PathBuf {
        self.data().join("objects/backups").join(source).join(id)
    }
}

/// A production host: `blastwall init` (staging and production, with their keys).
fn production_host() -> Bw {
    let bw = Bw::new();
    bw.ok(&["init"]);
    bw
}

/// Production: holds the writer credential (sealed to the production key) and the recipient
/// only.
fn production(v: &VaultHost) -> Bw {
    let bw = production_host();
    let o = bw.run_stdin(
        &[
            "backup",
            "target",
            "add",
            "offsite",
            "--url",
            &v.url,
            "--env",
            "production",
            "--credential-stdin",
        ],
        &v.writer,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    bw
}

fn add_source(prod: &Bw, name: &str, kind: &str, what: &str) {
    let args: Vec<&str> = if kind == "postgres" {
        vec![
            "backup",
            "source",
            "add",
            name,
            "--kind",
            kind,
            "--url",
            what,
            "--allow-same-volume",
        ]
    } else {
        vec![
            "backup",
            "source",
            "add",
            name,
            "--kind",
            kind,
            what,
            "--allow-same-volume",
        ]
    };
    prod.ok(&args);
}

fn run_backup(prod: &Bw, source: &str, extra: &[&str]) -> Value {
    let mut args = vec!["backup", "run", source];
    args.extend_from_slice(extra);
    prod.json(&args)
}

fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("uploads/2026")).unwrap();
    std::fs::write(root.join("uploads/2026/invoice.pdf"), vec![7u8; 70_000]).unwrap();
    std::fs::write(root.join("README"), "customer files\n").unwrap();
    let mut noise = Vec::new();
    let mut x: u32 = 12345;
    for _ in 0..60_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        noise.push((x >> 16) as u8);
    }
    std::fs::write(root.join("uploads/noise.bin"), noise).unwrap();
    std::os::unix::fs::symlink("README", root.join("link")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("README"), std::fs::Permissions::from_mode(0o640)).unwrap();
}

fn make_sqlite(path: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::ConnectOptions;
        let mut c = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::raw_sql(
            "CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT, photo BLOB, balance REAL);
             CREATE TABLE \"odd \"\"name\"(x);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
             INSERT INTO customers(name, photo, balance) SELECT 'c' || i, randomblob(20), i * 1.5 FROM n;
             INSERT INTO \"odd \"\"name\" VALUES (NULL), ('x');",
        )
        .execute(&mut c)
        .await
        .unwrap();
    });
}

/// Sends a raw HTTP/1.1 request; returns the status code.
fn http(url: &str, method: &str, path: &str, cred: &str, body: &[u8], extra: &str) -> u16 {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {cred}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `PUT /v1/objects/<name>` of `body` with its SHA-256 declared, as `cred`: the status.
fn put_object(url: &str, cred: &str, name: &str, body: &[u8]) -> u16 {
    let sha = blastwall_vault::sha256_hex(body);
    http(
        url,
        "PUT",
        &format!("/v1/objects/{name}"),
        cred,
        body,
        &format!("x-blastwall-sha256: {sha}\r\n"),
    )
}

/// A vault, production's host with a target on it, and a directory source `files` registered.
fn vault_with_files_source() -> (VaultHost, Bw, PathBuf) {
    let v = VaultHost::new(&[]);
    let prod = production(&v);
    let src = prod.path().join("files");
    make_tree(&src);
    add_source(&prod, "files", "dir", src.to_str().unwrap());
    (v, prod, src)
}

#[test]
fn directory_and_sqlite_backups_drill_after_the_sources_are_gone() {
    let v = VaultHost::new(&[]);
    let prod = production(&v);
    let src = prod.path().join("srv");
    make_tree(&src.join("files"));
    make_sqlite(&src.join("app.sqlite"));
    add_source(&prod, "files", "dir", src.join("files").to_str().unwrap());
    add_source(
        &prod,
        "appsqlite",
        "sqlite",
        src.join("app.sqlite").to_str().unwrap(),
    );
    let files = run_backup(&prod, "files", &["--part-size", "16K"]);
    assert!(files["parts"].as_u64().unwrap() > 2, "{files}");
    let db = run_backup(&prod, "appsqlite", &[]);
    let files_before = blastwall_vault::facts::dir_facts(&src.join("files")).unwrap();

    // The incident: the volume is wiped, sources and all.
    std::fs::remove_dir_all(&src).unwrap();

    for source in ["files", "appsqlite"] {
        let o = v.drill(source, &["--json"]);
        assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
        let records: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(records[0]["passed"], true, "{records}");
        assert!(records[0]["rpo_secs"].as_i64().unwrap() >= 0);
    }

    // Production lists the backups and sees the drills passed, but reads nothing.
    let list = prod.json(&["backup", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    for b in list.as_array().unwrap() {
        assert_eq!(b["last_drill"]["passed"], true, "{b}");
    }
    let o = prod.run(&["backup", "drill", "files"]);
    assert_eq!(o.status.code(), Some(2), "production holds no identity");

    // The real restore, on the vault host.
    let out = v.bw.path().join("restored-files");
    let r = v.bw.json(&[
        "backup",
        "restore",
        files["id"].as_str().unwrap(),
        "--to",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r["differences"], Value::Array(vec![]), "{r}");
    assert_eq!(
        blastwall_vault::facts::dir_facts(&out).unwrap(),
        files_before
    );
    assert_eq!(
        std::fs::read_link(out.join("link")).unwrap(),
        PathBuf::from("README")
    );
    let restored_db = v.bw.path().join("restored.sqlite");
    let r = v.bw.json(&[
        "backup",
        "restore",
        db["id"].as_str().unwrap(),
        "--to",
        restored_db.to_str().unwrap(),
    ]);
    assert_eq!(r["differences"], Value::Array(vec![]), "{r}");

    // The vault's own audit log has every create and drill, and no credential.
    let audit = std::fs::read_to_string(v.data().join("audit.jsonl")).unwrap();
    assert!(audit.contains("object.create") && audit.contains("\"drill\""));
    for secret in [&v.writer, &v.reader, &v.admin] {
        assert!(!audit.contains(secret.as_str()));
        assert!(!v.log_text().contains(secret.as_str()));
    }
}

#[test]
fn postgres_backup_drill_restore_and_break_glass() {
    let cluster = blastwall_test::PgCluster::shared().unwrap();
    let url = cluster.fresh_database().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let exec = |url: &str, sql: &str| {
        rt.block_on(async {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
            c.close().await.unwrap();
        });
    };
    exec(
        &url,
        "CREATE SCHEMA billing;
         CREATE TABLE billing.invoices(id serial PRIMARY KEY, customer text NOT NULL, cents int8, meta jsonb, at timestamptz DEFAULT '2026-01-01');
         INSERT INTO billing.invoices(customer, cents, meta) SELECT 'c' || i, i * 100, jsonb_build_object('n', i) FROM generate_series(1, 2000) i;
         CREATE INDEX ON billing.invoices(customer);
         CREATE TABLE public.\"Mixed Case\"(k text, v bytea);
         INSERT INTO public.\"Mixed Case\" VALUES ('a', '\\x00ff'), (NULL, NULL);
         CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
         CREATE TABLE public.moods(id int, m mood, tags text[]);
         INSERT INTO public.moods SELECT i, (ARRAY['sad','ok','happy']::mood[])[1 + i % 3], ARRAY['t' || i] FROM generate_series(1, 300) i;",
    );
    let v = VaultHost::new(&[]);
    let prod = production(&v);
    add_source(&prod, "appdb", "postgres", &url);
    let b = run_backup(&prod, "appdb", &["--part-size", "32K"]);
    let id = b["id"].as_str().unwrap().to_owned();

    // Drop the source database: the drill restores into a scratch cluster of its own.
    let admin_url = cluster.url();
    let dbname = url.rsplit('/').next().unwrap().to_owned();
    exec(&admin_url, &format!("DROP DATABASE {dbname} WITH (FORCE)"));
    let o = v.drill("appdb", &["--json"]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let rec: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rec[0]["passed"], true, "{rec}");
    assert_eq!(rec[0]["amcheck"], "ok", "{rec}");

    // The real restore, into an empty database.
    let target = cluster.fresh_database().unwrap();
    let r = v.bw.json(&["backup", "restore", &id, "--to", &target]);
    assert_eq!(r["differences"], Value::Array(vec![]), "{r}");

    // Break-glass with stock tools only: cat parts | age -d -i key | zstd -d | pg_restore.
    let glass = cluster.fresh_database().unwrap();
    let parts = v.backup_dir("appdb", &id);
    let script = format!(
        "set -euo pipefail; cat {parts}/part-* | age -d -i {key} | zstd -d | {pg_restore} --no-owner -d '{glass}'",
        parts = parts.display(),
        key = v.data().join("keys/backup.key").display(),
        pg_restore = blastwall_vault::scratch::pg_bin("pg_restore").display(),
    );
    let o = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let facts = |u: &str| {
        rt.block_on(blastwall_vault::source::postgres::facts_at(u, None))
            .unwrap()
    };
    assert_eq!(facts(&glass), facts(&target));
    let recorded = facts(&glass);
    match &recorded {
        blastwall_vault::facts::Facts::Tables { tables, .. } => {
            assert_eq!(tables["billing.invoices"].rows, 2000);
            assert_eq!(tables["public.Mixed Case"].rows, 2);
            assert_eq!(tables["public.moods"].rows, 300);
            // Plain built-in types: the cheaper per-column hash. An enum (hashed by its OID,
            // which a restore changes) and an array: the text of the row.
            assert!(tables["billing.invoices"].digest.starts_with("rec:"));
            assert!(tables["public.Mixed Case"].digest.starts_with("rec:"));
            assert!(!tables["public.moods"].digest.starts_with("rec:"));
        }
        other => panic!("{other:?}"),
    }
    // A backup recorded with text digests only (before `rec:` existed) is recomputed that way.
    let legacy = match &recorded {
        blastwall_vault::facts::Facts::Tables { tables, integrity } => {
            let mut tables = tables.clone();
            for t in tables.values_mut() {
                t.digest = "0".into();
            }
            blastwall_vault::facts::Facts::Tables {
                tables,
                integrity: integrity.clone(),
            }
        }
        other => panic!("{other:?}"),
    };
    let like = |u: &str| {
        rt.block_on(blastwall_vault::source::postgres::facts_at(
            u,
            Some(&legacy),
        ))
        .unwrap()
    };
    assert_eq!(like(&glass), like(&target));
    match like(&glass) {
        blastwall_vault::facts::Facts::Tables { tables, .. } => {
            assert!(tables.values().all(|t| !t.digest.starts_with("rec:")));
            assert_ne!(tables["billing.invoices"].digest, "0");
        }
        other => panic!("{other:?}"),
    }
}

/// A backup is untrusted input to the drill: whoever holds the writer credential (production,
/// or a thief of it) chooses what the archive holds. A function the restore runs (through a
/// materialized view's refresh) that asks the server to run a program must not run it on the
/// drill host: the drill restores as a role without superuser rights, and fails.
/// A vault with a PostgreSQL source backed up, drilling every second, its drills' work
/// folders in a folder of the test's (returned); restarted so that its next round starts now.
fn vault_drilling_postgres() -> (VaultHost, Bw, PathBuf) {
    let cluster = blastwall_test::PgCluster::shared().unwrap();
    let url = cluster.fresh_database().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE t(id int, v text);
             INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 20000) i;",
        )
        .execute(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
    });
    let mut v = VaultHost::new(&["--drill-every", "1s"]);
    let prod = production(&v);
    add_source(&prod, "appdb", "postgres", &url);
    run_backup(&prod, "appdb", &[]);
    let tmp = v.bw.path().join("drill-tmp");
    std::fs::create_dir(&tmp).unwrap();
    v.stop();
    v.tmpdir = Some(tmp.clone());
    v.start();
    (v, prod, tmp)
}

/// The folder of the scratch cluster the vault's drill started after `after` log lines.
fn scratch_cluster_started(v: &VaultHost, after: usize) -> PathBuf {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let log = v.log_text();
        if let Some(line) = log
            .lines()
            .skip(after)
            .find(|l| l.contains("scratch cluster started"))
        {
            // Without the terminal colours.
            let mut plain = String::new();
            let mut in_escape = false;
            for c in line.chars() {
                match (in_escape, c) {
                    (false, '\u{1b}') => in_escape = true,
                    (true, 'm') => in_escape = false,
                    (false, c) => plain.push(c),
                    (true, _) => {}
                }
            }
            let dir = plain
                .split("dir=")
                .nth(1)
                .and_then(|d| d.split_whitespace().next())
                .unwrap_or_else(|| panic!("{line}"))
                .to_owned();
            return PathBuf::from(dir);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no drill started: {log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn postmaster_runs_in(dir: &Path) -> bool {
    let out = Command::new("pgrep")
        .args(["-f", &dir.display().to_string()])
        .output()
        .unwrap();
    out.status.success()
}

/// A vault stopped in the middle of a scheduled PostgreSQL drill stops its scratch cluster and
/// removes the decrypted dump before it exits: the cluster (trust authentication, production's
/// data) and the files stayed behind when the process ended under the drill's thread.
#[test]
fn a_stop_mid_drill_leaves_no_scratch_cluster_or_decrypted_files() {
    let (mut v, _prod, tmp) = vault_drilling_postgres();
    let scratch = scratch_cluster_started(&v, 0);
    v.stop();
    assert!(!scratch.exists(), "{} is still there", scratch.display());
    assert!(!postmaster_runs_in(&scratch));
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(
        !v.log_text().contains("did not stop cleanly"),
        "{}",
        v.log_text()
    );
}

/// What a drill killed with `kill -9` leaves (its scratch cluster, still running, and its
/// decrypted dump) is removed by the next drill on the host, which leaves other drills' folders
/// (their lock is held) alone.
#[test]
fn the_next_drill_removes_what_a_killed_one_left() {
    let (mut v, _prod, tmp) = vault_drilling_postgres();
    let scratch = scratch_cluster_started(&v, 0);
    v.kill9();
    std::thread::sleep(Duration::from_millis(300));
    // The cluster (in the shared temporary folder) may already be gone: any other drill on
    // this host sweeps it, as tests run side by side. The work folder is the test's own.
    let work: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(work.len(), 1, "{work:?}");
    let lines = v.log_text().lines().count();
    v.start();
    let next = scratch_cluster_started(&v, lines);
    assert_ne!(next, scratch);
    assert!(!scratch.exists(), "{} is still there", scratch.display());
    assert!(
        !postmaster_runs_in(&scratch),
        "the crashed drill's cluster still runs"
    );
    assert!(!work[0].exists(), "{} is still there", work[0].display());
    // The running drill's own folders were left alone.
    assert!(next.exists() || v.drills().iter().any(|d| d["actor"] == "vault serve"));
    v.stop();
}

#[test]
fn a_backup_cannot_run_code_on_the_drill_host() {
    let cluster = blastwall_test::PgCluster::shared().unwrap();
    let url = cluster.fresh_database().unwrap();
    let marker = tempfile::tempdir().unwrap();
    let marker_file = marker.path().join("pwned");
    // The scratch cluster may run as another user: let it write here if it can.
    std::fs::set_permissions(
        marker.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        // Harmless where it is created (another database name); armed in the drill's.
        let sql = format!(
            "CREATE TABLE t(x int); INSERT INTO t VALUES (1);
             CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $fn$
             BEGIN
               IF current_database() = 'drill' THEN
                 EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {}''';
               END IF;
               RETURN 1;
             END $fn$;
             CREATE MATERIALIZED VIEW mv AS SELECT f() AS one;",
            marker_file.display()
        );
        sqlx::raw_sql(&sql).execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    });
    let v = VaultHost::new(&[]);
    let prod = production(&v);
    add_source(&prod, "evil", "postgres", &url);
    run_backup(&prod, "evil", &[]);
    let o = v.drill("evil", &["--json"]);
    assert!(
        !marker_file.exists(),
        "the archive ran a program on the drill host"
    );
    assert!(!o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let rec: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rec[0]["passed"], false, "{rec}");
    assert!(
        rec[0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("pg_restore"),
        "{rec}"
    );
}

#[test]
fn a_damaged_part_a_missing_part_and_a_wrong_key_fail_the_drill() {
    let (v, prod, _) = vault_with_files_source();
    let ids: Vec<String> = (0..3)
        .map(|_| {
            run_backup(&prod, "files", &["--part-size", "16K"])["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();

    // One byte flipped in a part, as root could on the vault's disk.
    let part = v.backup_dir("files", &ids[0]).join("part-000001");
    let mut bytes = std::fs::read(&part).unwrap();
    bytes[100] ^= 0x01;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&part, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&part, &bytes).unwrap();
    let o = v.drill("files", &["--backup", &ids[0]]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("part 2 of") && stdout(&o).contains("is damaged"),
        "{}",
        stdout(&o)
    );

    // A part gone.
    std::fs::remove_file(v.backup_dir("files", &ids[1]).join("part-000002")).unwrap();
    let o = v.drill("files", &["--backup", &ids[1]]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("part 3 of") && stdout(&o).contains("is missing from the vault"),
        "{}",
        stdout(&o)
    );

    // The wrong identity.
    let other = Bw::new();
    let other_vault = other.path().join("v");
    other.ok(&["vault", "init", "--data", other_vault.to_str().unwrap()]);
    let o = v.drill(
        "files",
        &[
            "--backup",
            &ids[2],
            "--identity",
            other_vault.join("keys/backup.key").to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("cannot decrypt"), "{}", stdout(&o));

    // The same backup with the right key passes: the failure was the key's.
    let o = v.drill("files", &["--backup", &ids[2]]);
    assert!(o.status.success(), "{}", stdout(&o));

    // Every failure was recorded, and shows in the list.
    let list = v.bw.json(&["backup", "list"]);
    let failed = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["last_drill"]["passed"] == false)
        .count();
    assert_eq!(failed, 2, "{list}");
}

#[test]
fn the_writer_cannot_delete_overwrite_or_shorten_retention() {
    let (v, prod, _) = vault_with_files_source();
    let b = run_backup(&prod, "files", &[]);
    let id = b["id"].as_str().unwrap();

    let report = prod.json(&["backup", "check-immutability"]);
    assert_eq!(report["pass"], true, "{report}");
    let probes = report["probes"].as_array().unwrap();
    // Five attempts, the canary's retention and the control request.
    assert_eq!(probes.len(), 7, "{report}");
    assert!(probes.iter().all(|p| p["refused"] == true), "{report}");

    // The same, by hand over HTTP, and not even the admin deletes before retain-until.
    let manifest = format!("/v1/objects/backups/files/{id}/manifest.age");
    assert_eq!(http(&v.url, "DELETE", &manifest, &v.writer, b"", ""), 403);
    assert_eq!(http(&v.url, "DELETE", &manifest, &v.admin, b"", ""), 423);
    let other = b"other bytes";
    let sha = blastwall_vault::sha256_hex(other);
    assert_eq!(
        http(
            &v.url,
            "PUT",
            &manifest,
            &v.writer,
            other,
            &format!("x-blastwall-sha256: {sha}\r\n")
        ),
        409
    );
    let shorter = br#"{"retain_until":"2026-01-01T00:00:00Z"}"#;
    let ct = "Content-Type: application/json\r\n";
    // JSON bodies are read before the credential is checked: an anonymous client's large body
    // is refused at 64 KiB, not held.
    let mut big = b"{\"min_retention_secs\":1,\"pad\":\"".to_vec();
    big.extend(std::iter::repeat_n(b'x', 80 * 1024));
    big.extend_from_slice(b"\"}");
    for path in ["/v1/policy", "/v1/retention/x", "/v1/drills"] {
        let method = if path == "/v1/drills" { "POST" } else { "PUT" };
        assert_eq!(
            http(&v.url, method, path, "nobody", &big, ct),
            413,
            "{path}"
        );
    }
    assert_eq!(
        http(
            &v.url,
            "PUT",
            &format!("/v1/retention/backups/files/{id}/manifest.age"),
            &v.writer,
            shorter,
            ct
        ),
        403
    );
    assert_eq!(
        http(
            &v.url,
            "PUT",
            &format!("/v1/retention/backups/files/{id}/manifest.age"),
            &v.admin,
            shorter,
            ct
        ),
        403
    );
    assert_eq!(
        http(
            &v.url,
            "PUT",
            "/v1/policy",
            &v.admin,
            br#"{"min_retention_secs":60}"#,
            ct
        ),
        403
    );
    // A body that does not match its declared hash is refused.
    assert_eq!(
        http(
            &v.url,
            "PUT",
            "/v1/objects/canary/junk-x",
            &v.writer,
            b"abc",
            &format!("x-blastwall-sha256: {sha}\r\n")
        ),
        422
    );
    // Unknown credential.
    assert_eq!(
        http(&v.url, "GET", "/v1/list", "bwt_vault_nope", b"", ""),
        401
    );
    // The backup is still whole: a drill passes.
    assert!(v.drill("files", &[]).status.success());
    let audit = std::fs::read_to_string(v.data().join("audit.jsonl")).unwrap();
    assert!(audit.contains("object.delete.refused"), "{audit}");
    assert!(audit.contains("retention.shorten.refused"), "{audit}");
    let o =
        v.bw.run(&["vault", "recipient", "--data", v.data().to_str().unwrap()]);
    assert!(stdout(&o).starts_with("age1"));
    let health = http(&v.url, "GET", "/healthz", "", b"", "");
    assert_eq!(health, 200);
}

#[test]
fn kill_9_during_an_upload_leaves_no_partial_backup() {
    let mut v = VaultHost::new(&[]);
    // An upload that stops half-way: the vault is killed while the body streams in. (Outside
    // `backups/`, which takes objects only under a registered source.)
    let addr = v.url.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).unwrap();
    let sha = "0".repeat(64);
    write!(
        s,
        "PUT /v1/objects/canary/20990101T000000Z-partial HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nx-blastwall-sha256: {sha}\r\nContent-Length: 10000000\r\n\r\n",
        v.writer
    )
    .unwrap();
    s.write_all(&vec![1u8; 1_000_000]).unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    v.kill9();
    drop(s);
    let objects = v.data().join("objects");
    assert!(
        crate::support::all_files(&objects).is_empty(),
        "nothing visible after the kill"
    );
    v.start();
    assert!(crate::support::all_files(&v.data().join("tmp")).is_empty());

    // The next upload succeeds, and the list holds only complete backups.
    let prod = production(&v);
    let src = prod.path().join("files");
    make_tree(&src);
    add_source(&prod, "files", "dir", src.to_str().unwrap());
    run_backup(&prod, "files", &[]);
    let list = prod.json(&["backup", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert!(v.drill("files", &[]).status.success());
}

#[test]
fn a_vault_on_the_sources_filesystem_is_refused() {
    let v = VaultHost::new(&[]);
    let prod = production(&v);
    let src = v.bw.path().join("beside-the-vault");
    make_tree(&src);
    let o = prod.run(&[
        "backup",
        "source",
        "add",
        "files",
        "--kind",
        "dir",
        src.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("same filesystem"), "{}", stderr(&o));
}

#[test]
fn a_writer_over_its_quota_is_refused() {
    let v = VaultHost::new(&["--quota", "20K"]);
    let prod = production(&v);
    let src = prod.path().join("files");
    make_tree(&src);
    add_source(&prod, "files", "dir", src.to_str().unwrap());
    let o = prod.run(&["backup", "run", "files", "--part-size", "8K"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("quota exceeded"), "{}", stderr(&o));
    // The parts sent before the refusal are not a backup.
    assert!(
        prod.json(&["backup", "list"])
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// Every object counts its bytes plus 4 KiB (its metadata, inode and audit entry) against the
/// quota: empty objects were free, so a writer could create them without end under any quota.
#[test]
fn empty_objects_count_against_the_quota() {
    let v = VaultHost::new(&["--quota", "40K"]);
    let statuses: Vec<u16> = (0..11)
        .map(|i| put_object(&v.url, &v.writer, &format!("canary/empty-e{i}"), b""))
        .collect();
    assert_eq!(statuses[..10], [201; 10], "{statuses:?}");
    assert_eq!(statuses[10], 413, "{statuses:?}");
}

/// Uploads running at the same time each count against the quota before their bytes arrive:
/// eight parallel 8 KiB objects under a 20 KiB quota store at most two.
#[test]
fn parallel_uploads_cannot_pass_the_quota_together() {
    let v = VaultHost::new(&["--quota", "20K"]);
    let body = vec![b'q'; 8 * 1024];
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let mut b = body.clone();
                b[0] = b'a' + i as u8;
                let (url, writer) = (v.url.clone(), v.writer.clone());
                scope.spawn(move || put_object(&url, &writer, &format!("canary/parallel-o{i}"), &b))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let stored = statuses.iter().filter(|&&s| s == 201).count();
    assert!(stored <= 2, "{statuses:?}");
    assert!(stored >= 1, "{statuses:?}");
    assert!(
        statuses.iter().all(|&s| s == 201 || s == 413),
        "{statuses:?}"
    );
}

/// Reads from `s` until the peer closes it, up to 10 s (which fails the test): what it sent.
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return seen,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            // A reset is a close too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return seen,
            Err(e) => panic!("the vault did not close the connection: {e}"),
        }
    }
}

/// A `GET /healthz` on a kept-alive connection; true when the vault answered it.
fn healthz_kept_alive(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: v\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.ends_with(b"ok\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    seen.starts_with(b"HTTP/1.1 200")
}

/// The vault's clients cannot hold it: a connection that sends nothing, half a request head or
/// half a TLS handshake is closed after `--client-timeout`; an upload that stalls is dropped
/// (408, nothing stored, its quota given back); connections past `--max-connections` are closed
/// as they arrive, and counted. Before, a client that sent nothing held its connection forever
/// (plain HTTP) or 10 s (HTTPS), and nothing capped how many.
#[test]
fn slow_and_idle_clients_cannot_hold_the_vault() {
    let mut v = VaultHost::new(&["--quota", "20K"]);
    v.serve_with(&["--client-timeout", "1s", "--max-connections", "3"]);
    let addr = v.url.trim_start_matches("http://").to_owned();

    let started = std::time::Instant::now();
    let mut silent = TcpStream::connect(&addr).unwrap();
    assert!(read_until_closed(&mut silent).is_empty());
    let mut half_head = TcpStream::connect(&addr).unwrap();
    half_head
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: v\r\n")
        .unwrap();
    let answer = String::from_utf8(read_until_closed(&mut half_head)).unwrap();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(8));

    // An upload of 16 KiB that sends 100 bytes and stops.
    let body = vec![b's'; 16 * 1024];
    let sha = blastwall_vault::sha256_hex(&body);
    let mut stalled = TcpStream::connect(&addr).unwrap();
    write!(
        stalled,
        "PUT /v1/objects/canary/slow-o1 HTTP/1.1\r\nHost: v\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\nx-blastwall-sha256: {sha}\r\n\r\n",
        v.writer,
        body.len()
    )
    .unwrap();
    stalled.write_all(&body[..100]).unwrap();
    let answer = String::from_utf8(read_until_closed(&mut stalled)).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");
    // An upload that drips a byte well inside the limit, each time: under 1 KiB a limit, 408.
    let mut drip = TcpStream::connect(&addr).unwrap();
    write!(
        drip,
        "PUT /v1/objects/canary/drip-o2 HTTP/1.1\r\nHost: v\r\nAuthorization: Bearer {}\r\nContent-Length: 100\r\nx-blastwall-sha256: {sha}\r\n\r\n",
        v.writer,
    )
    .unwrap();
    let dripping = std::time::Instant::now();
    drip.set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    let mut answered = false;
    while dripping.elapsed() < Duration::from_secs(5) {
        // The vault has answered (or closed): stop dripping.
        if drip.peek(&mut [0u8; 1]).is_ok() || drip.write_all(b"d").is_err() {
            answered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = dripping.elapsed();
    drip.set_read_timeout(None).unwrap();
    let answer = String::from_utf8(read_until_closed(&mut drip)).unwrap_or_default();
    assert!(
        answered,
        "a dripping upload was still open after {took:?}: {answer}"
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert!(took < Duration::from_secs(4), "{took:?}");

    // Nothing was stored under either name, and the 20 KiB quota was given back.
    assert_eq!(put_object(&v.url, &v.writer, "canary/slow-o1", &body), 201);

    // A JSON body (read before the credential is checked) that never comes: 408 too.
    let mut json_stall = TcpStream::connect(&addr).unwrap();
    json_stall
        .write_all(b"PUT /v1/policy HTTP/1.1\r\nHost: v\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{")
        .unwrap();
    let answer = String::from_utf8(read_until_closed(&mut json_stall)).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // Three connections are the most; a fourth is closed without an answer, and counted.
    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            assert!(healthz_kept_alive(&mut s));
            s
        })
        .collect();
    let mut fourth = TcpStream::connect(&addr).unwrap();
    assert!(!healthz_kept_alive(&mut fourth));
    // A place freed is taken again; the refusal shows in the metrics.
    drop(held.pop());
    let mut metrics = String::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        if s.write_all(b"GET /metrics HTTP/1.1\r\nHost: v\r\nConnection: close\r\n\r\n")
            .is_ok()
        {
            metrics.clear();
            let _ = s.read_to_string(&mut metrics);
            if metrics.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // At least the fourth (attempts above may have come before the freed place was).
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("blastwall_vault_connections_refused_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(refused >= 1, "{metrics}");
    drop(held);

    // Over HTTPS, half a handshake is closed after the limit too.
    let mut v = VaultHost::https(&[]);
    v.serve_with(&["--client-timeout", "1s"]);
    let addr = v.url.trim_start_matches("https://").to_owned();
    let started = std::time::Instant::now();
    let mut half_hello = TcpStream::connect(&addr).unwrap();
    half_hello.write_all(b"\x16\x03\x01").unwrap();
    assert!(read_until_closed(&mut half_hello).is_empty());
    assert!(started.elapsed() < Duration::from_secs(8));
}

/// One writer cannot hold every connection of the vault with uploads that trickle: at most 8
/// of its uploads are in flight at once; the ninth gets 429 until one ends.
#[test]
fn a_writer_has_at_most_eight_uploads_in_flight() {
    let v = VaultHost::new(&[]);
    let addr = v.url.trim_start_matches("http://").to_owned();
    let body = vec![b'd'; 4096];
    let sha = blastwall_vault::sha256_hex(&body);
    let mut trickling: Vec<TcpStream> = (0..8)
        .map(|i| {
            let mut s = TcpStream::connect(&addr).unwrap();
            write!(
                s,
                "PUT /v1/objects/canary/drip-d{i} HTTP/1.1\r\nHost: v\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\nx-blastwall-sha256: {sha}\r\n\r\n",
                v.writer,
                body.len()
            )
            .unwrap();
            s.write_all(&body[..10]).unwrap();
            s
        })
        .collect();
    // The eight are in flight once the vault has read their heads (a ninth sent before that
    // could take one of their places).
    std::thread::sleep(Duration::from_millis(500));
    let mut status = 0;
    for k in 0..100 {
        status = put_object(
            &v.url,
            &v.writer,
            &format!("canary/drip-ninth{k}"),
            b"ninth",
        );
        if status == 429 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(status, 429);
    // Another writer is not held up by this one.
    let other = v.bw.ok(&[
        "vault",
        "credential",
        "add",
        "other-writer",
        "--role",
        "writer",
        "--data",
        v.data().to_str().unwrap(),
    ]);
    assert_eq!(
        put_object(&v.url, other.trim(), "canary/other-o", b"other"),
        201
    );
    // One finishes: the place is free again.
    let mut done = trickling.pop().unwrap();
    done.write_all(&body[10..]).unwrap();
    let mut answer = [0u8; 12];
    done.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 201");
    let mut status = 0;
    for _ in 0..100 {
        status = put_object(&v.url, &v.writer, "canary/drip-last", b"last");
        if status == 201 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(status, 201);
}

/// Refused requests cannot grow the vault's audit log at the request rate (anyone can send
/// them, and a full disk refuses the next backup): per actor, the first 60 a minute are written
/// one by one, the rest counted in one entry.
#[test]
fn refused_requests_cannot_flood_the_vault_audit_log() {
    let mut v = VaultHost::new(&[]);
    for i in 0..100 {
        let cred = if i % 2 == 0 {
            "bwv_not_a_credential"
        } else {
            ""
        };
        assert_eq!(http(&v.url, "GET", "/v1/list", cred, b"", ""), 401);
    }
    // The writer may not read: its refusals have their own budget.
    for _ in 0..3 {
        assert_eq!(
            http(&v.url, "GET", "/v1/objects/x", &v.writer, b"", ""),
            403
        );
    }
    v.stop();
    let d = v.data();
    let d = d.to_str().unwrap();
    let tail =
        v.bw.json(&["vault", "log", "tail", "-n", "500", "--data", d]);
    let entries = tail.as_array().unwrap();
    let one_by_one = |actor: &str| {
        entries
            .iter()
            .filter(|e| e["actor"] == actor && e["action"].as_str().unwrap().ends_with(".refused"))
            .count()
    };
    assert_eq!(one_by_one("vault:anonymous"), 60, "{tail:#}");
    assert_eq!(one_by_one("vault:prod-writer"), 3, "{tail:#}");
    let counted: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "refusals.suppressed")
        .collect();
    assert_eq!(counted.len(), 1, "{tail:#}");
    assert_eq!(counted[0]["actor"], "vault:anonymous");
    let detail: Value = serde_json::from_str(counted[0]["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["count"], 40, "{tail:#}");
    let ok = v.bw.json(&["vault", "log", "verify", "--data", d]);
    assert_eq!(ok["ok"], true, "{ok}");
}

/// One `vault serve` per folder: a second would keep its own quota counts and trusted clock and
/// fork the audit chain. It stops at start, saying why, and the first serves on.
#[test]
fn a_vault_folder_is_served_by_one_process() {
    let mut v = VaultHost::new(&[]);
    let o = v.bw.run(&[
        "vault",
        "serve",
        "--data",
        v.data().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("already served by another process"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        put_object(&v.url, &v.writer, "canary/one-o", b"still served"),
        201
    );
    // Once the first has stopped, the folder can be served again.
    v.stop();
    v.start();
    assert_eq!(
        put_object(&v.url, &v.writer, "canary/one-p", b"served again"),
        201
    );
    let d = v.data();
    let ok =
        v.bw.json(&["vault", "log", "verify", "--data", d.to_str().unwrap()]);
    assert_eq!(ok["ok"], true, "{ok}");
}

/// A leaked vault credential can be replaced or removed while the vault serves: the old secret
/// is refused from the next request; a rotated writer keeps its registered source.
#[test]
fn a_vault_credential_is_rotated_or_revoked_while_the_vault_serves() {
    let (v, prod, _) = vault_with_files_source();
    let d = v.data();
    let d = d.to_str().unwrap();
    let list = v.bw.json(&["vault", "credential", "list", "--data", d]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["prod-writer", "drills", "ops"]);
    assert!(!list.to_string().contains(&v.writer[10..]), "{list}");

    let new =
        v.bw.json(&["vault", "credential", "rotate", "prod-writer", "--data", d]);
    let new = new["credential"].as_str().unwrap().to_owned();
    assert_ne!(new, v.writer);
    assert_eq!(
        put_object(&v.url, &v.writer, "canary/rot-a", b"old secret"),
        401
    );
    assert_eq!(put_object(&v.url, &new, "canary/rot-a", b"new secret"), 201);
    // The rotated writer still owns the source it registered.
    let sha = blastwall_vault::sha256_hex(b"x");
    let status = http(
        &v.url,
        "PUT",
        "/v1/objects/backups/files/20260101T000000Z-aaaaaaaa/part-0001",
        &new,
        b"x",
        &format!("x-blastwall-sha256: {sha}\r\n"),
    );
    assert_eq!(status, 201);
    drop(prod);

    let o =
        v.bw.run(&["vault", "credential", "revoke", "drills", "--data", d]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(http(&v.url, "GET", "/v1/list", &v.reader, b"", ""), 401);
    let o =
        v.bw.run(&["vault", "credential", "revoke", "drills", "--data", d]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no vault credential named `drills`"),
        "{}",
        stderr(&o)
    );

    // Every change is in the vault's audit log, in order with what the running vault wrote
    // around it (a refusal after the last), and the chain holds.
    assert_eq!(
        put_object(&v.url, &v.writer, "canary/rot-b", b"old secret"),
        401
    );
    let log =
        v.bw.json(&["vault", "log", "tail", "-n", "100", "--data", d]);
    let changes: Vec<(String, String, String)> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("credential."))
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let changes: Vec<(&str, &str, &str)> = changes
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    assert_eq!(
        changes,
        [
            ("operator", "credential.add", "prod-writer"),
            ("operator", "credential.add", "drills"),
            ("operator", "credential.add", "ops"),
            ("operator", "credential.rotate", "prod-writer"),
            ("operator", "credential.revoke", "drills"),
        ],
        "{log:#}"
    );
    let last = log.as_array().unwrap().last().unwrap();
    assert_eq!(last["actor"], "vault:anonymous", "{last:#}");
    let o = v.bw.run(&["vault", "log", "verify", "--data", d]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        !log.to_string().contains(&new[10..]),
        "a secret is in the log"
    );
}

/// A writer chooses backup ids, and ids carry a time: a forged backup dated in the future must
/// not become every later drill's "latest", nor make the source's recovery point look fresh.
/// The latest backup is the one the vault received last, and a backup's time is never later
/// than its receipt.
#[test]
fn a_future_dated_backup_does_not_stay_the_latest() {
    let (v, prod, _) = vault_with_files_source();
    // A forged manifest dated 2999, planted with the writer credential.
    assert_eq!(
        put_object(
            &v.url,
            &v.writer,
            "backups/files/29991231T235959Z-000000/manifest.age",
            b"not a manifest",
        ),
        201
    );
    let b = run_backup(&prod, "files", &[]);
    let o = v.drill("files", &["--json"]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let rec: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rec[0]["backup"], b["id"], "{rec}");
    assert_eq!(rec[0]["passed"], true, "{rec}");
    // The forged one, drilled by name, fails; its time is its receipt, not 2999.
    let o = v.drill("files", &["--backup", "29991231T235959Z-000000", "--json"]);
    let rec: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rec[0]["passed"], false, "{rec}");
    assert!(
        !rec[0]["taken_at"]
            .as_str()
            .unwrap_or("2999")
            .starts_with("2999"),
        "{rec}"
    );
    assert!(rec[0]["rpo_secs"].as_i64().unwrap_or(-1) >= 0, "{rec}");
}

/// A backup's manifest is the writer's word: one that says it restores to an exabyte fails its
/// drill at once, naming the room the drill host has, instead of fetching and decompressing
/// until the host's disk (which may be the vault's) is full.
#[test]
fn a_backup_bigger_than_the_drill_host_fails_before_it_fills_the_disk() {
    use blastwall_vault::facts::Facts;
    use blastwall_vault::keys::BackupRecipient;
    use blastwall_vault::manifest::{Manifest, manifest_name};

    let (v, _prod, _) = vault_with_files_source();
    let id = "20260102T000000Z-0b0b0b";
    let recipient =
        v.bw.ok(&["vault", "recipient", "--data", v.data().to_str().unwrap()]);
    let recipient = BackupRecipient::parse(recipient.trim()).unwrap();
    let manifest = Manifest {
        format: blastwall_vault::manifest::FORMAT,
        id: id.to_owned(),
        source: "files".to_owned(),
        kind: "dir".to_owned(),
        location: "/srv/files".to_owned(),
        taken_at: "2026-01-02T00:00:00Z".to_owned(),
        finished_at: "2026-01-02T00:00:01Z".to_owned(),
        tools: Default::default(),
        part_size: 8 << 20,
        parts: vec![],
        plain_bytes: 1 << 60,
        plain_blake3: "0".repeat(64),
        facts: Facts::Files { files: vec![] },
    };
    let sealed = manifest.encrypt(&recipient).unwrap();
    let name = manifest_name("files", id);
    assert_eq!(put_object(&v.url, &v.writer, &name, &sealed), 201);
    let o = v.drill("files", &["--backup", id, "--json"]);
    let rec: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rec[0]["passed"], false, "{rec}");
    let reason = rec[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("needs 2305843009213693952 bytes") && reason.contains("to spare"),
        "{reason}"
    );
}

/// A manifest is held in memory to be decrypted and parsed: one bigger than any real backup's
/// (256 MiB) fails the drill as it arrives, rather than making every drill hold it, and more.
#[test]
fn an_oversized_manifest_fails_the_drill_without_being_held() {
    let (v, _prod, _) = vault_with_files_source();
    let id = "20260102T000000Z-0c0c0c";
    let name = format!("backups/files/{id}/manifest.age");
    let junk = vec![b'm'; (256 << 20) + 1];
    assert_eq!(put_object(&v.url, &v.writer, &name, &junk), 201);
    drop(junk);
    let o = v.drill("files", &["--backup", id, "--json"]);
    let rec: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("{}{}", stdout(&o), stderr(&o)));
    assert_eq!(rec[0]["passed"], false, "{rec}");
    let reason = rec[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("is larger than 268435456 bytes"),
        "{reason}"
    );
}

/// Backups go under a registered source, and only the writer that registered it adds to it: a
/// writer cannot start sources at will (each would be drilled every round) or plant backups in
/// another writer's source.
#[test]
fn writers_add_backups_only_to_their_own_registered_sources() {
    let (v, prod, _) = vault_with_files_source();
    run_backup(&prod, "files", &[]);
    let other =
        v.bw.ok(&[
            "vault",
            "credential",
            "add",
            "eu-writer",
            "--role",
            "writer",
            "--data",
            v.data().to_str().unwrap(),
        ])
        .trim()
        .to_owned();
    let put = |cred: &str, path: &str| {
        let name = path.strip_prefix("/v1/objects/").unwrap_or(path);
        put_object(&v.url, cred, name, b"a part")
    };
    // Another writer, into this writer's source: refused.
    assert_eq!(
        put(
            &other,
            "/v1/objects/backups/files/29990101T000000Z-000000/part-000000"
        ),
        403
    );
    // Any writer, into a source nobody registered: refused.
    assert_eq!(
        put(
            &v.writer,
            "/v1/objects/backups/unregistered/20260101T000000Z-000000/part-000000"
        ),
        403
    );
    // The registering writer, into its own source: accepted.
    assert_eq!(
        put(
            &v.writer,
            "/v1/objects/backups/files/20260101T000000Z-000000/part-000000"
        ),
        201
    );
}

/// A drill needs room for the restore too, not only for the fetch: a folder of 30 MiB of zeros
/// (sealed, a few KiB) fetches into 30 MiB and unpacks into 30 more. On a drill host with room
/// for one but not both, the drill fails before it fetches, naming the space, rather than
/// filling the disk mid-restore.
#[test]
fn a_drill_checks_room_for_the_restore_too() {
    let (v, prod, src) = vault_with_files_source();
    std::fs::write(src.join("zeros.bin"), vec![0u8; 30 << 20]).unwrap();
    run_backup(&prod, "files", &[]);
    let mnt = v.bw.path().join("small-tmp");
    let Some(_guard) = Tmpfs::mount(&mnt, "48m") else {
        return;
    };
    let o =
        v.bw.std_cmd()
            .args(["backup", "drill", "files", "--latest-only", "--json"])
            .env("TMPDIR", &mnt)
            .output()
            .unwrap();
    let rec: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("{}{}", stdout(&o), stderr(&o)));
    assert_eq!(rec[0]["passed"], false, "{rec}");
    let reason = rec[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("then the dir restore") && reason.contains("to spare"),
        "{reason}"
    );
    // Nothing was left on the small disk, and with the system's temporary folder it passes.
    assert_eq!(std::fs::read_dir(&mnt).unwrap().count(), 0);
    let o = v.drill("files", &["--json"]);
    let rec: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rec[0]["passed"], true, "{rec}");
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`1m`) on a new folder `at`; `None`, said on stderr, where this
    /// process may not mount (it needs root; CI runs as root), and the test cannot build its disk.
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir(at).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        if !mounted.status.success() {
            eprintln!(
                "skipping: cannot mount a tmpfs: {}",
                String::from_utf8_lossy(&mounted.stderr)
            );
            return None;
        }
        Some(Self(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_loses_no_earlier_backup() {
    let host = Bw::new();
    let mnt = host.path().join("small");
    let Some(_guard) = Tmpfs::mount(&mnt, "1m") else {
        return;
    };
    let vault_data = mnt.join("vault");
    host.ok(&["vault", "init", "--data", vault_data.to_str().unwrap()]);
    let writer = host
        .ok(&[
            "vault",
            "credential",
            "add",
            "w",
            "--role",
            "writer",
            "--data",
            vault_data.to_str().unwrap(),
        ])
        .trim()
        .to_owned();
    let mut child = host
        .std_cmd()
        .args(["vault", "serve", "--data"])
        .arg(&vault_data)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(a) = line.split("listening on ").nth(1) {
            break a.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let prod = production_host();
    let o = prod.run_stdin(
        &[
            "backup",
            "target",
            "add",
            "t",
            "--url",
            &url,
            "--env",
            "production",
            "--credential-stdin",
        ],
        &writer,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let small = prod.path().join("small");
    std::fs::create_dir(&small).unwrap();
    std::fs::write(small.join("a"), "first backup").unwrap();
    add_source(&prod, "small", "dir", small.to_str().unwrap());
    let first = run_backup(&prod, "small", &[]);

    let big = prod.path().join("big");
    std::fs::create_dir(&big).unwrap();
    let mut noise = Vec::new();
    let mut x: u64 = 99;
    for _ in 0..3_000_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.push(x as u8);
    }
    std::fs::write(big.join("noise"), noise).unwrap();
    add_source(&prod, "big", "dir", big.to_str().unwrap());
    let o = prod.run(&["backup", "run", "big", "--part-size", "256K"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("disk is full"), "{}", stderr(&o));

    // Nothing partial stays in the upload folder, and the first backup is whole.
    assert!(crate::support::all_files(&vault_data.join("tmp")).is_empty());
    let list = prod.json(&["backup", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], first["id"]);
    let _ = child.kill();
    let _ = child.wait();
    // The audit log is whole (an append cut short by the full disk is rolled back, not left as a
    // torn line that would stop the vault from starting again).
    host.ok(&[
        "vault",
        "log",
        "verify",
        "--data",
        vault_data.to_str().unwrap(),
    ]);
    let out = host.path().join("restored");
    // Decrypt the first backup by hand: every part is intact.
    let dir = vault_data
        .join("objects/backups/small")
        .join(first["id"].as_str().unwrap());
    std::fs::create_dir(&out).unwrap();
    let script = format!(
        "set -euo pipefail; cat {}/part-* | age -d -i {} | zstd -d | tar -x -C {}",
        dir.display(),
        vault_data.join("keys/backup.key").display(),
        out.display()
    );
    let o = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(out.join("a")).unwrap(),
        "first backup"
    );
}

#[test]
fn vault_serve_runs_scheduled_drills() {
    let v = VaultHost::new(&["--drill-every", "1s"]);
    let prod = production(&v);
    let src = prod.path().join("files");
    make_tree(&src);
    add_source(&prod, "files", "dir", src.to_str().unwrap());
    run_backup(&prod, "files", &[]);
    v.wait_for_drill(|d| d["actor"] == "vault serve" && d["passed"] == true);
    let list = prod.json(&["backup", "list"]);
    assert_eq!(list[0]["last_drill"]["passed"], true, "{list}");
}

/// A vault restarted more often than `--drill-every` still drills: the first round after a
/// start comes when the interval since the last scheduled drill on record has passed (at once
/// when there is none), not a whole interval after each start.
#[test]
fn scheduled_drills_survive_restarts_shorter_than_the_interval() {
    let mut v = VaultHost::new(&["--drill-every", "6s"]);
    let prod = production(&v);
    let src = prod.path().join("files");
    make_tree(&src);
    add_source(&prod, "files", "dir", src.to_str().unwrap());
    run_backup(&prod, "files", &[]);
    let scheduled = |v: &VaultHost| {
        v.drills()
            .into_iter()
            .filter(|d| d["actor"] == "vault serve" && d["passed"] == true)
            .count()
    };
    let started = std::time::Instant::now();
    while scheduled(&v) == 0 && started.elapsed() < Duration::from_secs(12) {
        std::thread::sleep(Duration::from_millis(1_500));
        v.stop();
        v.start();
    }
    assert!(scheduled(&v) > 0, "{:#?}", v.drills());
    // Restarted again at once, it does not drill again before the interval has passed.
    let before = v.drills().len();
    v.stop();
    v.start();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(v.drills().len(), before, "{:#?}", v.drills());
}

#[test]
fn vault_log_verify_names_an_edited_deleted_or_reordered_entry() {
    let (v, prod, _) = vault_with_files_source();
    run_backup(&prod, "files", &[]);
    run_backup(&prod, "files", &[]);
    let data = v.data();
    let d = data.to_str().unwrap();
    let ok = v.bw.json(&["vault", "log", "verify", "--data", d]);
    assert_eq!(ok["ok"], true, "{ok}");
    let n = ok["entries"].as_u64().unwrap();
    assert!(n >= 4, "{ok}");
    let tail = v.bw.json(&["vault", "log", "tail", "-n", "2", "--data", d]);
    assert_eq!(tail.as_array().unwrap().len(), 2, "{tail}");

    let log = data.join("audit.jsonl");
    let original = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let verify = |text: String| {
        std::fs::write(&log, text).unwrap();
        let o = v.bw.run(&["vault", "log", "verify", "--data", d]);
        assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
        stdout(&o)
    };
    // An entry edited (its size changed): the first object created, after the credentials.
    let mut edited = lines.clone();
    let at = lines
        .iter()
        .position(|l| l.contains("object.create"))
        .unwrap();
    let changed = lines[at].replace("object.create", "object.cre8te");
    edited[at] = &changed;
    let out = verify(edited.join("\n") + "\n");
    assert!(
        out.contains(&format!("entry {n} (line {n})", n = at + 1)) && out.contains("altered"),
        "{out}"
    );
    // An entry deleted.
    let mut deleted = lines.clone();
    deleted.remove(1);
    let out = verify(deleted.join("\n") + "\n");
    assert!(
        out.contains("line 2") && out.contains("entry 2 is missing"),
        "{out}"
    );
    // Two entries swapped.
    let mut swapped = lines.clone();
    swapped.swap(1, 2);
    let out = verify(swapped.join("\n") + "\n");
    assert!(out.contains("line 2"), "{out}");
    // Put back, it verifies again.
    std::fs::write(&log, &original).unwrap();
    v.bw.ok(&["vault", "log", "verify", "--data", d]);
}

#[test]
fn backups_and_drills_over_https_with_a_ca_file() {
    let v = VaultHost::https(&["--drill-every", "1s"]);
    assert!(v.url.starts_with("https://"), "{}", v.url);
    let cert = v.cert().to_str().unwrap().to_owned();

    // Production trusts the vault's certificate through `--ca-file`.
    let prod = production_host();
    let add = |bw: &Bw, name: &str, url: &str, extra: &[&str]| {
        let mut args = vec![
            "backup",
            "target",
            "add",
            name,
            "--url",
            url,
            "--env",
            "production",
            "--credential-stdin",
        ];
        args.extend_from_slice(extra);
        bw.run_stdin(&args, &v.writer)
    };
    let o = add(&prod, "offsite", &v.url, &["--ca-file", &cert]);
    assert!(o.status.success(), "{}", stderr(&o));
    let src = prod.path().join("files");
    make_tree(&src);
    add_source(&prod, "files", "dir", src.to_str().unwrap());
    let b = run_backup(&prod, "files", &["--part-size", "16K"]);
    assert!(b["parts"].as_u64().unwrap() > 1, "{b}");
    let o = v.drill("files", &["--json"]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let report = prod.json(&["backup", "check-immutability"]);
    assert_eq!(report["pass"], true, "{report}");

    // The scheduler inside `vault serve` drills over the same HTTPS port.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let drills = std::fs::read_to_string(v.data().join("drills.jsonl")).unwrap_or_default();
        if drills.contains("\"actor\":\"vault serve\"") {
            assert!(drills.contains("\"passed\":true"), "{drills}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", v.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }

    // Without the CA file the certificate is not trusted: refused, with a clear reason.
    let other = production_host();
    let o = add(&other, "offsite", &v.url, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("certificate") && err.contains("--ca-file"),
        "{err}"
    );
    // Not even with `--recipient`, which lets an unreachable vault be added for later.
    let recipient = b["id"].as_str().map(|_| {
        std::fs::read_to_string(v.data().join("recipient.txt"))
            .unwrap()
            .trim()
            .to_owned()
    });
    let o = add(
        &other,
        "offsite",
        &v.url,
        &["--recipient", recipient.as_deref().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("certificate"), "{}", stderr(&o));
    assert!(!other.path().join("data/backup.json").exists());

    // Plain HTTP to the HTTPS port gets a plain answer saying so.
    let plain = v.url.replacen("https://", "http://", 1);
    let o = add(&other, "plain", &plain, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("serves HTTPS only"), "{}", stderr(&o));
    // Even with `--recipient` (which lets a target be added while its vault is down), and the
    // hint says to replace the credential that crossed in clear.
    let o = add(
        &other,
        "plain",
        &plain,
        &["--recipient", recipient.as_deref().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("serves HTTPS only"), "{}", stderr(&o));
    assert!(stderr(&o).contains("replace it"), "{}", stderr(&o));
    assert!(!other.path().join("data/backup.json").exists());

    // A certificate or key that cannot be used stops `vault serve` at start, naming the file.
    let bogus = v.bw.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    let o = v.bw.run(&[
        "vault",
        "serve",
        "--data",
        v.data().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        bogus.to_str().unwrap(),
        "--tls-key",
        v.tls.as_ref().unwrap().1.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("bogus.pem") && stderr(&o).contains("no PEM certificate"),
        "{}",
        stderr(&o)
    );
    let o = v.bw.run(&[
        "vault",
        "serve",
        "--data",
        v.data().to_str().unwrap(),
        "--tls-cert",
        &cert,
    ]);
    assert_eq!(o.status.code(), Some(2), "both or neither: {}", stderr(&o));
}

#[test]
fn the_vault_credential_is_sealed_at_rest() {
    let v = VaultHost::new(&[]);
    let mut prod = production(&v);
    let src = prod.path().join("srv-files");
    make_tree(&src);
    add_source(&prod, "files", "dir", src.to_str().unwrap());
    run_backup(&prod, "files", &[]);
    assert!(v.drill("files", &[]).status.success());

    // No credential in the clear anywhere: not in backup.json, not under either data folder.
    let state: Value =
        serde_json::from_slice(&std::fs::read(prod.data().join("backup.json")).unwrap()).unwrap();
    let t = &state["targets"]["offsite"];
    assert_eq!(t["sealed_credential"]["env"], "production", "{state}");
    assert!(t.get("credential").is_none(), "{state}");
    for (host, files) in [
        ("production", crate::support::all_files(prod.path())),
        ("vault host", crate::support::all_files(v.bw.path())),
    ] {
        assert!(!files.is_empty());
        for (path, bytes) in files {
            for secret in [&v.writer, &v.reader, &v.admin] {
                assert!(
                    !crate::support::contains(&bytes, secret.as_bytes()),
                    "a credential in the clear in {} on the {host}",
                    path.display()
                );
            }
        }
    }

    // Without the production key the credential stays sealed: nothing is sent.
    let key = prod.data().join("keys/production.key");
    let moved = prod.path().join("production.key");
    std::fs::rename(&key, &moved).unwrap();
    let o = prod.run(&["backup", "run", "files"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("sealed to environment `production`")
            && stderr(&o).contains("BLASTWALL_ENV_KEY_PRODUCTION"),
        "{}",
        stderr(&o)
    );
    // The key from a variable opens it (as on a host that keeps keys out of files).
    prod.extra_env.push((
        "BLASTWALL_ENV_KEY_PRODUCTION".into(),
        std::fs::read_to_string(&moved).unwrap(),
    ));
    run_backup(&prod, "files", &[]);
    prod.extra_env.clear();
    std::fs::rename(&moved, &key).unwrap();

    // A backup.json edited to point the target at another host does not send the credential
    // there: the URL is sealed with it.
    let mut moved_target = state.clone();
    moved_target["targets"]["offsite"]["url"] = Value::String("http://127.0.0.1:9".into());
    std::fs::write(
        prod.data().join("backup.json"),
        serde_json::to_vec_pretty(&moved_target).unwrap(),
    )
    .unwrap();
    let o = prod.run(&["backup", "run", "files"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("was sealed for `http://127.0.0.1:")
            && stderr(&o).contains("now points at `http://127.0.0.1:9`"),
        "{}",
        stderr(&o)
    );
    std::fs::write(
        prod.data().join("backup.json"),
        serde_json::to_vec_pretty(&state).unwrap(),
    )
    .unwrap();
    run_backup(&prod, "files", &[]);

    // A backup.json from before sealing (the credential in plain text) fails closed ...
    let mut old = state.clone();
    old["targets"]["offsite"]
        .as_object_mut()
        .unwrap()
        .remove("sealed_credential");
    old["targets"]["offsite"]["credential"] = Value::String(v.writer.clone());
    std::fs::write(
        prod.data().join("backup.json"),
        serde_json::to_vec_pretty(&old).unwrap(),
    )
    .unwrap();
    let o = prod.run(&["backup", "run", "files"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("plain text")
            && stderr(&o).contains("hint: add it again, sealed")
            && !stderr(&o).contains(&v.writer),
        "{}",
        stderr(&o)
    );
    // ... until the target is added again, which replaces the entry and drops the plain text.
    let o = prod.run_stdin(
        &[
            "backup",
            "target",
            "add",
            "offsite",
            "--url",
            &v.url,
            "--env",
            "production",
            "--credential-stdin",
        ],
        &v.writer,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read(prod.data().join("backup.json")).unwrap();
    assert!(!crate::support::contains(&text, v.writer.as_bytes()));
    run_backup(&prod, "files", &[]);

    // A target with nothing to seal to is refused.
    let o = Bw::new().run_stdin(
        &[
            "backup",
            "target",
            "add",
            "x",
            "--url",
            &v.url,
            "--credential-stdin",
        ],
        &v.writer,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--env ENV"), "{}", stderr(&o));
}

/// A drill that cannot run is filed under the source's latest backup, the one the vault
/// received last: not under the largest id, which the writer chooses (a planted `9999…` id
/// would take every failure, and the real latest backup would keep showing its last pass).
#[test]
fn a_planted_backup_id_does_not_take_the_latest_backups_failures() {
    let v = VaultHost::new(&["--drill-every", "1s"]);
    let prod = production(&v);
    let src = prod.path().join("files");
    make_tree(&src);
    add_source(&prod, "files", "dir", src.to_str().unwrap());
    let planted = "backups/files/99991231T000000Z-000000/manifest.age";
    assert_eq!(put_object(&v.url, &v.writer, planted, b"junk"), 201);
    let b = run_backup(&prod, "files", &[]);
    let id = b["id"].as_str().unwrap().to_owned();
    std::fs::rename(
        v.data().join("keys/backup.key"),
        v.data().join("keys/backup.key.away"),
    )
    .unwrap();
    let d = v.wait_for_drill(|d| {
        d["actor"] == "vault serve"
            && d["reason"]
                .as_str()
                .is_some_and(|r| r.contains("cannot read the backup identity"))
    });
    assert_eq!(d["backup"], id.as_str(), "{d}");
}

#[test]
fn a_scheduled_drill_that_cannot_run_is_a_failure_never_a_skip() {
    let mut v = VaultHost::new(&["--drill-every", "1s"]);
    let prod = production(&v);
    let src = prod.path().join("files");
    make_tree(&src);
    // Registered by `source add`, but never backed up: once its first interval has passed, each
    // round records a failed drill.
    add_source(&prod, "files", "dir", src.to_str().unwrap());
    let scheduled = |d: &Value| d["actor"] == "vault serve" && d["source"] == "files";
    let d = v.wait_for_drill(|d| scheduled(d) && d["passed"] == false);
    let reason = d["reason"].as_str().unwrap();
    assert!(reason.contains("no backup of `files` in the vault"), "{d}");
    let list = prod.json(&["backup", "list"]);
    assert_eq!(list[0]["id"], "-", "{list}");
    assert_eq!(list[0]["last_drill"]["passed"], false, "{list}");
    let table = prod.ok(&["backup", "list"]);
    assert!(table.contains("files") && table.contains("FAIL"), "{table}");
    let audit = std::fs::read_to_string(v.data().join("audit.jsonl")).unwrap();
    assert!(audit.contains("no backup of `files`"), "{audit}");

    // A backup arrives: the next scheduled drill passes.
    let b = run_backup(&prod, "files", &["--part-size", "16K"]);
    let id = b["id"].as_str().unwrap().to_owned();
    v.wait_for_drill(|d| scheduled(d) && d["backup"] == id.as_str() && d["passed"] == true);

    // The identity cannot be read: every source's drill fails, with the reason.
    let key = v.data().join("keys/backup.key");
    let away = v.data().join("keys/backup.key.away");
    std::fs::rename(&key, &away).unwrap();
    let d = v.wait_for_drill(|d| {
        scheduled(d)
            && d["reason"]
                .as_str()
                .is_some_and(|r| r.contains("cannot read the backup identity"))
    });
    assert_eq!(d["backup"], id.as_str(), "{d}");
    assert_eq!(
        prod.json(&["backup", "list"])[0]["last_drill"]["passed"],
        false
    );
    std::fs::rename(&away, &key).unwrap();

    // A part goes missing: the scheduled drill fails naming it.
    std::fs::remove_file(v.backup_dir("files", &id).join("part-000001")).unwrap();
    v.wait_for_drill(|d| {
        scheduled(d)
            && d["reason"]
                .as_str()
                .is_some_and(|r| r.contains("part 2 of") && r.contains("is missing"))
    });

    // On the command line, a drill that cannot run (the vault is down) is exit 1 with the
    // reason, not a usage error.
    v.kill9();
    let o = v.drill("files", &[]);
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("FAIL") && stdout(&o).contains("the drill could not run"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_writer_cannot_register_sources_without_end() {
    // Each registered source costs a drill (and, without backups, a recorded failure) every
    // round: the vault stops accepting new registrations at its limit, and says why.
    let v = VaultHost::new(&[]);
    let put = |name: &str| {
        let body = format!("{{\"source\":\"{name}\",\"kind\":\"dir\"}}");
        put_object(
            &v.url,
            &v.writer,
            &format!("sources/{name}"),
            body.as_bytes(),
        )
    };
    for i in 0..blastwall_vault::server::MAX_SOURCES {
        assert_eq!(put(&format!("flood-{i}")), 201, "registration {i}");
    }
    assert_eq!(put("one-too-many"), 403);
    // Registering a name again is still fine (create-only: the same bytes are a no-op).
    assert_eq!(put("flood-0"), 200);
    // The refusal is in the vault's own audit log.
    let audit = std::fs::read_to_string(v.data().join("audit.jsonl")).unwrap();
    let refusal = audit
        .lines()
        .find(|l| l.contains("too many sources"))
        .unwrap_or_else(|| panic!("no refusal in the audit log:\n{audit}"));
    assert!(refusal.contains("sources/one-too-many"), "{refusal}");
}

/// An upload its client abandons (the connection closed, or the HTTP/2 stream reset, while the
/// vault writes what arrived) leaves no file behind and gives its quota back: otherwise a writer
/// could fill the vault's disk past its quota with uploads it never finishes.
#[test]
fn abandoned_uploads_leave_nothing_behind() {
    let v = VaultHost::new(&[]);
    let addr = v.url.trim_start_matches("http://").to_owned();
    let tmp = v.data().join("tmp");
    assert!(tmp.is_dir(), "{}", tmp.display());
    let body = vec![b'a'; 4 << 20];
    let sha = blastwall_vault::sha256_hex(&body);
    // Each abandoned upload must be gone before the next starts: a writer has only
    // `MAX_UPLOADS_PER_WRITER` places, and an upload the vault has not yet seen abandoned still
    // holds one (a refused upload would be closed before its body is sent, and test nothing).
    let all_gone = |tmp: &Path| {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let left: Vec<_> = std::fs::read_dir(tmp)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .collect();
            if left.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "left behind: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    for i in 0..10 {
        all_gone(&tmp);
        let mut s = TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "PUT /v1/objects/canary/gone-g{i} HTTP/1.1\r\nHost: v\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\nx-blastwall-sha256: {sha}\r\n\r\n",
            v.writer,
            body.len()
        )
        .unwrap();
        // Most of it, so that the vault is writing when the client goes.
        s.write_all(&body[..(3 << 20) + i * 4096]).unwrap();
        drop(s);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for i in 0..10 {
            all_gone(&tmp);
            let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
            let conn = tokio::spawn(conn);
            let mut h2 = h2.ready().await.unwrap();
            let req = http::Request::put(format!("http://{addr}/v1/objects/canary/gone-h{i}"))
                .header("authorization", format!("Bearer {}", v.writer))
                .header("content-length", body.len())
                .header("x-blastwall-sha256", &sha)
                .body(())
                .unwrap();
            let (_answer, mut stream) = h2.send_request(req, false).unwrap();
            stream.reserve_capacity(3 << 20);
            stream
                .send_data(
                    bytes::Bytes::copy_from_slice(&body[..(3 << 20) + i * 4096]),
                    false,
                )
                .unwrap();
            tokio::time::sleep(Duration::from_millis(5 * i as u64)).await;
            stream.send_reset(h2::Reason::CANCEL);
            tokio::time::sleep(Duration::from_millis(20)).await;
            conn.abort();
        }
    });
    all_gone(&tmp);
    // The quota reserved for them is free again: a writer limited to one upload's size can
    // still upload.
    assert_eq!(
        put_object(&v.url, &v.writer, "canary/gone-after", b"after"),
        201
    );
}

/// A writer creates objects only under the names clients write: a name of many segments would
/// make a folder per segment in `objects/` and `meta/` (hundreds of times what the object is
/// charged), and an object named `backups` would take the folder every backup needs.
#[test]
fn a_writer_creates_only_the_names_backups_use() {
    let v = VaultHost::new(&[]);
    let deep = format!("d0{}/x", "/a".repeat(250));
    for name in [deep.as_str(), "backups", "sources", "junk/x"] {
        assert_eq!(put_object(&v.url, &v.writer, name, b""), 400, "{name}");
    }
    let folders = |sub: &str| {
        std::fs::read_dir(v.data().join(sub))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
    };
    assert!(folders("objects").is_empty(), "{:?}", folders("objects"));
    assert!(folders("meta").is_empty(), "{:?}", folders("meta"));
    // Backups still go in.
    let prod = production(&v);
    let src = prod.path().join("files");
    make_tree(&src);
    add_source(&prod, "files", "dir", src.to_str().unwrap());
    run_backup(&prod, "files", &[]);
}

/// A change the vault made but could not record (the audit log took no append) is recorded
/// once the log takes appends again, before anything else, and meanwhile the vault makes no
/// further change: a retried upload that found its object stored was answered "already there"
/// and never audited.
#[test]
fn a_change_the_log_could_not_take_is_recorded_later_and_holds_further_changes() {
    let v = VaultHost::new(&[]);
    let log = v.data().join("audit.jsonl");
    let aside = v.data().join("audit.jsonl.aside");
    assert_eq!(put_object(&v.url, &v.writer, "canary/first", b"1"), 201);
    // The log cannot be opened for appends: stored, but not recorded.
    std::fs::rename(&log, &aside).unwrap();
    std::fs::create_dir(&log).unwrap();
    assert_eq!(put_object(&v.url, &v.writer, "canary/second", b"2"), 500);
    // Its retry, and any other change, is refused while the entry waits.
    assert_eq!(put_object(&v.url, &v.writer, "canary/second", b"2"), 503);
    assert_eq!(put_object(&v.url, &v.writer, "canary/third", b"3"), 503);
    assert_eq!(http(&v.url, "GET", "/healthz", "", b"", ""), 503);
    // The log is back: the waiting entry goes first, then the next change.
    std::fs::remove_dir(&log).unwrap();
    std::fs::rename(&aside, &log).unwrap();
    // Health comes back with the log (the kept entry is written then), not a minute later.
    assert_eq!(http(&v.url, "GET", "/healthz", "", b"", ""), 200);
    assert_eq!(put_object(&v.url, &v.writer, "canary/third", b"3"), 201);
    let d = v.data();
    let tail = v.bw.json(&[
        "vault",
        "log",
        "tail",
        "-n",
        "2",
        "--data",
        d.to_str().unwrap(),
    ]);
    let created: Vec<&str> = tail
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "object.create")
        .map(|e| e["target"].as_str().unwrap())
        .collect();
    assert_eq!(created, ["canary/second", "canary/third"], "{tail:#}");
    let o =
        v.bw.run(&["vault", "log", "verify", "--data", d.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}
