//! `blastwall upstream add|list`: the APIs the gateway fronts, and their sealed credentials.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::path::Path;

use blastwall_core::EnvName;
use blastwall_core::env::EnvSource;
use blastwall_core::record::{SealedCredential, UpstreamRecord};
use blastwall_core::seal::EnvRecipient;
use jiff::Timestamp;
use secrecy::ExposeSecret;
use serde_json::json;
use zeroize::Zeroizing;

use crate::context::{Ctx, KeyState, load_env_identity};
use crate::exit::Exit;
use crate::failure::Failure;
use crate::output;

/// Largest credential accepted on stdin.
const MAX_SECRET: usize = 64 * 1024;

/// `blastwall upstream …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Cmd {
    /// Add an upstream, or seal its credential for one more environment
    #[command(after_help = "\
Examples:
  blastwall upstream add railway --profile railway --base-url https://backboard.railway.com \\
      --env production --secret-stdin < token-file
  blastwall upstream add railway --env staging --secret-stdin < staging-token

The credential is sealed at once to the environment's public key: this needs no private key,
and the credential is never echoed, logged or stored in the clear.")]
    Add {
        /// The upstream's name, as in `/proxy/<name>/…`
        name: String,
        /// The catalog profile that classifies its requests (railway, github, rest, …)
        #[arg(long)]
        profile: Option<String>,
        /// Where requests are forwarded (https://…)
        #[arg(long, value_name = "URL")]
        base_url: Option<String>,
        /// The environment whose credential this is
        #[arg(long, value_name = "ENV", requires = "secret_stdin")]
        env: Option<String>,
        /// Read the credential from standard input (pipe it in; it is never echoed)
        #[arg(long, requires = "env")]
        secret_stdin: bool,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// Check that this process can open an upstream's credential for an environment (never prints it)
    #[command(after_help = "\
Examples:
  blastwall upstream check railway --env production

Exit 0 when the credential opens with the environment key this process holds; exit 1 when the
environment is sealed here (no key), the key is wrong, or there is no credential.")]
    Check {
        /// The upstream's name
        name: String,
        /// The environment
        #[arg(long, value_name = "ENV")]
        env: String,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// List upstreams: name, profile, base URL, environments holding a credential (never a secret)
    #[command(
        after_help = "Examples:\n  blastwall upstream list\n  blastwall upstream list --json"
    )]
    List {
        /// JSON output
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(
    flag: Option<&Path>,
    cmd: Cmd,
    env: &dyn EnvSource,
) -> Result<Exit, Failure> {
    let ctx = Ctx::open(flag, env).await?;
    match cmd {
        Cmd::List { json } => list(&ctx, json).await,
        Cmd::Check { name, env: e, json } => check(&ctx, env, &name, &e, json).await,
        Cmd::Add {
            name,
            profile,
            base_url,
            env: cred_env,
            secret_stdin,
            json,
        } => {
            add(
                &ctx,
                env,
                &name,
                profile,
                base_url,
                cred_env,
                secret_stdin,
                json,
            )
            .await
        }
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one argument per flag of the subcommand"
)]
async fn add(
    ctx: &Ctx,
    env: &dyn EnvSource,
    name: &str,
    profile: Option<String>,
    base_url: Option<String>,
    cred_env: Option<String>,
    secret_stdin: bool,
    as_json: bool,
) -> Result<Exit, Failure> {
    let name = EnvName::new(name).map_err(|e| {
        Failure::usage(
            format!("invalid upstream name `{}`", e.value),
            "use a lowercase letter, then lowercase letters, digits or `-`",
        )
    })?;
    let existing = ctx.store.upstream_get(&name).await?;
    let catalog =
        blastwall_policy::Catalog::load(ctx.config.catalog_dir.as_deref()).map_err(|e| {
            Failure::usage_or_own_hint(
                &format!("cannot load the catalog: {e}"),
                "fix the profile file named above",
            )
        })?;

    // Validate everything before writing anything.
    let new_upstream = match (&existing, profile, base_url) {
        (None, Some(profile), Some(base_url)) => {
            if catalog.profile(&profile).is_none() {
                let known: Vec<String> = catalog.profiles().map(|p| p.name().to_owned()).collect();
                return Err(Failure::usage(
                    format!("unknown profile `{profile}`"),
                    format!("use one of: {}", known.join(", ")),
                ));
            }
            Some(UpstreamRecord {
                name: name.clone(),
                profile,
                base_url: check_base_url(&base_url)?,
                created_at: Timestamp::now(),
            })
        }
        (None, _, _) => {
            return Err(Failure::usage(
                format!("upstream `{name}` does not exist yet"),
                "a new upstream needs `--profile` and `--base-url`",
            ));
        }
        (Some(up), profile, base_url) => {
            if profile.as_ref().is_some_and(|p| *p != up.profile)
                || base_url.as_ref().is_some_and(|u| *u != up.base_url)
            {
                return Err(Failure::usage(
                    format!(
                        "upstream `{name}` exists with profile `{}` and base URL `{}`",
                        up.profile, up.base_url
                    ),
                    "to add a credential, omit --profile and --base-url, or pass the same values",
                ));
            }
            if cred_env.is_none() {
                return Err(Failure::usage(
                    format!("upstream `{name}` already exists"),
                    "to seal its credential for an environment, pass `--env ENV --secret-stdin`",
                ));
            }
            None
        }
    };

    let sealed = match &cred_env {
        None => None,
        Some(e) => {
            let environment = ctx.environment(e).await?;
            let env_name = environment.name.clone();
            if !secret_stdin {
                return Err(Failure::usage(
                    "no credential given",
                    "pipe it in with `--secret-stdin < FILE`",
                ));
            }
            let secret = read_secret_stdin()?;
            let recipient = EnvRecipient::parse(&environment.recipient)?;
            let sealed = recipient.seal(&secret)?;
            Some(SealedCredential {
                upstream: name.clone(),
                env: env_name,
                sealed,
                recipient: environment.recipient.clone(),
                created_at: Timestamp::now(),
            })
        }
    };

    let auditor = ctx.auditor(env)?;
    if let Some(up) = &new_upstream {
        let entry = ctx
            .store
            .upstream_add(
                up,
                ctx.record(
                    "upstream.add",
                    None,
                    Some(name.as_str()),
                    json!({"profile": up.profile, "base_url": up.base_url}),
                ),
            )
            .await?;
        auditor.record(&entry).await?;
    }
    if let Some(cred) = &sealed {
        let replaced = ctx.store.credential_get(&name, &cred.env).await?.is_some();
        let entry = ctx
            .store
            .credential_put(
                cred,
                ctx.record(
                    if replaced {
                        "credential.replace"
                    } else {
                        "credential.add"
                    },
                    Some(&cred.env),
                    Some(name.as_str()),
                    json!({"recipient": cred.recipient, "sealed_bytes": cred.sealed.len(), "sealed_sha256": cred.fingerprint()}),
                ),
            )
            .await?;
        auditor.record(&entry).await?;
    }
    auditor.finish().await?;

    let summary = json!({
        "upstream": name,
        "added": new_upstream.is_some(),
        "credential_sealed_for": sealed.as_ref().map(|c| c.env.to_string()),
    });
    if as_json {
        output::json(&summary)?;
    } else {
        if new_upstream.is_some() {
            output::line(&format!("added upstream {name}"));
        }
        if let Some(c) = &sealed {
            output::line(&format!(
                "sealed the {name} credential for {} (only a holder of the {} key can open it)",
                c.env, c.env
            ));
        }
    }
    Ok(Exit::Clean)
}

async fn list(ctx: &Ctx, as_json: bool) -> Result<Exit, Failure> {
    let ups = ctx.store.upstream_list().await?;
    let mut envs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in ctx.store.credential_list().await? {
        envs.entry(c.upstream.to_string())
            .or_default()
            .push(c.env.to_string());
    }
    if as_json {
        let items: Vec<_> = ups
            .iter()
            .map(|u| {
                json!({
                    "name": u.name, "profile": u.profile, "base_url": u.base_url,
                    "created_at": u.created_at.to_string(),
                    "credentials": envs.get(u.name.as_str()).cloned().unwrap_or_default(),
                })
            })
            .collect();
        output::json(&items)?;
    } else {
        let rows: Vec<Vec<String>> = ups
            .iter()
            .map(|u| {
                vec![
                    u.name.to_string(),
                    u.profile.clone(),
                    u.base_url.clone(),
                    envs.get(u.name.as_str())
                        .map_or_else(|| "-".to_owned(), |v| v.join(",")),
                ]
            })
            .collect();
        output::table(&["NAME", "PROFILE", "BASE URL", "CREDENTIALS"], &rows);
    }
    Ok(Exit::Clean)
}

async fn check(
    ctx: &Ctx,
    env: &dyn EnvSource,
    name: &str,
    env_name: &str,
    as_json: bool,
) -> Result<Exit, Failure> {
    let name = EnvName::new(name)?;
    let environment = ctx.environment(env_name).await?;
    let env_name = environment.name.clone();
    let (ok, detail) = match ctx.store.credential_get(&name, &env_name).await? {
        None => (
            false,
            format!("no {name} credential is sealed for {env_name}"),
        ),
        // The wall: without this environment's key, the sealed value is never even read.
        Some(cred) => match load_env_identity(&ctx.config, &environment, env) {
            KeyState::Sealed(why) => (false, format!("{env_name} is sealed on this host ({why})")),
            KeyState::Invalid(why) => (false, format!("the {env_name} key is unusable: {why}")),
            KeyState::Present(identity) => match identity.unseal(&cred.sealed) {
                Ok(secret) => (
                    true,
                    format!(
                        "the {name} credential for {env_name} opens with this host's key ({} bytes)",
                        secret.expose_secret().len()
                    ),
                ),
                Err(e) => (false, e.to_string()),
            },
        },
    };
    if as_json {
        output::json(&json!({"upstream": name, "env": env_name, "ok": ok, "detail": detail}))?;
    } else {
        output::line(&format!("{}: {detail}", if ok { "ok" } else { "FAILED" }));
    }
    Ok(if ok { Exit::Clean } else { Exit::Failed })
}

/// An http(s) URL without credentials, query or fragment.
fn check_base_url(text: &str) -> Result<String, Failure> {
    let hint = "write it like `https://backboard.railway.com` (no credentials in the URL: use --secret-stdin)";
    let url = url::Url::parse(text)
        .map_err(|e| Failure::usage(format!("invalid base URL: {e}"), hint))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Failure::usage(
            "the base URL must be http:// or https:// with a host",
            hint,
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Failure::usage(
            "the base URL must not carry credentials",
            hint,
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Failure::usage(
            "the base URL must not have a query or fragment",
            hint,
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Reads the credential from stdin, refusing a terminal (it would echo) and an empty value.
fn read_secret_stdin() -> Result<Zeroizing<Vec<u8>>, Failure> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(Failure::usage(
            "refusing to read a credential from a terminal (it would be echoed)",
            "pipe it in: `--secret-stdin < FILE`",
        ));
    }
    let mut buf = Zeroizing::new(Vec::new());
    stdin
        .lock()
        .take(MAX_SECRET as u64 + 1)
        .read_to_end(&mut buf)?;
    if buf.len() > MAX_SECRET {
        return Err(Failure::usage(
            "the credential on stdin is over 64 KiB",
            "pipe only the credential",
        ));
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    if buf.is_empty() {
        return Err(Failure::usage(
            "the credential on stdin is empty",
            "pipe the credential in: `--secret-stdin < FILE`",
        ));
    }
    // Spaces or tabs at either end are refused, not trimmed: they are most likely a copying
    // mistake, and a tool that holds secrets does not quietly change one (the line end a file
    // adds is the one exception, above). Not echoed, not even its length.
    if buf
        .first()
        .into_iter()
        .chain(buf.last())
        .any(|&b| b == b' ' || b == b'\t')
    {
        return Err(Failure::usage(
            "the credential on stdin starts or ends with a space or a tab",
            "pipe only the credential, with no space or tab around it (a line end after it is fine)",
        ));
    }
    // It goes into an HTTP header: only what a header value can carry (visible ASCII, spaces
    // and tabs). Refused here, not by every request later.
    if !buf
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return Err(Failure::usage(
            "the credential on stdin has bytes an HTTP header cannot carry (control characters or non-ASCII)",
            "pipe only the credential's text, e.g. `--secret-stdin < FILE` with the token on one line",
        ));
    }
    // The gateway masks the credential wherever it appears in a response; a credential this
    // short would also be found in ordinary text (and is weak in itself).
    if buf.len() < MIN_SECRET {
        return Err(Failure::usage(
            format!("the credential on stdin is under {MIN_SECRET} characters"),
            "pipe the whole credential; provider API tokens are far longer",
        ));
    }
    Ok(buf)
}

/// The shortest credential accepted.
const MIN_SECRET: usize = 8;
