//! `blastwall wall export`: keyed fingerprints of an environment's secrets, for scans elsewhere.

use std::path::{Path, PathBuf};

use blastwall_core::env::EnvSource;
use blastwall_scan::WallFile;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::context::{Ctx, KeyState, load_env_identity};
use crate::exit::Exit;
use crate::failure::Failure;
use crate::output;

/// `blastwall wall …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Cmd {
    /// Write keyed fingerprints (HMAC-SHA256) of every secret of an environment, never the secrets
    #[command(after_help = "\
Examples:
  blastwall wall export --env production -o production.wall    # on the production gateway
  blastwall scan --wall production.wall /                      # then, on a staging host

Covers the environment's sealed upstream credentials (so it needs the environment's key) and the
digests of its tokens. The file reveals no secret, but whoever holds it can test a guess, so keep
it where the scans run.")]
    Export {
        /// The environment
        #[arg(long, value_name = "ENV")]
        env: String,
        /// Where to write the wall file
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// JSON summary on stdout
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(
    flag: Option<&Path>,
    cmd: Cmd,
    env: &dyn EnvSource,
) -> Result<Exit, Failure> {
    let Cmd::Export {
        env: name,
        output: out,
        json,
    } = cmd;
    let ctx = Ctx::open(flag, env).await?;
    let environment = ctx.environment(&name).await?;
    let name = environment.name.clone();
    let identity = match load_env_identity(&ctx.config, &environment, env) {
        KeyState::Present(id) => id,
        KeyState::Sealed(why) => {
            return Err(Failure::usage(
                format!("environment `{name}` is sealed here ({why})"),
                "run `wall export` on a host that holds the environment's key, e.g. its gateway",
            ));
        }
        KeyState::Invalid(why) => {
            return Err(Failure::usage(
                format!("the `{name}` key is unusable: {why}"),
                "fix the key",
            ));
        }
    };
    let mut opened = Vec::new();
    for c in ctx
        .store
        .credential_list()
        .await?
        .into_iter()
        .filter(|c| c.env == name)
    {
        let secret = identity.unseal(&c.sealed).map_err(|e| {
            Failure::usage(
                format!(
                    "the `{}` credential for `{name}` does not open: {e}",
                    c.upstream
                ),
                "re-seal it with `blastwall upstream add`",
            )
        })?;
        opened.push(secret);
    }
    let mut wall = WallFile::build(
        &name,
        environment.tier,
        opened.iter().map(|s| s.expose_secret().as_slice()),
    )
    .map_err(|e| anyhow::Error::from(e).context("cannot build the wall file"))?;
    let tokens = ctx.store.token_list(Some(&name)).await?;
    let digests: Vec<[u8; 32]> = tokens
        .iter()
        .filter_map(|t| t.digest.as_ref().map(|d| *d.as_bytes()))
        .collect();
    wall.add_token_digests(digests.iter());
    wall.save(&out).map_err(|e| {
        Failure::usage(
            format!("cannot write `{}`: {e}", out.display()),
            "check the folder exists and is writable",
        )
    })?;
    if json {
        output::json(
            &json!({"env": name, "tier": environment.tier, "file": out.display().to_string(), "credentials": opened.len(), "tokens": digests.len(), "skipped_short": wall.skipped_short()}),
        )?;
    } else {
        output::line(&format!(
            "wrote {}: fingerprints of {} credential(s) and {} token(s) of {name} ({})",
            out.display(),
            opened.len(),
            digests.len(),
            environment.tier
        ));
        if wall.skipped_short() > 0 {
            output::note(&format!(
                "warning: {} secret(s) under 8 bytes were not fingerprinted (too short to tell from noise)",
                wall.skipped_short()
            ));
        }
    }
    Ok(Exit::Clean)
}
