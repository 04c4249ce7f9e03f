//! `blastwall serve`: the gateway.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use blastwall_core::env::EnvSource;
use blastwall_gateway::{Gateway, GatewaySetup};
use blastwall_store::Auditor;

use crate::context::{Ctx, KeyState, load_env_identity, load_signer};
use crate::exit::Exit;
use crate::failure::Failure;

/// Arguments of `blastwall serve`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  blastwall serve
  blastwall serve --listen 0.0.0.0:7070
  curl -H \"Authorization: Bearer $BWT\" http://127.0.0.1:7070/proxy/railway/graphql/v2 \\
       -H 'content-type: application/json' \\
       -d '{\"query\":\"mutation { customDomainCreate(input: {}) { id } }\"}'

Serves /proxy/<upstream>/<path>, /healthz and /metrics. The gateway opens only the credentials of
the environments whose keys it holds; every other environment answers 503 environment_sealed.")]
pub(crate) struct Args {
    /// Address to listen on [default: `[gateway] listen`, 127.0.0.1:7070]
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

pub(crate) async fn run(
    flag: Option<&Path>,
    args: Args,
    env: &dyn EnvSource,
) -> Result<Exit, Failure> {
    let ctx = Ctx::open(flag, env).await?;
    let running = start(&ctx, env).await?;
    let addr = args.listen.unwrap_or(ctx.config.gateway.listen);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Failure::usage(
            format!("cannot listen on `{addr}`: {e}"),
            "pick a free address with `--listen`",
        )
    })?;
    let local = listener.local_addr()?;
    // The one line scripts wait for: where the gateway listens.
    eprintln!("blastwall gateway listening on http://{local}");
    tracing::info!(%local, "listening");
    running
        .serve(listener, shutdown_signal())
        .await
        .map_err(|e| Failure::usage(e.to_string(), "see the log above"))?;
    // A connection still waiting on the store (another process holding SQLite's write lock,
    // say) would hold the close for its whole busy timeout; the stop has already written the
    // audit entries, or logged those the store would not take.
    if tokio::time::timeout(std::time::Duration::from_secs(2), ctx.store.close())
        .await
        .is_err()
    {
        tracing::warn!("the store's connections did not close within 2s; stopping anyway");
    }
    Ok(Exit::Clean)
}

/// Builds a gateway from the config: the catalog and policies (validated now: a bad one stops
/// the start), and the environment keys this process holds.
pub(crate) async fn start(
    ctx: &Ctx,
    env: &dyn EnvSource,
) -> Result<blastwall_gateway::Running, Failure> {
    let catalog = blastwall_policy::Catalog::load(ctx.config.catalog_dir.as_deref())
        .map_err(|e| anyhow::Error::from(e).context("cannot load the catalog"))?;
    let mut keys = HashMap::new();
    for e in ctx.store.env_list().await? {
        match load_env_identity(&ctx.config, &e, env) {
            KeyState::Present(id) => {
                tracing::info!(env = %e.name, "environment key loaded");
                keys.insert(e.name, id);
            }
            KeyState::Sealed(why) => {
                tracing::info!(env = %e.name, %why, "environment sealed on this gateway")
            }
            KeyState::Invalid(why) => {
                return Err(Failure::usage(
                    format!("the key of environment `{}` is unusable: {why}", e.name),
                    "fix or remove the key; a gateway never starts with a broken key",
                ));
            }
        }
    }
    let signer = load_signer(&ctx.config, env)?;
    let setup = GatewaySetup {
        store: ctx.store.clone(),
        auditor: Auditor::new(ctx.store.clone(), signer, ctx.config.audit.checkpoint_every),
        catalog: Arc::new(catalog),
        policy_dir: ctx.config.policy_dir.clone(),
        keys,
        config: ctx.config.gateway.clone(),
    };
    Gateway::start(setup).await.map_err(|e| {
        Failure::usage_or_own_hint(
            &format!("{e:#}"),
            "fix the problem above; the gateway did not start",
        )
    })
}

async fn shutdown_signal() {
    super::shutdown_requested().await;
    tracing::info!("shutting down: finishing requests and writing the audit log");
}
