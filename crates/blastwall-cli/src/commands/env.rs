//! `blastwall env list|add`.

use std::path::Path;

use blastwall_core::env::EnvSource;
use blastwall_core::seal::EnvIdentity;
use blastwall_core::{EnvName, Environment, Tier};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::context::{Ctx, KeyState, load_env_identity, write_secret_file};
use crate::exit::Exit;
use crate::failure::Failure;
use crate::output;

/// `blastwall env …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Cmd {
    /// List environments: name, tier, longest token lifetime, and whether this process holds the key
    #[command(after_help = "Examples:\n  blastwall env list\n  blastwall env list --json")]
    List {
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// Add an environment and write its key (mode 0600)
    #[command(
        after_help = "Examples:\n  blastwall env add qa --tier nonprod --max-token-ttl 24h\n  blastwall env add live --tier prod"
    )]
    Add {
        /// Its name: a lowercase letter, then lowercase letters, digits or `-`
        name: String,
        /// `prod` or `nonprod`
        #[arg(long)]
        tier: Tier,
        /// Longest token lifetime [default: 1h for prod, 8h for nonprod]
        #[arg(long, value_name = "DURATION", value_parser = blastwall_core::parse_duration)]
        max_token_ttl: Option<std::time::Duration>,
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
        Cmd::List { json } => list(&ctx, env, json).await,
        Cmd::Add {
            name,
            tier,
            max_token_ttl,
            json,
        } => add(&ctx, env, &name, tier, max_token_ttl, json).await,
    }
}

async fn list(ctx: &Ctx, env: &dyn EnvSource, as_json: bool) -> Result<Exit, Failure> {
    let envs = ctx.store.env_list().await?;
    let rows: Vec<(Environment, KeyState)> = envs
        .into_iter()
        .map(|e| {
            let k = load_env_identity(&ctx.config, &e, env);
            (e, k)
        })
        .collect();
    if as_json {
        let items: Vec<_> = rows
            .iter()
            .map(|(e, k)| {
                json!({
                    "name": e.name,
                    "tier": e.tier,
                    "max_token_ttl": blastwall_core::format_duration(e.max_token_ttl),
                    "max_token_ttl_secs": e.max_token_ttl.as_secs(),
                    "recipient": e.recipient,
                    "key": k.label(),
                    "key_detail": match k { KeyState::Present(_) => None, KeyState::Sealed(d) | KeyState::Invalid(d) => Some(d.clone()) },
                })
            })
            .collect();
        output::json(&items)?;
    } else {
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|(e, k)| {
                vec![
                    e.name.to_string(),
                    e.tier.to_string(),
                    blastwall_core::format_duration(e.max_token_ttl),
                    k.label().to_owned(),
                ]
            })
            .collect();
        output::table(&["NAME", "TIER", "MAX TOKEN TTL", "KEY"], &table);
    }
    Ok(Exit::Clean)
}

async fn add(
    ctx: &Ctx,
    env: &dyn EnvSource,
    name: &str,
    tier: Tier,
    max_ttl: Option<std::time::Duration>,
    as_json: bool,
) -> Result<Exit, Failure> {
    let name = EnvName::new(name)?;
    let max_token_ttl = max_ttl.unwrap_or_else(|| tier.default_max_token_ttl());
    if max_token_ttl.as_secs() == 0 {
        return Err(Failure::usage(
            "`--max-token-ttl` must be at least 1s",
            "e.g. `--max-token-ttl 8h`",
        ));
    }
    if ctx.store.env_get(&name).await?.is_some() {
        return Err(Failure::usage(
            format!("environment `{name}` already exists"),
            "`blastwall env list` shows the environments",
        ));
    }
    let auditor = ctx.auditor(env)?;
    let id = EnvIdentity::generate();
    let key_path = ctx.config.default_key_path(&name);
    write_secret_file(&key_path, id.to_file_text().expose_secret())?;
    let e = Environment {
        name: name.clone(),
        tier,
        max_token_ttl,
        recipient: id.recipient().to_string(),
    };
    let result = ctx
        .store
        .env_add(
            &e,
            ctx.record(
                "env.add",
                Some(&name),
                None,
                json!({"tier": tier, "max_token_ttl_secs": max_token_ttl.as_secs(), "recipient": e.recipient}),
            ),
        )
        .await;
    let entry = match result {
        Ok(entry) => entry,
        Err(err) => {
            // Nothing half-done: the key of an environment that was not added goes away.
            let _ = std::fs::remove_file(&key_path);
            return Err(err.into());
        }
    };
    auditor.record(&entry).await?;
    auditor.finish().await?;
    if as_json {
        output::json(&json!({
            "name": name, "tier": tier,
            "max_token_ttl": blastwall_core::format_duration(max_token_ttl),
            "recipient": e.recipient, "key_file": key_path.display().to_string(),
        }))?;
    } else {
        output::line(&format!(
            "added environment {name} ({tier}, tokens up to {}), key {}",
            blastwall_core::format_duration(max_token_ttl),
            key_path.display()
        ));
    }
    Ok(Exit::Clean)
}
