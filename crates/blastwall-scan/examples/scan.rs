//! A minimal command line over the library, for benchmarks and trying rules out before
//! `blastwall scan` (in `blastwall-cli`) wires the same calls:
//!
//! ```text
//! cargo run --release -p blastwall-scan --example scan -- [--format human|json|sarif]
//!     [--wall FILE]… [--env-vars] [--procs] [--threads N] PATH…
//! cargo run --release -p blastwall-scan --example scan -- --export-wall ENV FILE < secrets
//!     (one secret per line on stdin; writes a prod-tier wall file, as `blastwall wall export`)
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use blastwall_scan::{
    HumanSink, JsonLinesSink, RuleSet, SarifSink, ScanOptions, Scanner, Sink, Targets, WallFile,
};

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut format = "human".to_owned();
    let mut walls = Vec::new();
    let mut targets = Targets::default();
    let mut options = ScanOptions::default();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--export-wall" => {
                let env = args.next().ok_or("--export-wall needs ENV FILE")?;
                let file = args.next().ok_or("--export-wall needs ENV FILE")?;
                let secrets: Vec<String> = std::io::stdin().lines().collect::<Result<_, _>>()?;
                let wall = WallFile::build(
                    &blastwall_core::EnvName::new(&env)?,
                    blastwall_core::Tier::Prod,
                    secrets.iter().map(String::as_bytes),
                )?;
                wall.save(&PathBuf::from(file))?;
                return Ok(ExitCode::SUCCESS);
            }
            "--format" => format = args.next().ok_or("--format needs a value")?,
            "--wall" => walls.push(WallFile::load(&PathBuf::from(
                args.next().ok_or("--wall needs a file")?,
            ))?),
            "--threads" => options.threads = args.next().ok_or("--threads needs N")?.parse()?,
            "--env-vars" => targets.env_vars = Some(std::env::vars().collect::<BTreeMap<_, _>>()),
            "--procs" => targets.processes = true,
            path => targets.paths.push(PathBuf::from(path)),
        }
    }
    let scanner = Scanner::new(RuleSet::builtin()?)
        .with_walls(walls)
        .with_options(options);
    let report = scanner.scan(&targets);
    let stdout = std::io::stdout().lock();
    let mut sink: Box<dyn Sink> = match format.as_str() {
        "json" => Box::new(JsonLinesSink::new(stdout)),
        "sarif" => Box::new(SarifSink::new(stdout)),
        _ => Box::new(HumanSink::new(stdout, false, false)),
    };
    report.write_to(sink.as_mut())?;
    Ok(if report.has_production_secret() {
        ExitCode::from(3)
    } else if report.findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
