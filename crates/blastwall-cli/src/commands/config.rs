//! `blastwall config show`.

use std::path::Path;

use blastwall_core::env::EnvSource;

use crate::context::load_config;
use crate::exit::Exit;
use crate::failure::Failure;
use crate::output;

/// `blastwall config …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Cmd {
    /// Print the resolved configuration (file, environment overrides, defaults), secrets redacted
    #[command(
        after_help = "Examples:\n  blastwall config show\n  BLASTWALL_STORE_URL=postgres://u:pw@db/bw blastwall config show --json"
    )]
    Show {
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
    let Cmd::Show { json } = cmd;
    let config = load_config(flag, env)?;
    let shown = config.show();
    if json {
        output::json(&shown)?;
    } else {
        let mut lines = Vec::new();
        flatten("", &shown, &mut lines);
        lines.sort();
        for l in lines {
            output::line(&l);
        }
    }
    Ok(Exit::Clean)
}

/// `a.b = value` lines, one per leaf; unset values shown as `(unset)`.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match v {
        Value::Object(m) if m.is_empty() && !prefix.is_empty() => {
            out.push(format!("{prefix} = {{}}"))
        }
        Value::Object(m) => {
            for (k, val) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, val, out);
            }
        }
        Value::Null => out.push(format!("{prefix} = (unset)")),
        Value::String(s) => out.push(format!("{prefix} = {s}")),
        other => out.push(format!("{prefix} = {other}")),
    }
}
