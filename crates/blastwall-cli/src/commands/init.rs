//! `blastwall init`: a config file, a data folder with the store, and one key per environment.

use std::path::Path;

use blastwall_core::audit::CheckpointSigner;
use blastwall_core::config::{Config, StoreUrl};
use blastwall_core::env::EnvSource;
use blastwall_core::environment::parse_name_tier;
use blastwall_core::seal::EnvIdentity;
use blastwall_core::{EnvName, Environment, Tier};
use blastwall_store::Auditor;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::context::{self, config_path, write_secret_file};
use crate::exit::Exit;
use crate::failure::Failure;
use crate::output;

/// Arguments of `blastwall init`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  blastwall init                                   # staging (nonprod) and production (prod)
  blastwall init --env dev:nonprod --env live:prod
  blastwall init --store-url postgres://blastwall@db/blastwall

Writes blastwall.toml, data/blastwall.db and data/keys/<env>.key (mode 0600) in the current
folder (or beside --config). Move each prod key to the hosts that serve that environment only.")]
pub(crate) struct Args {
    /// An environment as NAME:TIER (tier `prod` or `nonprod`); repeatable
    #[arg(long = "env", value_name = "NAME:TIER")]
    envs: Vec<String>,
    /// Store URL to write into the config instead of the embedded SQLite
    #[arg(long, value_name = "URL")]
    store_url: Option<String>,
    /// Print what was created as JSON
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(
    flag: Option<&Path>,
    args: Args,
    env: &dyn EnvSource,
) -> Result<Exit, Failure> {
    let path = config_path(flag);
    if path.exists() {
        return Err(Failure::usage(
            format!("`{}` already exists", path.display()),
            "this folder is already set up; use `blastwall env add` to add an environment",
        ));
    }
    let envs: Vec<(EnvName, Tier)> = if args.envs.is_empty() {
        vec![
            (EnvName::new("staging")?, Tier::Nonprod),
            (EnvName::new("production")?, Tier::Prod),
        ]
    } else {
        args.envs
            .iter()
            .map(|e| parse_name_tier(e))
            .collect::<Result<_, _>>()?
    };
    let mut seen = std::collections::BTreeSet::new();
    for (name, _) in &envs {
        if !seen.insert(name.clone()) {
            return Err(Failure::usage(
                format!("environment `{name}` is named twice"),
                "give each --env once",
            ));
        }
    }

    let mut text =
        String::from("# Blastwall configuration (docs/configuration.md)\ndata_dir = \"data\"\n");
    if let Some(url) = &args.store_url {
        StoreUrl::parse(url, Path::new(".")).map_err(|why| {
            Failure::usage(
                format!("invalid store URL: {why}"),
                "pass `sqlite://PATH` or `postgres://…`",
            )
        })?;
        text.push_str(&format!("\n[store]\nurl = {}\n", toml_string(url)));
    } else {
        text.push_str("\n[store]\n# url = \"postgres://blastwall@db/blastwall\"   # default: sqlite in data_dir\n");
    }
    text.push_str("\n[audit]\ncheckpoint_every = 100\n");

    let base = context::absolute_parent(&path)?;
    let config = Config::parse(Some(&path), Some(&text), &base, env)?;
    std::fs::create_dir_all(&config.data_dir)?;

    // Keys first: nothing in the store may refer to a key that was not written.
    let signer = CheckpointSigner::generate()
        .map_err(|e| anyhow::anyhow!("no randomness from the operating system: {e}"))?;
    write_secret_file(&config.audit.signing_key, &signer.to_file_text())?;
    let mut created = Vec::new();
    for (name, tier) in &envs {
        let id = EnvIdentity::generate();
        let key_path = config.default_key_path(name);
        write_secret_file(&key_path, id.to_file_text().expose_secret())?;
        created.push((
            Environment {
                name: name.clone(),
                tier: *tier,
                max_token_ttl: tier.default_max_token_ttl(),
                recipient: id.recipient().to_string(),
            },
            key_path,
        ));
    }

    let store = blastwall_store::open(&config.store).await?;
    let auditor = Auditor::new(store.clone(), signer, config.audit.checkpoint_every);
    let actor = context::actor(env);
    for (e, _) in &created {
        let entry = store
            .env_add(
                e,
                context::record(
                    &actor,
                    "env.add",
                    Some(&e.name),
                    None,
                    json!({"tier": e.tier, "max_token_ttl_secs": e.max_token_ttl.as_secs(), "recipient": e.recipient}),
                ),
            )
            .await?;
        auditor.record(&entry).await?;
    }
    auditor.finish().await?;
    // Written last: a folder with a config file is a finished setup.
    std::fs::write(&path, &text)?;

    if args.json {
        output::json(&json!({
            "config": path.display().to_string(),
            "store": config.store.redacted(),
            "environments": created.iter().map(|(e, k)| json!({
                "name": e.name, "tier": e.tier, "max_token_ttl": blastwall_core::format_duration(e.max_token_ttl),
                "recipient": e.recipient, "key_file": k.display().to_string(),
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        output::line(&format!("wrote {}", path.display()));
        output::line(&format!("store {}", config.store.redacted()));
        for (e, k) in &created {
            output::line(&format!(
                "environment {} ({}, tokens up to {}), key {}",
                e.name,
                e.tier,
                blastwall_core::format_duration(e.max_token_ttl),
                k.display()
            ));
        }
        if created.iter().any(|(e, _)| e.tier == Tier::Prod) {
            output::line(
                "next: move each prod key to the hosts that serve that environment, and nowhere else",
            );
        }
    }
    Ok(Exit::Clean)
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    toml_escape(s)
}

fn toml_escape(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
