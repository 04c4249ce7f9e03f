//! `blastwall vault init|serve|credential add|log verify|log tail|recipient`: the backup vault,
//! run under its own credentials on another host or account (issue 6).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use blastwall_vault::VaultError;
use blastwall_vault::creds::{Credentials, Role};
use blastwall_vault::data::{Settings, VaultData};
use blastwall_vault::server::Vault;
use serde_json::json;

use crate::exit::Exit;
use crate::failure::Failure;
use crate::output;

/// `blastwall vault …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Cmd {
    /// Create a vault in a folder: settings and the age key backups are encrypted to
    #[command(after_help = "\
Examples:
  blastwall vault init --data /srv/blastwall-vault --min-retention 30d --drill-every 24h

Every object the vault receives is kept at least --min-retention from its receipt; the policy can
later be lengthened, never shortened. Run the vault as a user of its own, on a volume (better: a
host) that production cannot reach but over HTTP.")]
    Init {
        #[command(flatten)]
        data: DataArg,
        /// Minimum retention of every object, from its receipt (`30d`, `90d`)
        #[arg(long, value_name = "DURATION", default_value = "30d")]
        min_retention: String,
        /// Drill each source on this schedule while `vault serve` runs (`24h`)
        #[arg(long, value_name = "DURATION")]
        drill_every: Option<String>,
        /// Default quota of a writer credential (`50G`, `500M`)
        #[arg(long, value_name = "SIZE")]
        quota: Option<String>,
        #[command(flatten)]
        tls: TlsArgs,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// Serve the vault (HTTPS given a certificate): create-only uploads, /healthz, /metrics, drills
    #[command(after_help = "\
Examples:
  blastwall vault serve --data /srv/blastwall-vault --listen 0.0.0.0:7171 \\
      --tls-cert /etc/blastwall/vault.crt --tls-key /etc/blastwall/vault.key
  blastwall vault serve --data /srv/blastwall-vault            # plain HTTP on 127.0.0.1:7171

Writes `blastwall vault listening on https://ADDR` (or `http://ADDR`) on stderr once it listens.
The certificate and key may also be set once with `vault init --tls-cert … --tls-key …`; the
flags win. A certificate or key that cannot be used stops the start, naming the file.")]
    Serve {
        #[command(flatten)]
        data: DataArg,
        /// Address to listen on
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7171")]
        listen: SocketAddr,
        #[command(flatten)]
        tls: TlsArgs,
        /// How long a client may take to send its first byte, its TLS handshake, each request
        /// head, and the next bytes of an upload
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = blastwall_core::parse_duration)]
        client_timeout: std::time::Duration,
        /// Most connections open at once; more are closed as soon as they arrive
        #[arg(long, value_name = "N", default_value = "1024", value_parser = clap::value_parser!(u32).range(1..))]
        max_connections: u32,
    },
    /// Manage the vault's credentials
    #[command(subcommand)]
    Credential(CredentialCmd),
    /// Read and check the vault's own audit log
    #[command(subcommand)]
    Log(LogCmd),
    /// Print the age public key backups are encrypted to (give it to production)
    #[command(after_help = "Examples:\n  blastwall vault recipient --data /srv/blastwall-vault")]
    Recipient {
        #[command(flatten)]
        data: DataArg,
    },
}

/// `blastwall vault credential …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum CredentialCmd {
    /// Make a credential; it is printed once and only its digest is kept
    #[command(after_help = "\
Examples:
  blastwall vault credential add prod-writer --role writer --quota 50G
  blastwall vault credential add drills --role reader
  blastwall vault credential add ops --role admin

writer: create backups (and list them); never delete, overwrite or change retention.
reader: read and list backups, record drills.
admin:  lengthen retention or the policy, delete what has expired; nothing earlier.")]
    Add {
        /// The credential's name (recorded as the writer of what it creates)
        name: String,
        /// writer, reader or admin
        #[arg(long)]
        role: String,
        /// Bytes this writer may store (`50G`); default: the vault's default quota
        #[arg(long, value_name = "SIZE")]
        quota: Option<String>,
        #[command(flatten)]
        data: DataArg,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// List the vault's credentials: name, role, quota, when made (never a secret)
    #[command(after_help = "\
Examples:
  blastwall vault credential list --data /srv/blastwall-vault
  blastwall vault credential list --json")]
    List {
        #[command(flatten)]
        data: DataArg,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// Remove a credential: a running vault refuses it from its next request
    #[command(after_help = "\
Examples:
  blastwall vault credential revoke prod-writer

What the credential stored stays, under its name, with its retention. To replace a leaked
credential and keep its sources (a writer may add backups only to sources it registered), use
`vault credential rotate` instead.")]
    Revoke {
        /// The credential's name
        name: String,
        #[command(flatten)]
        data: DataArg,
    },
    /// Replace a credential's secret, keeping its name, role and quota
    #[command(after_help = "\
Examples:
  blastwall vault credential rotate prod-writer > prod-writer.cred

The new secret is printed once; the old one is refused from the next request. A writer keeps
its registered sources and its quota usage.")]
    Rotate {
        /// The credential's name
        name: String,
        #[command(flatten)]
        data: DataArg,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
}

/// `blastwall vault log …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum LogCmd {
    /// Check the vault's hash-chained audit log; exit 1 names the first bad entry
    #[command(after_help = "\
Examples:
  blastwall vault log verify --data /srv/blastwall-vault
  blastwall vault log verify --data /srv/blastwall-vault --json

Detects an edited, deleted or reordered entry of `audit.jsonl`. The last entry's hash is printed:
keep it elsewhere, and a later truncation back past it shows (the vault's log has no signed
checkpoints).")]
    Verify {
        #[command(flatten)]
        data: DataArg,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// Print the last entries of the vault's audit log (without checking the chain)
    #[command(after_help = "\
Examples:
  blastwall vault log tail --data /srv/blastwall-vault
  blastwall vault log tail -n 50 --json")]
    Tail {
        #[command(flatten)]
        data: DataArg,
        /// How many entries
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
}

/// `--tls-cert FILE --tls-key FILE`: both or neither.
#[derive(Debug, clap::Args)]
pub(crate) struct TlsArgs {
    /// Serve HTTPS with this PEM certificate chain (with `--tls-key`)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// The vault's folder.
#[derive(Debug, clap::Args)]
pub(crate) struct DataArg {
    /// The vault's data folder
    #[arg(
        long = "data",
        env = "BLASTWALL_VAULT_DATA",
        value_name = "DIR",
        default_value = "blastwall-vault"
    )]
    dir: PathBuf,
}

pub(crate) async fn run(cmd: Cmd) -> Result<Exit, Failure> {
    match cmd {
        Cmd::Init {
            data,
            min_retention,
            drill_every,
            quota,
            tls,
            json,
        } => init(
            &data.dir,
            &min_retention,
            drill_every.as_deref(),
            quota.as_deref(),
            tls,
            json,
        ),
        Cmd::Serve {
            data,
            listen,
            tls,
            client_timeout,
            max_connections,
        } => {
            let limits = blastwall_serve::Limits {
                client_timeout,
                max_connections: max_connections as usize,
                // Uploads in flight get as long as a stalled one would.
                drain: client_timeout,
            };
            serve(&data.dir, listen, tls, limits).await
        }
        Cmd::Credential(CredentialCmd::Add {
            name,
            role,
            quota,
            data,
            json,
        }) => credential_add(&data.dir, &name, &role, quota.as_deref(), json),
        Cmd::Credential(CredentialCmd::List { data, json }) => {
            let d = open(&data.dir)?;
            let creds = Credentials::open(&d.credentials_path()).map_err(fail)?;
            if json {
                let list: Vec<serde_json::Value> = creds
                    .entries()
                    .iter()
                    .map(|e| {
                        json!({
                            "name": e.name,
                            "role": e.role.to_string(),
                            "quota_bytes": e.quota_bytes,
                            "created": e.created,
                        })
                    })
                    .collect();
                output::json(&list)?;
            } else {
                for e in creds.entries() {
                    let quota = e
                        .quota_bytes
                        .map_or_else(|| "-".to_owned(), |q| q.to_string());
                    output::line(&format!(
                        "{:<24} {:<7} {:>14}  {}",
                        e.name, e.role, quota, e.created
                    ));
                }
            }
            Ok(Exit::Clean)
        }
        Cmd::Credential(CredentialCmd::Revoke { name, data }) => {
            let d = open(&data.dir)?;
            let mut creds = Credentials::open_for_update(&d.credentials_path()).map_err(fail)?;
            let removed = creds.revoke(&name).map_err(fail)?;
            output::note(&format!(
                "revoked {} credential `{}`; what it stored stays",
                removed.role, removed.name
            ));
            audit_credential_change(
                &d,
                "credential.revoke",
                &removed.name,
                json!({ "role": removed.role.to_string() }),
            )?;
            Ok(Exit::Clean)
        }
        Cmd::Credential(CredentialCmd::Rotate { name, data, json }) => {
            let d = open(&data.dir)?;
            let mut creds = Credentials::open_for_update(&d.credentials_path()).map_err(fail)?;
            let cred = creds.rotate(&name).map_err(fail)?;
            if json {
                output::json(&json!({ "name": name, "credential": cred.expose() }))?;
            } else {
                output::line(cred.expose());
                if std::io::stdout().is_terminal() {
                    output::note("the new credential is shown once; the old one no longer works");
                }
            }
            audit_credential_change(&d, "credential.rotate", &name, json!({}))?;
            Ok(Exit::Clean)
        }
        Cmd::Log(LogCmd::Verify { data, json }) => log_verify(&data.dir, json),
        Cmd::Log(LogCmd::Tail { data, lines, json }) => {
            let d = open(&data.dir)?;
            let entries = blastwall_vault::log::tail(&d.audit_path(), lines).map_err(fail)?;
            if json {
                output::json(&entries)?;
            } else {
                for e in &entries {
                    output::line(&format!(
                        "{:>6}  {}  {:<24} {:<40} {}  {}",
                        e.seq,
                        e.record.at,
                        e.record.action,
                        e.record.target.as_deref().unwrap_or("-"),
                        e.record.actor,
                        e.record.detail
                    ));
                }
            }
            Ok(Exit::Clean)
        }
        Cmd::Recipient { data } => {
            let d = open(&data.dir)?;
            output::line(&d.recipient().map_err(fail)?.to_string());
            Ok(Exit::Clean)
        }
    }
}

/// A vault error as a command failure (its `hint:` line becomes the hint).
pub(crate) fn fail(e: VaultError) -> Failure {
    Failure::from(anyhow::Error::from(e))
}

fn open(dir: &Path) -> Result<VaultData, Failure> {
    VaultData::open(dir).map_err(fail)
}

fn duration(flag: &str, text: &str) -> Result<u64, Failure> {
    blastwall_core::parse_duration(text)
        .map(|d| d.as_secs())
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| {
            Failure::usage(
                format!("invalid `{flag}` `{text}`"),
                "write a duration above zero, like `30d`, `24h` or `90m`",
            )
        })
}

/// Parses `500M`, `50G`, `1T` or a plain number of bytes (binary multiples).
pub(crate) fn parse_size(text: &str) -> Result<u64, Failure> {
    let t = text.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => 0,
            };
            (t.get(..i).unwrap_or_default(), mult)
        }
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            Failure::usage(
                format!("invalid size `{text}`"),
                "write a size like `500M`, `50G` or a number of bytes",
            )
        })
}

fn init(
    dir: &Path,
    min_retention: &str,
    drill_every: Option<&str>,
    quota: Option<&str>,
    tls: TlsArgs,
    as_json: bool,
) -> Result<Exit, Failure> {
    // Checked now, so a vault is never made with a certificate it cannot serve.
    let (tls_cert, tls_key) = match (tls.tls_cert, tls.tls_key) {
        (Some(c), Some(k)) => {
            let (c, k) = (std::path::absolute(&c)?, std::path::absolute(&k)?);
            blastwall_vault::tls::server_config(&c, &k).map_err(fail)?;
            (Some(c), Some(k))
        }
        _ => (None, None),
    };
    let settings = Settings {
        min_retention_secs: duration("--min-retention", min_retention)?,
        drill_every_secs: drill_every
            .map(|d| duration("--drill-every", d))
            .transpose()?,
        default_quota_bytes: quota.map(parse_size).transpose()?,
        tls_cert,
        tls_key,
    };
    let (data, recipient) = VaultData::init(dir, settings).map_err(fail)?;
    if as_json {
        output::json(&json!({
            "data": data.root().display().to_string(),
            "recipient": recipient.to_string(),
            "min_retention_secs": data.settings.min_retention_secs,
            "drill_every_secs": data.settings.drill_every_secs,
        }))?;
    } else {
        output::line(&format!("vault created in {}", data.root().display()));
        output::line(&format!("recipient: {recipient}"));
        output::line(&format!(
            "identity: {} (stays on this host, with the drill runner)",
            data.identity_path().display()
        ));
    }
    Ok(Exit::Clean)
}

async fn serve(
    dir: &Path,
    listen: SocketAddr,
    tls: TlsArgs,
    limits: blastwall_serve::Limits,
) -> Result<Exit, Failure> {
    let data = open(dir)?;
    let files = match (tls.tls_cert, tls.tls_key) {
        (Some(c), Some(k)) => Some((c, k)),
        _ => match (&data.settings.tls_cert, &data.settings.tls_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => {
                return Err(Failure::usage(
                    format!(
                        "`{}` sets only one of `tls_cert` and `tls_key`",
                        data.root().join("vault.json").display()
                    ),
                    "set both (a PEM certificate chain and its key) or neither",
                ));
            }
        },
    };
    // A certificate or key that cannot be used stops the start, before the port opens.
    let tls = files
        .map(|(c, k)| blastwall_vault::tls::server_config(&c, &k))
        .transpose()
        .map_err(fail)?;
    let vault = Vault::open(data, limits).map_err(fail)?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        Failure::usage(
            format!("cannot listen on `{listen}`: {e}"),
            "pick a free address with `--listen`",
        )
    })?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    if tls.is_none() && !local.ip().is_loopback() {
        tracing::warn!(%local, "serving plain HTTP beyond loopback: vault credentials cross the network in the clear; pass --tls-cert and --tls-key");
    }
    // The one line scripts wait for: where the vault listens.
    eprintln!("blastwall vault listening on {scheme}://{local}");
    tracing::info!(%local, scheme, "vault listening");
    vault
        .serve(listener, tls, shutdown_signal())
        .await
        .map_err(fail)?;
    Ok(Exit::Clean)
}

fn log_verify(dir: &Path, as_json: bool) -> Result<Exit, Failure> {
    let d = open(dir)?;
    let path = d.audit_path();
    match blastwall_vault::log::check(&path).map_err(fail)? {
        Ok(s) => {
            if as_json {
                output::json(
                    &json!({"ok": true, "log": path.display().to_string(), "entries": s.entries, "head_seq": s.head_seq, "head_hash": s.head_hash}),
                )?;
            } else {
                output::line(&format!(
                    "ok: {} entries, chain intact; head: entry {} {}",
                    s.entries, s.head_seq, s.head_hash
                ));
            }
            Ok(Exit::Clean)
        }
        Err(b) => {
            let entry = b.seq.map_or_else(
                || format!("line {}", b.line),
                |s| format!("entry {s} (line {})", b.line),
            );
            if as_json {
                output::json(
                    &json!({"ok": false, "log": path.display().to_string(), "line": b.line, "seq": b.seq, "error": b.why}),
                )?;
            } else {
                output::line(&format!("FAILED: {}: {entry}: {}", path.display(), b.why));
            }
            Ok(Exit::Failed)
        }
    }
}

fn credential_add(
    dir: &Path,
    name: &str,
    role: &str,
    quota: Option<&str>,
    as_json: bool,
) -> Result<Exit, Failure> {
    let data = open(dir)?;
    let role = Role::parse(role).ok_or_else(|| {
        Failure::usage(
            format!("unknown role `{role}`"),
            "use `writer`, `reader` or `admin`",
        )
    })?;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Failure::usage(
            format!("invalid credential name `{name}`"),
            "use letters, digits, `-` and `_`",
        ));
    }
    let quota = quota.map(parse_size).transpose()?;
    let mut creds = Credentials::open_for_update(&data.credentials_path()).map_err(fail)?;
    let cred = creds.add(name, role, quota).map_err(fail)?;
    if as_json {
        output::json(
            &json!({ "name": name, "role": role.to_string(), "credential": cred.expose() }),
        )?;
    } else {
        output::line(cred.expose());
        if std::io::stdout().is_terminal() {
            output::note(&format!(
                "this {role} credential is shown once; only its digest is kept"
            ));
        }
    }
    audit_credential_change(
        &data,
        "credential.add",
        name,
        json!({ "role": role.to_string(), "quota_bytes": quota }),
    )?;
    Ok(Exit::Clean)
}

/// Appends a credential change to the vault's audit log, beside a running vault too (appends
/// take a lock on the log, and each continues the chain from the file). The change has taken
/// effect (a revoked credential must stay revoked, a rotated one's new secret is printed): a
/// log that cannot record it is an error the operator sees, never silence.
fn audit_credential_change(
    data: &VaultData,
    action: &str,
    name: &str,
    detail: serde_json::Value,
) -> Result<(), Failure> {
    blastwall_vault::log::VaultLog::open(&data.audit_path())
        .and_then(|log| log.append("operator", action, Some(name), detail))
        .map_err(|e| {
            Failure::usage(
                format!("`{action}` of `{name}` took effect, but the vault's audit log could not record it: {e}"),
                "check the vault's folder (`blastwall vault log verify`), then record the change by hand",
            )
        })
}

async fn shutdown_signal() {
    super::shutdown_requested().await;
    tracing::info!("vault shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert_eq!(parse_size("1234").unwrap(), 1234);
        assert!(parse_size("x").is_err());
        assert!(parse_size("0").is_err());
    }
}
