//! `blastwall demo`: the PocketOS incident of April 2026, replayed through Blastwall on loopback.
//!
//! In a temporary folder it sets up a staging and a production environment, seals a different
//! Railway credential for each, issues the agent a staging token scoped to `railway:domain.*`,
//! starts a staging gateway (holding the staging key only, as a staging host would) in front of a
//! built-in stand-in for Railway's GraphQL API, and makes the agent's calls. Every step checks
//! what it shows; the exit code is 1 if any step did not behave.

mod fake_railway;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::context::Ctx;
use crate::exit::Exit;
use crate::failure::Failure;
use crate::output;

/// Arguments of `blastwall demo`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  blastwall demo
  blastwall demo --keep     # keep the temporary folder to look around

Needs nothing but this binary: everything runs on 127.0.0.1 in a temporary folder. The Railway
API here is a stand-in built into the binary and used only by this command.")]
pub(crate) struct Args {
    /// Keep the temporary folder and print its path
    #[arg(long)]
    keep: bool,
}

const PROD_SECRET: &str = "railway-PRODUCTION-token-5f1c0e9a77d24b3c";
const STAGING_SECRET: &str = "railway-staging-token-0b7e2d4c19a84f66";

struct Demo {
    dir: PathBuf,
    exe: PathBuf,
    /// The checks that did not pass, in order (named again in the summary).
    failed: Vec<String>,
}

impl Demo {
    fn say(&self, text: &str) {
        output::line(text);
    }

    fn check(&mut self, passed: bool, what: &str) {
        output::line(&format!(
            "   {} {what}",
            if passed { "✓" } else { "✗ FAILED:" }
        ));
        if !passed {
            self.failed.push(what.to_owned());
        }
    }

    /// Runs `blastwall ARGS` in the demo folder, printing the command.
    fn bw(&mut self, args: &[&str], stdin: Option<&str>) -> Result<String, Failure> {
        self.say(&format!("   $ blastwall {}", shell_words(args)));
        let mut cmd = Command::new(&self.exe);
        cmd.args(args)
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("USER", "demo-admin")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn()?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use std::io::Write;
            pipe.write_all(text.as_bytes())?;
        }
        drop(child.stdin.take());
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(Failure::usage(
                format!(
                    "`blastwall {}` failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                "this is a bug in the demo; please report it",
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn shell_words(args: &[&str]) -> String {
    args.iter()
        .map(|a| {
            if a.contains(['*', ' ', '{']) {
                format!("'{a}'")
            } else {
                (*a).to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) async fn run(args: Args) -> Result<Exit, Failure> {
    let tmp = tempfile::Builder::new()
        .prefix("blastwall-demo-")
        .tempdir()?;
    let exe = std::env::current_exe()?;
    let mut demo = Demo {
        dir: tmp.path().to_path_buf(),
        exe,
        failed: Vec::new(),
    };
    let result = replay(&mut demo).await;
    if args.keep {
        let kept = tmp.keep();
        output::line(&format!("\nthe demo folder is kept at {}", kept.display()));
    }
    result?;
    output::line(&summary(&demo.failed));
    Ok(verdict(&demo.failed))
}

/// The last line of the demo: the verdict, naming each step that did not behave.
fn summary(failed: &[String]) -> String {
    if failed.is_empty() {
        "\nevery step behaved: the deletion that took nine seconds in April 2026 was stopped"
            .to_owned()
    } else {
        let mut out = format!("\n{} step(s) did not behave:", failed.len());
        for what in failed {
            out.push_str(&format!("\n   ✗ {what}"));
        }
        out
    }
}

/// Exit 0 only when every check passed; 1 (a failed check) otherwise.
fn verdict(failed: &[String]) -> Exit {
    if failed.is_empty() {
        Exit::Clean
    } else {
        Exit::Failed
    }
}

async fn replay(demo: &mut Demo) -> Result<(), Failure> {
    demo.say("Blastwall demo: the PocketOS incident (April 2026), replayed through Blastwall on loopback.");
    demo.say(
        "An agent working in staging finds a way to production and deletes the database volume,",
    );
    demo.say("backups included. Here it holds only a scoped, staging-bound gateway token.\n");

    // The stand-in for Railway.
    let seen: fake_railway::Shared = Arc::new(Mutex::new(fake_railway::Seen::default()));
    if let Ok(mut s) = seen.lock() {
        s.volumes
            .insert("vol_8f2 pg-data (production database and its backups)".to_owned());
    }
    let railway_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let railway_addr = railway_listener.local_addr()?;
    let seen_for_server = seen.clone();
    let railway = tokio::spawn(async move {
        let _ = axum::serve(railway_listener, fake_railway::router(seen_for_server)).await;
    });
    demo.say(&format!(
        "A stand-in for Railway's GraphQL API answers on http://{railway_addr} (built into blastwall, used only by this demo).\n"
    ));

    demo.say("1. The operator sets up two environments, each with its own key, and seals a different Railway");
    demo.say("   credential for each (sealing needs only the environment's public key).");
    demo.bw(&["init"], None)?;
    let base = format!("http://{railway_addr}");
    demo.bw(
        &[
            "upstream",
            "add",
            "railway",
            "--profile",
            "railway",
            "--base-url",
            &base,
            "--env",
            "production",
            "--secret-stdin",
        ],
        Some(PROD_SECRET),
    )?;
    demo.bw(
        &[
            "upstream",
            "add",
            "railway",
            "--env",
            "staging",
            "--secret-stdin",
        ],
        Some(STAGING_SECRET),
    )?;
    let issued = demo.bw(
        &[
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
            "--json",
        ],
        None,
    )?;
    let issued: Value = serde_json::from_str(&issued).map_err(anyhow::Error::from)?;
    let token = issued["token"].as_str().unwrap_or_default().to_owned();
    demo.check(
        token.starts_with("bwt_staging_"),
        "the agent holds a staging token scoped to railway:domain.*, owned by jer@pocketos.com",
    );

    // A staging host does not hold the production key.
    let prod_host = demo.dir.join("production-host");
    std::fs::create_dir_all(&prod_host)?;
    std::fs::rename(
        demo.dir.join("data/keys/production.key"),
        prod_host.join("production.key"),
    )?;
    demo.say(
        "   (the production key moves to the production host: this staging gateway never has it)\n",
    );

    demo.say("2. The staging gateway starts, holding the staging key only.");
    let env: HashMap<String, String> = [("USER".to_owned(), "demo-gateway".to_owned())].into();
    let config = demo.dir.join("blastwall.toml");
    let ctx = Ctx::open(Some(&config), &env).await?;
    let running = super::serve::start(&ctx, &env).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gw_addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(running.serve(listener, async {
        let _ = stop_rx.await;
    }));
    demo.say(&format!("   gateway on http://{gw_addr}\n"));
    let url = format!("http://{gw_addr}/proxy/railway/graphql/v2");

    demo.say("3. The agent creates a custom domain (in its scope).");
    let (status, body) = post(&url, &token, r#"{"query":"mutation { customDomainCreate(input: {domain: \"app.pocketos.example\"}) { id domain } }"}"#).await?;
    demo.say(&format!("   → {status} {}", body.trim()));
    demo.check(status == 200, "forwarded to Railway");
    let auths = seen
        .lock()
        .map(|s| s.authorizations.clone())
        .unwrap_or_default();
    demo.check(
        auths
            .last()
            .is_some_and(|a| a == &format!("Bearer {STAGING_SECRET}")),
        "Railway received the staging credential, injected by the gateway",
    );
    demo.check(
        auths.iter().all(|a| !a.contains(&token)),
        "Railway never saw the agent's token",
    );
    demo.check(
        !body.contains(STAGING_SECRET),
        "the agent never saw the staging credential",
    );

    demo.say("\n4. The agent hits a credential mismatch and tries what the PocketOS agent did: volumeDelete.");
    let (status, body) = post(
        &url,
        &token,
        r#"{"query":"mutation { volumeDelete(volumeId: \"vol_8f2\") }"}"#,
    )
    .await?;
    demo.say(&format!("   → {status} {}", pretty(&body)));
    let reply: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    demo.check(
        status == 403
            && reply["error"] == "denied"
            && reply["operation"] == "railway:volume.delete",
        "denied: railway:volume.delete is outside the token's scope",
    );
    demo.check(
        seen.lock().map(|s| !s.volumes.is_empty()).unwrap_or(false),
        "the volume (and the backups in it) is still there",
    );

    demo.say("\n   The same call hidden behind an alias and a batch:");
    let (status, body) = post(
        &url,
        &token,
        r#"[{"query":"mutation { customDomainCreate(input: {}) { id } }"},{"query":"mutation Cleanup { tidy: volumeDelete(volumeId: \"vol_8f2\") }"}]"#,
    )
    .await?;
    demo.say(&format!("   → {status} {}", body.trim()));
    demo.check(
        status == 403,
        "denied: the strictest operation of the batch decides",
    );

    demo.say("\n5. The agent reaches for production with what it has.");
    let forged = token.replacen("bwt_staging_", "bwt_production_", 1);
    let (status, body) = post(
        &url,
        &forged,
        r#"{"query":"mutation { volumeDelete(volumeId: \"vol_8f2\") }"}"#,
    )
    .await?;
    demo.say(&format!(
        "   token relabelled as production → {status} {}",
        body.trim()
    ));
    demo.check(
        status == 401,
        "refused: the token is bound to staging (its checksum covers the environment)",
    );
    let leaked = find_in_tree(&demo.dir, PROD_SECRET.as_bytes(), &prod_host);
    demo.check(leaked.is_none(), "no production credential is readable anywhere on the staging host (files, store, keys searched)");
    let staging_can_open = {
        let store = ctx.store.clone();
        let prod = blastwall_core::EnvName::new("production")?;
        let name = blastwall_core::EnvName::new("railway")?;
        let sealed = store.credential_get(&name, &prod).await?;
        let staging_key = std::fs::read_to_string(demo.dir.join("data/keys/staging.key"))?;
        let id = blastwall_core::seal::EnvIdentity::parse(&staging_key)?;
        sealed.is_some_and(|s| id.unseal(&s.sealed).is_ok())
    };
    demo.check(
        !staging_can_open,
        "the sealed production credential does not open with the staging key",
    );

    let _ = stop_tx.send(());
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(Failure::usage(
                format!("the demo gateway failed: {e}"),
                "this is a bug in the demo",
            ));
        }
        Err(e) => {
            return Err(Failure::usage(
                format!("the demo gateway failed: {e}"),
                "this is a bug in the demo",
            ));
        }
    }
    railway.abort();

    demo.say("\n6. The audit trail (every decision, hash-chained):");
    let tail = demo.bw(&["log", "tail", "-n", "8"], None)?;
    for line in tail.lines() {
        demo.say(&format!("   {line}"));
    }
    let verify = demo.bw(&["log", "verify"], None)?;
    demo.say(&format!("   {}", verify.trim()));
    demo.check(verify.starts_with("ok"), "the audit chain verifies");
    let denied = tail.matches("\"decision\":\"deny\"").count();
    demo.check(denied >= 3, "the refusals are in the audit log");
    let log_text = std::fs::read(demo.dir.join("data/blastwall.db")).unwrap_or_default();
    demo.check(
        !contains(&log_text, token.as_bytes()) && !contains(&log_text, STAGING_SECRET.as_bytes()),
        "no token or credential in the store or the audit log",
    );
    Ok(())
}

async fn post(url: &str, token: &str, body: &str) -> Result<(u16, String), Failure> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::post(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .map_err(anyhow::Error::from)?;
    let resp = client.request(req).await.map_err(anyhow::Error::from)?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(anyhow::Error::from)?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

fn pretty(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .map_or_else(|| body.to_owned(), |s| s.replace('\n', "\n     "))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The first file under `dir` (skipping `skip`) that contains `needle`.
fn find_in_tree(dir: &Path, needle: &[u8], skip: &Path) -> Option<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p == skip {
                continue;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() && std::fs::read(&p).is_ok_and(|b| contains(&b, needle)) => {
                    return Some(p);
                }
                _ => {}
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The failure path of `demo` (issue 4: "exits non-zero if any step did not behave"): a
    /// failed check is kept, named in the summary, and turns the exit code to 1.
    #[test]
    fn a_step_that_did_not_behave_fails_the_demo() {
        let mut demo = Demo {
            dir: PathBuf::new(),
            exe: PathBuf::new(),
            failed: Vec::new(),
        };
        demo.check(true, "forwarded to Railway");
        assert_eq!(verdict(&demo.failed), Exit::Clean);
        assert!(summary(&demo.failed).contains("every step behaved"));
        demo.check(false, "the volume (and the backups in it) is still there");
        demo.check(true, "the audit chain verifies");
        assert_eq!(verdict(&demo.failed), Exit::Failed);
        let text = summary(&demo.failed);
        assert!(text.contains("1 step(s) did not behave"), "{text}");
        assert!(
            text.contains("✗ the volume (and the backups in it) is still there"),
            "{text}"
        );
        assert!(!text.contains("every step behaved"), "{text}");
    }
}
