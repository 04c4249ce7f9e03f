//! `blastwall serve`: the real binary in front of fake upstreams speaking real HTTP on loopback.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blastwall_test::FakeUpstream;
use blastwall_test::fake::FIRST_CHUNK;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::support::{Bw, all_files, contains, stderr};

const PROD_SECRET: &str = "rw_PROD_gw_canary_9d8c7b6a5f4e3d2c";
const STAGING_SECRET: &str = "rw_STAGING_gw_canary_1a2b3c4d5e6f7a8b";
const REST_SECRET: &str = "rest_STAGING_gw_canary_0f1e2d3c4b5a";

/// A running `blastwall serve`; killed when dropped. Its stderr is collected.
pub struct Served {
    child: Child,
    pub base: String,
    pub log: Arc<Mutex<Vec<u8>>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// The names of the gateway process's threads.
    pub fn threads(&self) -> Vec<String> {
        let tasks = format!("/proc/{}/task", self.child.id());
        std::fs::read_dir(tasks)
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
            .map(|name| name.trim().to_owned())
            .collect()
    }

    /// Stops with SIGTERM and waits for the exit; returns the log, whatever it says.
    pub fn stop_and_log(mut self) -> String {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                return String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned();
        panic!("blastwall serve did not stop on SIGTERM: {log}");
    }

    /// Stops with SIGTERM and waits, so the audit log is drained.
    pub fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                // A clean stop writes every queued entry and signs the closing checkpoint.
                std::thread::sleep(Duration::from_millis(100));
                let log = String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned();
                assert!(
                    !log.contains("did not finish") && !log.contains("closing audit checkpoint"),
                    "unclean stop: {log}"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("blastwall serve did not stop on SIGTERM");
    }
}

pub fn serve(bw: &Bw) -> Served {
    let mut child = bw
        .std_cmd()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
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
    let base = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(b) => b,
        Err(_) => {
            let _ = child.kill();
            panic!(
                "gateway did not start: {}",
                String::from_utf8_lossy(&log.lock().unwrap())
            );
        }
    };
    Served { child, base, log }
}

/// The setup: fake Railway and a fake REST API, both environments with their own credentials.
pub struct Setup {
    pub bw: Bw,
    pub railway: FakeUpstream,
    pub rest: FakeUpstream,
}

pub async fn setup() -> Setup {
    setup_with(&[]).await
}

/// [`setup`] with more arguments to `blastwall init` (e.g. `--store-url`).
pub async fn setup_with(init: &[&str]) -> Setup {
    let railway = FakeUpstream::start().await.unwrap();
    let rest = FakeUpstream::start().await.unwrap();
    let bw = Bw::new();
    let mut args = vec!["init"];
    args.extend_from_slice(init);
    bw.ok(&args);
    let o = bw.run_stdin(
        &[
            "upstream",
            "add",
            "railway",
            "--profile",
            "railway",
            "--base-url",
            &railway.url(),
            "--env",
            "production",
            "--secret-stdin",
        ],
        PROD_SECRET,
    );
    assert!(o.status.success());
    let o = bw.run_stdin(
        &[
            "upstream",
            "add",
            "railway",
            "--env",
            "staging",
            "--secret-stdin",
        ],
        STAGING_SECRET,
    );
    assert!(o.status.success());
    let o = bw.run_stdin(
        &[
            "upstream",
            "add",
            "api",
            "--profile",
            "rest",
            "--base-url",
            &rest.url(),
            "--env",
            "staging",
            "--secret-stdin",
        ],
        REST_SECRET,
    );
    assert!(o.status.success());
    Setup { bw, railway, rest }
}

pub fn issue(bw: &Bw, env: &str, scope: &str, ttl: &str) -> (String, String) {
    let t = bw.json(&[
        "token",
        "issue",
        "--env",
        env,
        "--owner",
        "jer@pocketos.com",
        "--holder",
        "cursor-agent",
        "--scope",
        scope,
        "--ttl",
        ttl,
    ]);
    (
        t["token"].as_str().unwrap().to_owned(),
        t["id"].as_str().unwrap().to_owned(),
    )
}

pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut b = http::Request::builder().method(method).uri(url);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client
        .request(b.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn gql(base: &str, token: &str, body: &str) -> Reply {
    call(
        "POST",
        &format!("{base}/proxy/railway/graphql/v2"),
        Some(token),
        &[("content-type", "application/json")],
        body,
    )
    .await
}

const CREATE: &str =
    r#"{"query":"mutation { customDomainCreate(input: {domain: \"a.example\"}) { id } }"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_calls_carry_the_sealed_credential_not_the_token() {
    let s = setup().await;
    let (token, _) = issue(&s.bw, "staging", "railway:domain.*", "1h");
    let gw = serve(&s.bw);
    let r = gql(&gw.base, &token, CREATE).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"]["ok"], true);
    let seen = s.railway.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/graphql/v2");
    assert_eq!(
        seen[0].authorization().as_deref(),
        Some(format!("Bearer {STAGING_SECRET}").as_str())
    );
    for (name, value) in &seen[0].headers {
        assert!(
            !contains(value.as_bytes(), token.as_bytes()),
            "the agent's token reached the upstream in `{name}`"
        );
    }
    assert!(!contains(&seen[0].body, token.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_delete_is_denied_however_it_is_dressed() {
    let s = setup().await;
    let (token, _) = issue(&s.bw, "staging", "railway:domain.*", "1h");
    let gw = serve(&s.bw);
    let cases = [
        (
            "plain",
            r#"{"query":"mutation { volumeDelete(volumeId: \"v1\") }"}"#,
        ),
        (
            "aliased",
            r#"{"query":"mutation { tidy: volumeDelete(volumeId: \"v1\") }"}"#,
        ),
        (
            "fragment",
            r#"{"query":"mutation M { ...F } fragment F on Mutation { volumeDelete(volumeId: \"v1\") }"}"#,
        ),
        (
            "inline fragment",
            r#"{"query":"mutation { ... on Mutation { volumeDelete(volumeId: \"v1\") } }"}"#,
        ),
        (
            "directive",
            r#"{"query":"mutation { volumeDelete(volumeId: \"v1\") @include(if: true) }"}"#,
        ),
        (
            "batch",
            r#"[{"query":"mutation { customDomainCreate(input: {}) { id } }"},{"query":"mutation { volumeDelete(volumeId: \"v1\") }"}]"#,
        ),
        (
            "mixed with an allowed mutation",
            r#"{"query":"mutation { customDomainCreate(input: {}) { id } volumeDelete(volumeId: \"v1\") }"}"#,
        ),
        (
            "operationName picks it",
            r#"{"query":"mutation A { customDomainCreate(input: {}) { id } } mutation B { volumeDelete(volumeId: \"v1\") }","operationName":"B"}"#,
        ),
    ];
    for (what, body) in cases {
        let r = gql(&gw.base, &token, body).await;
        assert_eq!(r.status, 403, "{what}: {}", r.text());
        let j = r.json();
        assert_eq!(j["error"], "denied", "{what}");
        assert_eq!(j["operation"], "railway:volume.delete", "{what}");
        assert!(
            j["reason"]
                .as_str()
                .unwrap()
                .contains("outside this token's scope (railway:domain.*)"),
            "{what}"
        );
        assert!(j["hint"].as_str().is_some_and(|h| !h.is_empty()), "{what}");
        assert!(
            j["request_id"].as_str().unwrap().starts_with("req_"),
            "{what}"
        );
    }
    // Via GET with the query in the URL.
    let q = "mutation%20%7B%20volumeDelete(volumeId%3A%20%22v1%22)%20%7D";
    let r = call(
        "GET",
        &format!("{}/proxy/railway/graphql/v2?query={q}", gw.base),
        Some(&token),
        &[],
        "",
    )
    .await;
    // Classified like the POST (the operation is named), and denied.
    assert_eq!(r.status, 403, "GET mutation: {}", r.text());
    assert_eq!(r.json()["error"], "denied", "{}", r.text());
    assert_eq!(
        r.json()["operation"],
        "railway:volume.delete",
        "{}",
        r.text()
    );
    assert!(
        s.railway.seen().is_empty(),
        "a destructive request reached the upstream"
    );
    let snap = r#"{"query":"mutation { volumeDelete(volumeId: \"v1\") }"}"#;
    let mut j = gql(&gw.base, &token, snap).await.json();
    j["request_id"] = Value::String("[ID]".into());
    insta::assert_json_snapshot!("denied_volume_delete", j);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_not_forwarded() {
    let s = setup().await;
    let (token, _) = issue(&s.bw, "staging", "railway:*", "1h");
    let gw = serve(&s.bw);
    for (what, body) in [
        ("not json", "mutation { volumeDelete }"),
        (
            "not graphql",
            r#"{"query":"mutation { volumeDelete(volumeId: "}"#,
        ),
        (
            "unknown operationName",
            r#"{"query":"mutation A { customDomainCreate(input: {}) { id } }","operationName":"B"}"#,
        ),
        ("no query", r#"{"variables":{}}"#),
    ] {
        let r = gql(&gw.base, &token, body).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        let reply = r.json();
        assert_eq!(reply["error"], "unparseable_request", "{what}");
        // One hint, in `hint`: the classifier's, for this refusal.
        assert!(
            !reply["message"].as_str().unwrap().contains("hint"),
            "{reply}"
        );
        assert!(!reply["hint"].as_str().unwrap().is_empty(), "{reply}");
    }
    let r = call(
        "POST",
        &format!("{}/proxy/railway/graphql/v2", gw.base),
        Some(&token),
        &[
            ("content-type", "application/json"),
            ("x-http-method-override", "DELETE"),
        ],
        CREATE,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["hint"]
            .as_str()
            .unwrap()
            .contains("without `x-http-method-override`"),
        "{}",
        r.text()
    );
    let big = format!(
        r#"{{"query":"mutation {{ customDomainCreate(input: {{}}) {{ id }} }}","pad":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let r = gql(&gw.base, &token, &big).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(s.railway.seen().is_empty());
    // Refusals before a decision are counted too, by their code.
    assert_eq!(
        requests(&gw.base, "railway", "-", "body_too_large").await,
        Some(1.0)
    );
    assert!(
        requests(&gw.base, "railway", "-", "unparseable")
            .await
            .is_some_and(|n| n >= 3.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wall_holds() {
    let s = setup().await;
    let (staging, _) = issue(&s.bw, "staging", "railway:*", "1h");
    let (prod, _) = issue(&s.bw, "production", "railway:domain.*", "30m");
    // This gateway holds the staging key only, as a staging host would.
    std::fs::rename(
        s.bw.data().join("keys/production.key"),
        s.bw.path().join("prod.key"),
    )
    .unwrap();
    let gw = serve(&s.bw);
    let r = gql(&gw.base, &staging, CREATE).await;
    assert_eq!(r.status, 200);
    let r = gql(&gw.base, &prod, CREATE).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "environment_sealed");
    let forged = staging.replacen("bwt_staging_", "bwt_production_", 1);
    let r = gql(&gw.base, &forged, CREATE).await;
    assert_eq!(r.status, 401);
    for seen in s.railway.seen() {
        assert_ne!(
            seen.authorization().as_deref(),
            Some(format!("Bearer {PROD_SECRET}").as_str())
        );
    }
    // A staging token has no credential for an upstream that has none in staging.
    let o = s.bw.run_stdin(
        &[
            "upstream",
            "add",
            "prodonly",
            "--profile",
            "rest",
            "--base-url",
            &s.rest.url(),
            "--env",
            "production",
            "--secret-stdin",
        ],
        PROD_SECRET,
    );
    assert!(o.status.success());
    let r = call(
        "GET",
        &format!("{}/proxy/prodonly/x", gw.base),
        Some(&staging),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "no_credential");
    assert!(s.rest.seen().is_empty());
    assert_eq!(
        requests(&gw.base, "railway", "-", "environment_sealed").await,
        Some(1.0)
    );
    assert_eq!(
        requests(&gw.base, "prodonly", "-", "no_credential").await,
        Some(1.0)
    );
    assert_eq!(
        requests(&gw.base, "railway", "write", "allow").await,
        Some(1.0)
    );
}

/// A wildcard scope never hands out what reveals or mints a credential: a staging token scoped
/// `railway:*` cannot read variables (secret values) or create an account-wide API token (which
/// would reach production); a scope naming the operation can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_operations_need_a_scope_that_names_them() {
    let s = setup().await;
    let (wide, _) = issue(&s.bw, "staging", "railway:*", "1h");
    let (named, _) = issue(&s.bw, "staging", "railway:variable.read", "1h");
    let gw = serve(&s.bw);
    let read_vars = r#"{"query":"{ variables(projectId: \"p\", environmentId: \"e\") }"}"#;
    let mint = r#"{"query":"mutation { apiTokenCreate(input: {name: \"x\"}) }"}"#;
    for (body, op) in [
        (read_vars, "railway:variable.read"),
        (mint, "railway:api_token.create"),
    ] {
        let r = gql(&gw.base, &wide, body).await;
        assert_eq!(r.status, 403, "{}", r.text());
        assert_eq!(r.json()["operation"], op);
    }
    let r = gql(&gw.base, &named, read_vars).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The wide token still does what its wildcard covers.
    assert_eq!(gql(&gw.base, &wide, CREATE).await.status, 200);
    // The scope matrix says the same.
    let id = issue(&s.bw, "staging", "railway:*", "1h").1;
    let m = s.bw.json(&["token", "test", &id]);
    let decision = |op: &str| {
        m["operations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["operation"] == op)
            .map(|r| r["decision"].as_str().unwrap().to_owned())
    };
    assert_eq!(
        decision("railway:api_token.create").as_deref(),
        Some("deny")
    );
    assert_eq!(decision("railway:variable.read").as_deref(), Some("deny"));
    assert_eq!(decision("railway:project.read").as_deref(), Some("allow"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_destructive_operations_are_held() {
    let s = setup().await;
    let (prod, _) = issue(&s.bw, "production", "railway:*", "30m");
    let gw = serve(&s.bw);
    let r = gql(
        &gw.base,
        &prod,
        r#"{"query":"mutation { volumeDelete(volumeId: \"v1\") }"}"#,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "approval_required");
    let r = gql(&gw.base, &prod, CREATE).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        s.railway.seen()[0].authorization().as_deref(),
        Some(format!("Bearer {PROD_SECRET}").as_str())
    );
    // The audit says what was decided (a hold, not a denial), the status the agent got and how
    // long the gateway took.
    gw.stop();
    let tail = s.bw.json(&["log", "tail", "-n", "5"]);
    let decided: Vec<(String, String, u64)> = tail
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "request.decide")
        .map(|e| {
            let d: Value = serde_json::from_str(e["detail"].as_str().unwrap()).unwrap();
            assert!(d["latency_us"].as_u64().is_some_and(|us| us > 0), "{d}");
            (
                d["decision"].as_str().unwrap().to_owned(),
                d["operations"][0].as_str().unwrap().to_owned(),
                d["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        decided,
        [
            ("hold".to_owned(), "railway:volume.delete".to_owned(), 403),
            ("allow".to_owned(), "railway:domain.create".to_owned(), 200),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_rotated_by_another_process_is_used_within_a_second() {
    let s = setup().await;
    let (token, _) = issue(&s.bw, "staging", "railway:domain.*", "1h");
    let gw = serve(&s.bw);
    assert_eq!(gql(&gw.base, &token, CREATE).await.status, 200);
    const ROTATED: &str = "rw_STAGING_rotated_9f8e7d6c5b4a3f2e1d";
    let o = s.bw.run_stdin(
        &[
            "upstream",
            "add",
            "railway",
            "--env",
            "staging",
            "--secret-stdin",
        ],
        ROTATED,
    );
    assert!(o.status.success());
    let rotated_at = Instant::now();
    let mut switched = false;
    while rotated_at.elapsed() < Duration::from_secs(1) {
        assert_eq!(gql(&gw.base, &token, CREATE).await.status, 200);
        let seen = s.railway.seen();
        let last = seen.last().and_then(|r| r.authorization());
        if last.as_deref() == Some(format!("Bearer {ROTATED}").as_str()) {
            switched = true;
            break;
        }
        assert_eq!(
            last.as_deref(),
            Some(format!("Bearer {STAGING_SECRET}").as_str())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        switched,
        "the gateway still sent the old credential a second after the rotation"
    );
    // And the new one is scrubbed from responses like the old one.
    let r = gql(&gw.base, &token, CREATE).await;
    assert!(!r.text().contains(ROTATED));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_revoked_tokens_are_refused() {
    let s = setup().await;
    let (short, _) = issue(&s.bw, "staging", "railway:*", "2s");
    let (revoked, id) = issue(&s.bw, "staging", "railway:*", "1h");
    let gw = serve(&s.bw);
    assert_eq!(gql(&gw.base, &short, CREATE).await.status, 200);
    assert_eq!(gql(&gw.base, &revoked, CREATE).await.status, 200);
    // Revoked by another process: refused within a second.
    s.bw.ok(&["token", "revoke", &id]);
    let revoked_at = Instant::now();
    let mut refused = false;
    while revoked_at.elapsed() < Duration::from_secs(1) {
        let r = gql(&gw.base, &revoked, CREATE).await;
        if r.status == 401 {
            assert_eq!(r.json()["error"], "token_revoked");
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "a revoked token still worked a second later");
    // Revoked from a host whose clock lags by an hour: its revocation time is long past, and
    // it is refused within a second all the same.
    let (lagging, lagging_id) = issue(&s.bw, "staging", "railway:*", "1h");
    assert_eq!(gql(&gw.base, &lagging, CREATE).await.status, 200);
    let an_hour_ago =
        (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1)).as_microsecond();
    store_sql(
        &s.bw,
        &format!("UPDATE tokens SET revoked_at = {an_hour_ago} WHERE id = '{lagging_id}'"),
    )
    .await;
    let revoked_at = Instant::now();
    let mut refused = false;
    while revoked_at.elapsed() < Duration::from_secs(1) {
        if gql(&gw.base, &lagging, CREATE).await.status == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        refused,
        "a token revoked with a lagging clock still worked a second later"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = gql(&gw.base, &short, CREATE).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "token_expired");
    let r = gql(&gw.base, "bwt_staging_notatoken", CREATE).await;
    assert_eq!(r.status, 401);
    let r = call(
        "POST",
        &format!("{}/proxy/railway/graphql/v2", gw.base),
        None,
        &[],
        CREATE,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "missing_token");
    let a = s.bw.json(&[
        "token", "issue", "--env", "staging", "--owner", "o@x.io", "--holder", "h", "--kind",
        "approver", "--ttl", "1h",
    ]);
    let r = gql(&gw.base, a["token"].as_str().unwrap(), CREATE).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "wrong_credential_kind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echoing_upstream_never_returns_the_credential() {
    let s = setup().await;
    let (token, _) = issue(&s.bw, "staging", "rest:*", "1h");
    let gw = serve(&s.bw);
    let r = call(
        "GET",
        &format!("{}/proxy/api/echo", gw.base),
        Some(&token),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("you sent: "), "{}", r.text());
    assert!(!contains(&r.body, REST_SECRET.as_bytes()), "{}", r.text());
    for (name, v) in &r.headers {
        assert!(
            !contains(v.as_bytes(), REST_SECRET.as_bytes()),
            "credential echoed in `{name}`"
        );
    }
    assert_eq!(
        s.rest.seen()[0].authorization().as_deref(),
        Some(format!("Bearer {REST_SECRET}").as_str())
    );
    // Echoed inside a base64 blob: masked too (what survives decodes without it).
    let r = call(
        "GET",
        &format!("{}/proxy/api/echo64", gw.base),
        Some(&token),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    let back: Vec<u8> = r
        .body
        .iter()
        .map(|&b| if b == b'*' { b'A' } else { b })
        .collect();
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&back)
        .unwrap();
    assert!(contains(&decoded, b"authorization"), "{}", r.text());
    assert!(!contains(&decoded, REST_SECRET.as_bytes()), "{}", r.text());
}

/// Only the injected credential reaches the upstream, whatever other credential headers the
/// agent sends; an upstream's session cookie never reaches the agent; a response the scrubber
/// cannot read (encoded although the gateway asked for none) is refused, not passed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_credentials_cookies_and_encoded_responses_do_not_cross() {
    let s = setup().await;
    let (token, _) = issue(&s.bw, "staging", "rest:*", "1h");
    let gw = serve(&s.bw);
    let agent_headers = [
        ("x-api-key", "agent-key-1"),
        ("project-access-token", "agent-project-token"),
        ("team-access-token", "agent-team-token"),
        ("private-token", "agent-private-token"),
        ("cookie", "session=agent"),
    ];
    let r = call(
        "GET",
        &format!("{}/proxy/api/cookie", gw.base),
        Some(&token),
        &agent_headers,
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.headers.get("set-cookie").is_none(), "{:?}", r.headers);
    let seen = s.rest.seen();
    let last = seen.last().unwrap();
    for (name, _) in agent_headers {
        assert!(last.headers.get(name).is_none(), "`{name}` was forwarded");
    }
    assert_eq!(
        last.authorization().as_deref(),
        Some(format!("Bearer {REST_SECRET}").as_str())
    );
    let r = call(
        "GET",
        &format!("{}/proxy/api/gzip", gw.base),
        Some(&token),
        &[("accept-encoding", "gzip")],
        "",
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_encoded_response");
    assert!(!contains(&r.body, REST_SECRET.as_bytes()));
    assert_eq!(
        s.rest.seen().last().unwrap().headers["accept-encoding"],
        "identity"
    );
    // Unauthenticated requests naming made-up upstreams add no metric series.
    for i in 0..20 {
        let r = call(
            "GET",
            &format!("{}/proxy/made-up-{i}/x", gw.base),
            None,
            &[],
            "",
        )
        .await;
        assert_eq!(r.status, 401);
    }
    let m = call("GET", &format!("{}/metrics", gw.base), None, &[], "").await;
    assert!(!m.text().contains("made-up-"), "{}", m.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_classification_redirects_and_upstream_failures() {
    let s = setup().await;
    let (reader, _) = issue(&s.bw, "staging", "rest:request.read", "1h");
    let gw = serve(&s.bw);
    let r = call(
        "GET",
        &format!("{}/proxy/api/v1/items/3", gw.base),
        Some(&reader),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    let r = call(
        "DELETE",
        &format!("{}/proxy/api/v1/items/3", gw.base),
        Some(&reader),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["operation"], "rest:request.delete");
    // Dot segments and duplicate slashes are normalized before classification and forwarding.
    let r = call(
        "GET",
        &format!("{}/proxy/api/v1//items/./4/../5", gw.base),
        Some(&reader),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(s.rest.seen().last().unwrap().target, "/v1/items/5");
    let r = call(
        "GET",
        &format!("{}/proxy/api/v1/items%2F5", gw.base),
        Some(&reader),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // A redirect is passed back, never followed with the credential.
    let before = s.rest.seen().len();
    let r = call(
        "GET",
        &format!("{}/proxy/api/redirect", gw.base),
        Some(&reader),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 302);
    assert_eq!(r.headers["location"], "http://127.0.0.1:9/stolen");
    assert_eq!(s.rest.seen().len(), before + 1);
    let r = call(
        "GET",
        &format!("{}/proxy/nosuch/x", gw.base),
        Some(&reader),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "unknown_upstream");
    let r = call("GET", &format!("{}/healthz", gw.base), None, &[], "").await;
    assert_eq!(r.status, 200);
    let r = call("GET", &format!("{}/metrics", gw.base), None, &[], "").await;
    assert!(
        r.text().contains("blastwall_requests_total"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("decision=\"deny\""), "{}", r.text());
    // By upstream, class and decision; a made-up upstream name is not a label.
    assert!(
        requests(&gw.base, "api", "read", "allow")
            .await
            .is_some_and(|n| n >= 1.0)
    );
    assert_eq!(
        requests(&gw.base, "-", "-", "unknown_upstream").await,
        Some(1.0)
    );
    assert!(!r.text().contains("nosuch"), "{}", r.text());
    // The latency histograms.
    assert!(
        metric(
            &gw.base,
            "blastwall_upstream_seconds_count",
            "upstream=\"api\""
        )
        .await
        .is_some_and(|n| n >= 1.0)
    );
    let decisions = call("GET", &format!("{}/metrics", gw.base), None, &[], "").await;
    assert!(
        decisions
            .text()
            .lines()
            .any(|l| l.starts_with("blastwall_decision_seconds_count ")
                && l.split(' ').nth(1).and_then(|v| v.parse::<f64>().ok()) >= Some(1.0)),
        "{}",
        decisions.text()
    );
}

/// The value of `/metrics`' sample `name{labels}` (labels as the exposition writes them), if
/// it is there.
async fn metric(base: &str, name: &str, labels: &str) -> Option<f64> {
    let m = call("GET", &format!("{base}/metrics"), None, &[], "").await;
    let key = format!("{name}{{{labels}}} ");
    m.text()
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
}

/// `blastwall_requests_total` for one upstream, class and decision.
async fn requests(base: &str, upstream: &str, class: &str, decision: &str) -> Option<f64> {
    let labels = format!("upstream=\"{upstream}\",class=\"{class}\",decision=\"{decision}\"");
    metric(base, "blastwall_requests_total", &labels).await
}

/// Runs SQL on the gateway's SQLite store from outside the gateway (another process would).
async fn store_sql(bw: &Bw, sql: &str) {
    use sqlx::ConnectOptions;
    let mut c = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(bw.data().join("blastwall.db"))
        .connect()
        .await
        .unwrap();
    sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
}

/// When the audit log cannot be written, the gateway forwards nothing until it can, loses no
/// entry, and says so to the agent and on `/healthz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_audit_log_stops_forwarding_and_loses_nothing() {
    let s = setup().await;
    let (token, _) = issue(&s.bw, "staging", "rest:*", "1h");
    let gw = serve(&s.bw);
    let get = |path: &'static str| {
        let url = format!("{}/proxy/api/{path}", gw.base);
        let token = token.clone();
        async move { call("GET", &url, Some(&token), &[], "").await }
    };
    assert_eq!(get("before").await.status, 200);
    // Appends now fail (as on a full disk); reads still work, so tokens still authenticate.
    store_sql(
        &s.bw,
        "CREATE TRIGGER no_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
    )
    .await;
    // Requests are forwarded until the writer's next batch fails (within a few milliseconds);
    // their entries are kept and retried.
    let mut forwarded_ok = 1;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let refused = loop {
        let r = get("during").await;
        if r.status != 200 || std::time::Instant::now() > deadline {
            break r;
        }
        forwarded_ok += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.json()["error"], "audit_unavailable");
    let forwarded = s.rest.seen().len();
    assert_eq!(get("refused-again").await.status, 503);
    assert_eq!(s.rest.seen().len(), forwarded, "forwarded while unaudited");
    let h = call("GET", &format!("{}/healthz", gw.base), None, &[], "").await;
    assert_eq!(h.status, 503);
    assert!(h.text().contains("audit"), "{}", h.text());
    // Writable again: forwarding resumes, and the entry of the request made during the failure
    // was kept and written.
    store_sql(&s.bw, "DROP TRIGGER no_audit;").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = get("after").await;
        if r.status == 200 {
            forwarded_ok += 1;
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.stop();
    // One allow entry per forwarded request, none lost; the refused ones could not be recorded
    // and were not forwarded.
    let tail = s.bw.json(&["log", "tail", "-n", "50"]);
    let allowed = tail
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "request.decide")
        .filter(|e| {
            let d: Value = serde_json::from_str(e["detail"].as_str().unwrap()).unwrap();
            d["decision"] == "allow"
        })
        .count();
    assert_eq!(allowed, forwarded_ok, "{tail:#}");
    let o = s.bw.run(&["log", "verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Sends GETs to `url` until the gateway refuses with `audit_unavailable` (within `limit`);
/// returns how many were forwarded before (at least one).
async fn forward_until_audit_unavailable(url: &str, token: &str, limit: Duration) -> usize {
    let mut forwarded = 0;
    let deadline = Instant::now() + limit;
    loop {
        let r = call("GET", url, Some(token), &[], "").await;
        if r.status != 200 {
            assert_eq!(r.json()["error"], "audit_unavailable", "{}", r.text());
            break;
        }
        forwarded += 1;
        assert!(Instant::now() < deadline, "never refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(forwarded >= 1);
    forwarded
}

/// Entries of forwarded requests that the store still refuses when the gateway stops are not
/// lost with the process: they are written to its log, one line each, without a secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_entries_the_store_refuses_until_the_stop_go_to_the_log() {
    let s = setup().await;
    let (token, _) = issue(&s.bw, "staging", "rest:*", "1h");
    let gw = serve(&s.bw);
    let url = format!("{}/proxy/api/during", gw.base);
    store_sql(
        &s.bw,
        "CREATE TRIGGER no_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
    )
    .await;
    let forwarded = forward_until_audit_unavailable(&url, &token, Duration::from_secs(5)).await;
    let log = gw.stop_and_log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("audit entry not written"))
        .collect();
    assert_eq!(lines.len(), forwarded, "{log}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("request.decide") && l.contains("allow")),
        "{log}"
    );
    assert!(!log.contains(REST_SECRET), "{log}");
    assert!(!log.contains(&token), "{log}");
}

/// The same when the store does not refuse but makes the writer wait (another process holds
/// SQLite's write lock through the stop): each attempt ends within the writer's own limit, so
/// the stop still reaches the log in time rather than ending with entries in hand.
#[tokio::test]
async fn audit_entries_a_locked_store_keeps_waiting_go_to_the_log_at_the_stop() {
    use sqlx::ConnectOptions;
    let s = setup().await;
    let (token, _) = issue(&s.bw, "staging", "rest:*", "1h");
    let gw = serve(&s.bw);
    let url = format!("{}/proxy/api/during", gw.base);
    let mut lock = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(s.bw.data().join("blastwall.db"))
        .connect()
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut lock)
        .await
        .unwrap();
    let forwarded = forward_until_audit_unavailable(&url, &token, Duration::from_secs(20)).await;
    let stopping = Instant::now();
    let log = gw.stop_and_log();
    let took = stopping.elapsed();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("audit entry not written"))
        .collect();
    assert_eq!(lines.len(), forwarded, "{log}");
    assert!(!log.contains("did not finish"), "{log}");
    assert!(took < Duration::from_secs(16), "the stop took {took:?}");
    sqlx::raw_sql("ROLLBACK").execute(&mut lock).await.unwrap();
}

/// On PostgreSQL an append that never answers (another session holds the audit table's lock
/// through the stop) is abandoned at the end of the stop's grace, and the entries it held go to
/// the log as not confirmed, rather than the stop ending with them in hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_entries_a_postgres_store_never_answers_go_to_the_log_at_the_stop() {
    use sqlx::Connection;
    let pg = tokio::task::spawn_blocking(blastwall_test::PgCluster::start)
        .await
        .unwrap()
        .unwrap();
    let s = setup_with(&["--store-url", &pg.url()]).await;
    let (token, _) = issue(&s.bw, "staging", "rest:*", "1h");
    let gw = serve(&s.bw);
    let mut lock = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE audit_log IN EXCLUSIVE MODE;")
        .execute(&mut lock)
        .await
        .unwrap();
    let url = format!("{}/proxy/api/during", gw.base);
    // The appends wait (they are not refused), so these are forwarded: the first alone in a
    // batch (its append waits on the lock), the rest queued behind it.
    for i in 0..5 {
        let r = call("GET", &url, Some(&token), &[], "").await;
        assert_eq!(r.status, 200, "{}", r.text());
        if i == 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let stopping = Instant::now();
    let log = gw.stop_and_log();
    let took = stopping.elapsed();
    // The batch in flight may have been committed ("not confirmed"); the rest, queued behind
    // it, were never tried ("not written").
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("audit entry not"))
        .collect();
    assert_eq!(lines.len(), 5, "{log}");
    assert!(lines.iter().all(|l| l.contains("request.decide")), "{log}");
    let unconfirmed = lines
        .iter()
        .filter(|l| l.contains("audit entry not confirmed written"))
        .count();
    assert_eq!(unconfirmed, 1, "{log}");
    assert!(!log.contains("did not finish"), "{log}");
    assert!(took < Duration::from_secs(16), "the stop took {took:?}");
    sqlx::raw_sql("ROLLBACK").execute(&mut lock).await.unwrap();
}

/// The gateway's audit writer (on a thread of its own with SQLite, through the pool with
/// PostgreSQL) and the CLI append to one chain at once: every decision is there, checkpoints
/// are signed among the gateway's batches, and the log verifies.
async fn decisions_and_admin_changes_share_one_chain(init: &[&str], writer_thread: bool) {
    let s = setup_with(init).await;
    let bw = &s.bw;
    let config = bw.path().join("blastwall.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("checkpoint_every = 100"), "{text}");
    std::fs::write(
        &config,
        text.replace("checkpoint_every = 100", "checkpoint_every = 3"),
    )
    .unwrap();
    let (token, _) = issue(bw, "staging", "railway:domain.*", "1h");
    let gw = serve(bw);
    // A thread names itself once it runs, which may be just after the gateway says it listens.
    let has_writer_thread = || gw.threads().iter().any(|t| t == "audit-writer");
    let deadline = Instant::now() + Duration::from_secs(5);
    while writer_thread && !has_writer_thread() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(has_writer_thread(), writer_thread, "{:?}", gw.threads());
    let delete = r#"{"query":"mutation { volumeDelete(volumeId: \"v1\") }"}"#;
    for i in 0..20 {
        assert_eq!(gql(&gw.base, &token, CREATE).await.status, 200);
        assert_eq!(gql(&gw.base, &token, delete).await.status, 403);
        if i % 5 == 4 {
            issue(bw, "staging", "railway:domain.*", "1h");
        }
    }
    gw.stop();
    let tail = bw.json(&["log", "tail", "-n", "100"]);
    let entries = tail.as_array().unwrap();
    let count = |decision: &str| {
        entries
            .iter()
            .filter(|e| e["action"] == "request.decide")
            .filter(|e| {
                let d: Value = serde_json::from_str(e["detail"].as_str().unwrap()).unwrap();
                d["decision"] == decision
            })
            .count()
    };
    assert_eq!((count("allow"), count("deny")), (20, 20), "{tail:#}");
    let issued = entries
        .iter()
        .filter(|e| e["action"] == "token.issue")
        .count();
    assert_eq!(issued, 5, "{tail:#}");
    let report = bw.json(&["log", "verify"]);
    assert_eq!(report["ok"], true, "{report:#}");
    let (n, checkpoints) = (
        report["entries"].as_u64().unwrap(),
        report["checkpoints"].as_u64().unwrap(),
    );
    assert!(n >= 45 && checkpoints >= n / 3, "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_and_admin_changes_share_one_chain_on_sqlite() {
    decisions_and_admin_changes_share_one_chain(&[], true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_and_admin_changes_share_one_chain_on_postgres() {
    let pg = tokio::task::spawn_blocking(blastwall_test::PgCluster::start)
        .await
        .unwrap()
        .unwrap();
    decisions_and_admin_changes_share_one_chain(&["--store-url", &pg.url()], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_a_clear_502() {
    let bw = Bw::new();
    bw.ok(&["init"]);
    let o = bw.run_stdin(
        &[
            "upstream",
            "add",
            "dead",
            "--profile",
            "rest",
            "--base-url",
            "http://127.0.0.1:9",
            "--env",
            "staging",
            "--secret-stdin",
        ],
        REST_SECRET,
    );
    assert!(o.status.success());
    let (token, _) = issue(&bw, "staging", "rest:*", "1h");
    let gw = serve(&bw);
    let r = call(
        "GET",
        &format!("{}/proxy/dead/x", gw.base),
        Some(&token),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_unreachable");
}

/// Unauthenticated requests cannot grow the audit log at the request rate (anyone can send
/// them; a full disk would stop the gateway, which forwards nothing it cannot audit): the first
/// 60 a minute are written one by one, the rest counted in one entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_refusals_cannot_flood_the_audit_log() {
    let s = setup().await;
    let gw = serve(&s.bw);
    let url = format!("{}/proxy/railway/graphql/v2", gw.base);
    for i in 0..100 {
        let token = (i % 2 == 0).then_some("bwt_staging_not-a-real-token");
        let r = call("POST", &url, token, &[], "{}").await;
        assert_eq!(r.status, 401, "{}", r.text());
    }
    gw.stop();
    let tail = s.bw.json(&["log", "tail", "-n", "200"]);
    let entries = tail.as_array().unwrap();
    let one_by_one = entries
        .iter()
        .filter(|e| e["action"] == "request.decide" && e["actor"] == "anonymous")
        .count();
    assert_eq!(one_by_one, 60, "{tail:#}");
    let counted: Vec<Value> = entries
        .iter()
        .filter(|e| e["action"] == "request.decide.suppressed")
        .map(|e| serde_json::from_str(e["detail"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(counted.len(), 1, "{tail:#}");
    assert_eq!(counted[0]["count"], 40);
    let o = s.bw.run(&["log", "verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// A token in a loop (an agent retrying what it was refused) is held to `[gateway] token_rate`:
/// past its burst it gets 429 with `Retry-After`, nothing is forwarded, other tokens are not
/// slowed, and its rate-limited refusals do not grow the audit log at the request rate (60 a
/// minute one by one, the rest counted in one entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_a_loop_is_rate_limited_and_cannot_flood_the_audit_log() {
    let s = setup().await;
    let cfg = s.bw.path().join("blastwall.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("\n[gateway]\ntoken_rate = 1\ntoken_burst = 3\n");
    std::fs::write(&cfg, text).unwrap();
    let (token, id) = issue(&s.bw, "staging", "rest:*", "1h");
    let (other, _) = issue(&s.bw, "staging", "rest:*", "1h");
    let gw = serve(&s.bw);
    let url = format!("{}/proxy/api/v1/items/1", gw.base);
    let started = Instant::now();
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..100 {
        let r = call("GET", &url, Some(&token), &[], "").await;
        statuses.push(r.status);
        if r.status == 429 && limited.is_none() {
            limited = Some(r);
        }
    }
    let took = started.elapsed();
    let ok = statuses.iter().filter(|&&c| c == 200).count();
    // The burst, plus one a second for as long as the loop ran.
    let most = 3 + usize::try_from(took.as_secs()).unwrap() + 1;
    assert!(
        (3..=most).contains(&ok),
        "{ok} forwarded in {took:?}: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|&c| c == 200 || c == 429),
        "{statuses:?}"
    );
    assert_eq!(s.rest.seen().len(), ok, "a limited request was forwarded");
    let r = limited.expect("never limited");
    assert_eq!(r.json()["error"], "rate_limited", "{}", r.text());
    assert!(
        r.json()["hint"].as_str().unwrap().contains("token_rate"),
        "{}",
        r.text()
    );
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    // Another token has a budget of its own.
    let r = call("GET", &url, Some(&other), &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // And this one is served again once it waits.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = call("GET", &url, Some(&token), &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let limited_count = statuses.iter().filter(|&&c| c == 429).count();
    assert_eq!(
        requests(&gw.base, "-", "-", "rate_limited").await,
        Some(limited_count as f64)
    );
    gw.stop();

    let tail = s.bw.json(&["log", "tail", "-n", "300"]);
    let entries = tail.as_array().unwrap();
    let actor = format!("token:{id}");
    let one_by_one = entries
        .iter()
        .filter(|e| {
            e["action"] == "request.decide"
                && e["actor"] == actor.as_str()
                && e["detail"]
                    .as_str()
                    .unwrap()
                    .contains("\"reason\":\"rate_limited\"")
        })
        .count();
    assert_eq!(one_by_one, limited_count.min(60), "{tail:#}");
    let counted: Vec<Value> = entries
        .iter()
        .filter(|e| e["action"] == "request.decide.suppressed" && e["actor"] == actor.as_str())
        .map(|e| serde_json::from_str(e["detail"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(counted.len(), 1, "{tail:#}");
    assert!(limited_count > 60, "{limited_count} limited");
    assert_eq!(counted[0]["count"], limited_count - 60, "{tail:#}");
    let o = s.bw.run(&["log", "verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decision_is_audited_and_nothing_secret_leaks() {
    let s = setup().await;
    let (token, _) = issue(&s.bw, "staging", "railway:domain.*", "1h");
    let gw = serve(&s.bw);
    let delete = r#"{"query":"mutation { volumeDelete(volumeId: \"v1\") }"}"#;
    assert_eq!(gql(&gw.base, &token, CREATE).await.status, 200);
    assert_eq!(gql(&gw.base, &token, delete).await.status, 403);
    let log = gw.log.clone();
    gw.stop();
    let tail = s.bw.json(&["log", "tail", "-n", "5"]);
    let decisions: Vec<(String, String, String)> = tail
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "request.decide")
        .map(|e| {
            let d: Value = serde_json::from_str(e["detail"].as_str().unwrap()).unwrap();
            (
                d["decision"].as_str().unwrap().to_owned(),
                d["operations"][0].as_str().unwrap().to_owned(),
                d["request_digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // Each entry is bound to its request: the digest of the method, target, content type and
    // body sent to the upstream.
    let digest = |body: &str| {
        blastwall_policy::RequestDigest::of(
            "railway",
            "POST",
            "/graphql/v2",
            [("content-type", &b"application/json"[..])],
            body.as_bytes(),
        )
        .to_hex()
    };
    assert_eq!(
        decisions,
        [
            (
                "allow".to_owned(),
                "railway:domain.create".to_owned(),
                digest(CREATE)
            ),
            (
                "deny".to_owned(),
                "railway:volume.delete".to_owned(),
                digest(delete)
            )
        ]
    );
    let o = s.bw.run(&["log", "verify"]);
    assert_eq!(o.status.code(), Some(0));
    let log = log.lock().unwrap().clone();
    let random = &token[token.len() - 37..];
    for secret in [PROD_SECRET, STAGING_SECRET, REST_SECRET, random] {
        assert!(
            !contains(&log, secret.as_bytes()),
            "a secret is in the gateway's log"
        );
        for (path, bytes) in all_files(&s.bw.data()) {
            if path.extension().is_some_and(|e| e == "key") {
                continue;
            }
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "a secret is in {}",
                path.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_test_matrix_matches_live_decisions() {
    let s = setup().await;
    let (staging, sid) = issue(&s.bw, "staging", "railway:domain.*", "1h");
    let m = s.bw.json(&["token", "test", &sid]);
    let rows = m["operations"].as_array().unwrap();
    let decision = |op: &str| -> String {
        rows.iter()
            .find(|r| r["operation"] == op)
            .map(|r| r["decision"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    // Every railway and rest operation is in the matrix (both have a staging credential), and
    // `unknown` twice: read for GET, HEAD and OPTIONS, destructive for the other methods.
    assert!(rows.iter().filter(|r| r["upstream"] == "railway").count() >= 100);
    assert_eq!(rows.iter().filter(|r| r["upstream"] == "api").count(), 5);
    let unknown: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| r["operation"] == "railway:unknown")
        .map(|r| (r["methods"].as_str().unwrap(), r["class"].as_str().unwrap()))
        .collect();
    assert_eq!(
        unknown,
        [
            ("GET, HEAD, OPTIONS", "read"),
            ("other methods", "destructive")
        ]
    );
    assert_eq!(decision("railway:domain.create"), "allow");
    assert_eq!(decision("railway:volume.delete"), "deny");
    assert_eq!(decision("railway:unknown"), "deny");
    assert_eq!(decision("rest:request.read"), "deny");
    let allowed: Vec<&str> = rows
        .iter()
        .filter(|r| r["decision"] == "allow")
        .map(|r| r["operation"].as_str().unwrap())
        .collect();
    assert!(
        allowed.iter().all(|o| o.starts_with("railway:domain.")),
        "{allowed:?}"
    );

    let (prod, pid) = issue(&s.bw, "production", "railway:*", "30m");
    let m = s.bw.json(&["token", "test", &pid]);
    let rows = m["operations"].as_array().unwrap();
    let find = |op: &str| rows.iter().find(|r| r["operation"] == op).unwrap().clone();
    assert_eq!(find("railway:volume.delete")["decision"], "hold");
    assert_eq!(find("railway:domain.create")["decision"], "allow");
    assert!(
        rows.iter().all(|r| r["upstream"] == "railway"),
        "production has only the railway credential"
    );

    // The live gateway agrees with the matrix.
    let gw = serve(&s.bw);
    assert_eq!(gql(&gw.base, &staging, CREATE).await.status, 200);
    let del = r#"{"query":"mutation { volumeDelete(volumeId: \"v1\") }"}"#;
    assert_eq!(gql(&gw.base, &staging, del).await.json()["error"], "denied");
    assert_eq!(
        gql(&gw.base, &prod, del).await.json()["error"],
        "approval_required"
    );
    let human = s.bw.ok(&["token", "test", &sid]);
    assert!(human.contains("railway:volume.delete"), "{human}");
    assert!(
        human.contains("railway:unknown (GET, HEAD, OPTIONS)"),
        "{human}"
    );

    // Where the class of `unknown` depends on the method, so does the decision, in the matrix
    // as live: in production a read goes through and anything else is held.
    let (unk, uid) = issue(&s.bw, "production", "railway:unknown", "30m");
    let m = s.bw.json(&["token", "test", &uid]);
    let by_methods = |methods: &str| {
        m["operations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["operation"] == "railway:unknown" && r["methods"] == methods)
            .unwrap()["decision"]
            .clone()
    };
    assert_eq!(by_methods("GET, HEAD, OPTIONS"), "allow");
    assert_eq!(by_methods("other methods"), "hold");
    let get = call(
        "GET",
        &format!("{}/proxy/railway/not/in/the/catalog", gw.base),
        Some(&unk),
        &[],
        "",
    )
    .await;
    assert!(
        !matches!(get.status, 401 | 403 | 503),
        "{} {}",
        get.status,
        get.text()
    );
    let post = call(
        "POST",
        &format!("{}/proxy/railway/not/in/the/catalog", gw.base),
        Some(&unk),
        &[("content-type", "application/json")],
        "{}",
    )
    .await;
    assert_eq!(post.json()["error"], "approval_required", "{}", post.text());

    // A revoked token is refused whatever it asks, in the matrix as live.
    s.bw.ok(&["token", "revoke", &sid]);
    let m = s.bw.json(&["token", "test", &sid]);
    let rows = m["operations"].as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(
        rows.iter()
            .all(|r| r["decision"] == "deny" && r["reason"] == "the token was revoked"),
        "{rows:?}"
    );
    let mut refused = false;
    for _ in 0..40 {
        if gql(&gw.base, &staging, CREATE).await.status == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "the gateway still took the revoked token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_and_upstream_time_limits() {
    let s = setup().await;
    let cfg = s.bw.path().join("blastwall.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("\n[gateway]\nresponse_timeout = \"1s\"\n");
    std::fs::write(&cfg, text).unwrap();
    let (token, _) = issue(&s.bw, "staging", "rest:*", "1h");
    let gw = serve(&s.bw);

    // HTTP/2 with prior knowledge (h2c).
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = http::Request::get(format!("{}/proxy/api/v1/items/1", gw.base))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);

    // An upstream that does not answer in time: 504, and no hang.
    let started = Instant::now();
    let r = call(
        "GET",
        &format!("{}/proxy/api/slow", gw.base),
        Some(&token),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Upstream time limits and streaming: a response reaches the agent as the upstream sends it;
/// an upstream body that stalls mid-way is cut after `response_timeout`; an upstream that never
/// completes the TCP handshake is given up after `connect_timeout`; a configured
/// `max_body_bytes` is the limit. Never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_limits_and_streaming() {
    let s = setup().await;
    // A listener whose accept queue is full: further connections never complete.
    let blackhole = tokio::net::TcpSocket::new_v4().unwrap();
    blackhole.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let blackhole = blackhole.listen(0).unwrap();
    let hole = blackhole.local_addr().unwrap();
    let mut held = Vec::new();
    loop {
        match tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(hole),
        )
        .await
        {
            Ok(Ok(c)) => held.push(c),
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => break,
        }
        assert!(held.len() < 64, "the accept queue never filled");
    }
    let o = s.bw.run_stdin(
        &[
            "upstream",
            "add",
            "hole",
            "--profile",
            "rest",
            "--base-url",
            &format!("http://{hole}"),
            "--env",
            "staging",
            "--secret-stdin",
        ],
        REST_SECRET,
    );
    assert!(o.status.success());
    let cfg = s.bw.path().join("blastwall.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(
        "\n[gateway]\nconnect_timeout = \"1s\"\nresponse_timeout = \"5s\"\nmax_body_bytes = 2048\n",
    );
    std::fs::write(&cfg, text).unwrap();
    let (token, _) = issue(&s.bw, "staging", "rest:*", "1h");
    let gw = serve(&s.bw);
    let get = |path: &str| {
        http::Request::get(format!("{}/proxy/{path}", gw.base))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();

    // Streamed: the first chunk arrives before the upstream sends the second.
    let started = Instant::now();
    let resp = client.request(get("api/stream")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    // (The gateway holds back the last bytes of each chunk, as many as the credential's longest
    // form, until the next one shows no credential, or encoded form of it, straddles the two.)
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(
        first.len() >= 128 && FIRST_CHUNK.starts_with(&first),
        "{first:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "the first chunk waited for the rest: {:?}",
        started.elapsed()
    );
    let rest = body.collect().await.unwrap().to_bytes();
    let mut whole = first.to_vec();
    whole.extend_from_slice(&rest);
    assert_eq!(whole, [&FIRST_CHUNK[..], b"second\n"].concat());
    assert!(started.elapsed() >= Duration::from_secs(2));

    // Stalled mid-body: cut after response_timeout, not held for the upstream's 30 s.
    let started = Instant::now();
    let resp = client.request(get("api/stall")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(FIRST_CHUNK.starts_with(&first), "{first:?}");
    let end = tokio::time::timeout(Duration::from_secs(15), body.collect()).await;
    assert!(
        matches!(end, Ok(Err(_))),
        "a stalled body must end in an error, not look complete"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // An upstream that never accepts: given up after connect_timeout.
    let started = Instant::now();
    let r = call(
        "GET",
        &format!("{}/proxy/hole/x", gw.base),
        Some(&token),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_unreachable");
    assert!(
        started.elapsed() < Duration::from_millis(2900),
        "{:?}",
        started.elapsed()
    );

    // The configured body limit.
    let url = format!("{}/proxy/api/v1/items", gw.base);
    let octets = [("content-type", "application/octet-stream")];
    let (fits, over) = ("x".repeat(2048), "x".repeat(2049));
    let r = call("POST", &url, Some(&token), &octets, &fits).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call("POST", &url, Some(&token), &octets, &over).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.json()["message"].as_str().unwrap().contains("2048"));
    drop(held);
}

/// A CA file that cannot be read stops the gateway at start-up, naming it.
#[test]
fn a_bad_ca_file_stops_the_start() {
    let bw = Bw::new();
    bw.ok(&["init"]);
    let cfg = bw.path().join("blastwall.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("\n[gateway]\nca_files = { api = \"missing-ca.pem\" }\n");
    std::fs::write(&cfg, text).unwrap();
    let o = bw.run(&["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(o.status.code(), Some(2), "{}", crate::support::stderr(&o));
    assert!(
        crate::support::stderr(&o).contains("missing-ca.pem"),
        "{}",
        crate::support::stderr(&o)
    );
    std::fs::write(bw.path().join("missing-ca.pem"), "not a certificate").unwrap();
    let o = bw.run(&["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(o.status.code(), Some(2), "{}", crate::support::stderr(&o));
    assert!(
        crate::support::stderr(&o).contains("missing-ca.pem"),
        "{}",
        crate::support::stderr(&o)
    );
}

/// Slow or idle agents cannot hold the gateway: a request head or body that does not arrive
/// within `client_timeout` ends its connection (408 for a body), and connections past
/// `max_connections` are closed at once, until one of the others ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_cut_off_and_connections_are_capped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Reads until the server closes the connection (or 10 s pass): what it sent, and when.
    async fn until_closed(stream: &mut TcpStream) -> (Vec<u8>, Duration) {
        let started = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) | Err(_) => return (got, started.elapsed()),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
    }

    let s = setup().await;
    let cfg = s.bw.path().join("blastwall.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("\n[gateway]\nclient_timeout = \"2s\"\nmax_connections = 3\n");
    std::fs::write(&cfg, text).unwrap();
    let (token, _) = issue(&s.bw, "staging", "rest:*", "1h");
    let gw = serve(&s.bw);
    let addr = gw.base.trim_start_matches("http://").to_owned();

    // Three connections: one idle, one mid-head (a slowloris), one mid-body.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    let mut slow_head = TcpStream::connect(&addr).await.unwrap();
    slow_head
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let mut slow_body = TcpStream::connect(&addr).await.unwrap();
    slow_body
        .write_all(
            format!(
                "POST /proxy/api/v1/items HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 100\r\n\r\n0123456789"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A fourth is over the cap: closed at once, nothing read from it.
    let mut fourth = TcpStream::connect(&addr).await.unwrap();
    let _ = fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let (got, took) = until_closed(&mut fourth).await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert!(took < Duration::from_secs(1), "{took:?}");

    // The slow and idle ones end within the time limit (plus margin), the body with a 408.
    let (got, took) = until_closed(&mut slow_body).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let (_, took) = until_closed(&mut slow_head).await;
    assert!(took < Duration::from_secs(5), "{took:?}");
    let (_, took) = until_closed(&mut idle).await;
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(s.rest.seen().is_empty(), "a partial request was forwarded");

    // With those gone, requests are served again.
    let r = call(
        "GET",
        &format!("{}/proxy/api/v1/items/1", gw.base),
        Some(&token),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A connection that has sent nothing does not hold up a stop.
    let _idle = TcpStream::connect(&addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = Instant::now();
    gw.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(1),
        "{:?}",
        stopping.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_policies_apply_and_a_bad_one_stops_the_start() {
    let s = setup().await;
    let dir = s.bw.path().join("policies");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("freeze.cedar"),
        "@id(\"code-freeze\")\nforbid (principal, action == Action::\"railway:domain.create\", resource)\nwhen { context.holder == \"cursor-agent\" };\n",
    )
    .unwrap();
    let cfg = s.bw.path().join("blastwall.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("\n[policy]\ndir = \"policies\"\n");
    std::fs::write(&cfg, text).unwrap();
    let (token, _) = issue(&s.bw, "staging", "railway:domain.*", "1h");
    let gw = serve(&s.bw);
    let r = gql(&gw.base, &token, CREATE).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.json()["reason"].as_str().unwrap().contains("code-freeze"),
        "{}",
        r.text()
    );
    drop(gw);
    assert!(s.railway.seen().is_empty());

    std::fs::write(
        dir.join("broken.cedar"),
        "permit (principal, action == Action::\"railway:nosuch.op\", resource);\n",
    )
    .unwrap();
    let o = s.bw.run(&["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a bad policy did not stop the start"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("broken.cedar"), "{err}");
    assert!(err.contains("line 1"), "{err}");
    // One hint: the policy error's own.
    assert_eq!(
        err.lines().filter(|l| l.starts_with("hint:")).count(),
        1,
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_verified_against_the_system_roots_or_a_ca_file() {
    let (tls, ca_pem) = FakeUpstream::start_tls().await.unwrap();
    let bw = Bw::new();
    bw.ok(&["init"]);
    let o = bw.run_stdin(
        &[
            "upstream",
            "add",
            "secure",
            "--profile",
            "rest",
            "--base-url",
            &tls.url(),
            "--env",
            "staging",
            "--secret-stdin",
        ],
        REST_SECRET,
    );
    assert!(o.status.success(), "{}", crate::support::stderr(&o));
    let (token, _) = issue(&bw, "staging", "rest:*", "1h");

    // A self-signed upstream is not trusted by default: refused, nothing sent.
    let gw = serve(&bw);
    let r = call(
        "GET",
        &format!("{}/proxy/secure/v1/items/1", gw.base),
        Some(&token),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
    drop(gw);
    assert!(tls.seen().is_empty());

    // With its CA file configured for that upstream, the request goes through over TLS.
    std::fs::write(bw.path().join("secure-ca.pem"), ca_pem).unwrap();
    let cfg = bw.path().join("blastwall.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("\n[gateway]\nca_files = { secure = \"secure-ca.pem\" }\n");
    std::fs::write(&cfg, text).unwrap();
    let gw = serve(&bw);
    let r = call(
        "GET",
        &format!("{}/proxy/secure/v1/items/1", gw.base),
        Some(&token),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        tls.seen()[0].authorization().as_deref(),
        Some(format!("Bearer {REST_SECRET}").as_str())
    );
}

/// A request the gateway forwarded stays in the audit log when its client goes away before the
/// upstream answers: over HTTP/1.1 by closing the connection, over HTTP/2 by resetting the
/// stream. Otherwise an agent could carry out allowed operations and leave no trace of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_its_client_abandons_is_still_audited() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    let s = setup().await;
    let (token, id) = issue(&s.bw, "staging", "rest:*", "1h");
    let gw = serve(&s.bw);
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let rest = &s.rest;
    let upstream_saw = |n: usize| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        while rest.seen().len() < n {
            assert!(
                Instant::now() < deadline,
                "the upstream never got the request"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // Both wait for `/slow`'s answer (30 s), and are abandoned once the upstream has them.
    let mut h1 = TcpStream::connect(&addr).await.unwrap();
    h1.write_all(
        format!(
            "DELETE /proxy/api/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    upstream_saw(1).await;
    drop(h1);

    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = http::Request::delete(format!("{}/proxy/api/slow", gw.base))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let pending = tokio::spawn(client.request(req));
    upstream_saw(2).await;
    pending.abort();

    // Both are in the log well before the upstream would have answered.
    let deadline = Instant::now() + Duration::from_secs(5);
    let abandoned = loop {
        let tail = s.bw.json(&["log", "tail", "-n", "20"]);
        let found: Vec<Value> = tail
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "request.decide")
            .map(|e| serde_json::from_str::<Value>(e["detail"].as_str().unwrap()).unwrap())
            .collect();
        if found.len() >= 2 || Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(abandoned.len(), 2, "{abandoned:#?}");
    for d in &abandoned {
        assert_eq!(d["decision"], "allow", "{d:#}");
        assert_eq!(d["operations"][0], "rest:request.delete", "{d:#}");
        assert_eq!(d["status"], 499, "{d:#}");
        assert!(
            d["reason"]
                .as_str()
                .unwrap()
                .contains("may have been carried out"),
            "{d:#}"
        );
    }
    let stopping = Instant::now();
    gw.stop();
    assert!(stopping.elapsed() < Duration::from_secs(5));
    let tail = s.bw.json(&["log", "tail", "-n", "20"]);
    let mine = tail
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "request.decide" && e["actor"] == format!("token:{id}"))
        .count();
    assert_eq!(mine, 2, "each request is written once: {tail:#}");
    let o = s.bw.run(&["log", "verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}
