//! The `blastwall` command: one binary, a module per subcommand.
//!
//! `main` parses the arguments, loads the configuration once, runs the command and maps the
//! outcome to an exit code (see `docs/cli.md`). Errors are printed as one line, then `hint:`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
mod context;
mod exit;
mod failure;
mod output;

use exit::Exit;
use failure::Failure;

/// mimalloc instead of the system allocator: the gateway allocates and frees many small,
/// short-lived buffers per request, where glibc's malloc spent a tenth of the CPU
/// (docs/benchmarks.md, "Gateway").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keeps the blast radius of agents, scripts and people with production access inside the fence.
#[derive(Debug, Parser)]
#[command(name = "blastwall", version, about, long_about = None, after_help = EXAMPLES)]
pub(crate) struct Cli {
    // The global flags come last in every subcommand's help (`display_order`), after its own.
    /// Config file [default: ./blastwall.toml]
    #[arg(
        long,
        global = true,
        env = "BLASTWALL_CONFIG",
        value_name = "FILE",
        display_order = 900
    )]
    config: Option<PathBuf>,
    /// More log output on stderr (repeat for more)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, display_order = 901)]
    verbose: u8,
    /// Only errors on stderr
    #[arg(
        short,
        long,
        global = true,
        conflicts_with = "verbose",
        display_order = 902
    )]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "\
Examples:
  blastwall init
  blastwall token issue --env staging --owner jer@pocketos.com --holder cursor-agent \\
      --scope 'railway:domain.*' --ttl 8h
  blastwall log verify

Exit codes: 0 clean, 1 a failed check, 2 bad usage or an error, 3 a production secret outside
production (docs/cli.md).";

#[derive(Debug, Subcommand)]
enum Command {
    /// Set up Blastwall in a folder: config, store, one key per environment
    Init(commands::init::Args),
    /// List and add environments
    #[command(subcommand)]
    Env(commands::env::Cmd),
    /// Add and list upstream APIs and their sealed credentials
    #[command(subcommand)]
    Upstream(commands::upstream::Cmd),
    /// Issue, list, show and revoke gateway tokens
    #[command(subcommand)]
    Token(commands::token::Cmd),
    /// Read and verify the audit log
    #[command(subcommand)]
    Log(commands::log::Cmd),
    /// Run the gateway: the credential-injecting proxy agents talk to
    Serve(commands::serve::Args),
    /// Replay the PocketOS incident through Blastwall on loopback (needs nothing but this binary)
    Demo(commands::demo::Args),
    /// Search files, environments and processes for secrets, above all production secrets
    Scan(commands::scan::Args),
    /// Export an environment's secret fingerprints for scans elsewhere
    #[command(subcommand)]
    Wall(commands::wall::Cmd),
    /// Show the resolved configuration
    #[command(subcommand)]
    Config(commands::config::Cmd),
    /// Run the backup vault: create-only, time-locked storage under its own credentials
    #[command(subcommand)]
    Vault(commands::vault::Cmd),
    /// Back up sources to a vault, list backups, drill and restore them
    #[command(subcommand)]
    Backup(commands::backup::Cmd),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Clean
            };
            let _ = e.print();
            return code.into();
        }
    };
    init_tracing(cli.verbose, cli.quiet);
    output::set_quiet(cli.quiet);
    // One worker per CPU this process may run on (tokio's default, which follows the CPU
    // affinity mask and `TOKIO_WORKER_THREADS`): more workers than CPUs only preempt each other.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            Failure::from(anyhow::Error::from(e).context("cannot start the async runtime")).print();
            return Exit::Usage.into();
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code.into(),
        Err(failure) => {
            failure.print();
            failure.code.into()
        }
    }
}

async fn run(cli: Cli) -> Result<Exit, Failure> {
    let env = blastwall_core::env::ProcessEnv;
    match cli.command {
        Command::Init(args) => commands::init::run(cli.config.as_deref(), args, &env).await,
        Command::Env(cmd) => commands::env::run(cli.config.as_deref(), cmd, &env).await,
        Command::Upstream(cmd) => commands::upstream::run(cli.config.as_deref(), cmd, &env).await,
        Command::Token(cmd) => commands::token::run(cli.config.as_deref(), cmd, &env).await,
        Command::Log(cmd) => commands::log::run(cli.config.as_deref(), cmd, &env).await,
        Command::Serve(args) => commands::serve::run(cli.config.as_deref(), args, &env).await,
        Command::Demo(args) => commands::demo::run(args).await,
        Command::Scan(args) => commands::scan::run(args, cli.verbose > 0, cli.quiet),
        Command::Wall(cmd) => commands::wall::run(cli.config.as_deref(), cmd, &env).await,
        Command::Config(cmd) => commands::config::run(cli.config.as_deref(), cmd, &env).await,
        Command::Vault(cmd) => commands::vault::run(cmd).await,
        Command::Backup(cmd) => commands::backup::run(cli.config.as_deref(), cmd, &env).await,
    }
}

fn init_tracing(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = if quiet {
        EnvFilter::new("error")
    } else if verbose > 0 {
        EnvFilter::new(match verbose {
            1 => "info",
            2 => "debug",
            _ => "trace",
        })
    } else {
        EnvFilter::try_from_env(blastwall_core::env::LOG).unwrap_or_else(|_| EnvFilter::new("warn"))
    };
    // Colours only for a person at a terminal: a log file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
}
