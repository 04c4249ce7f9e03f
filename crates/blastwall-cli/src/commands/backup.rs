//! `blastwall backup target add|source add|run|list|check-immutability|drill|restore` (issue 6).
//!
//! Production holds a target with a *writer* vault credential and the vault's public age key:
//! it can add backups and nothing else. The vault host holds a target with a *reader* credential
//! and the age identity, and runs drills and restores. A target's vault credential is kept
//! sealed to an environment's key (or to the backup identity on the vault host), never in the
//! clear.

mod immutability;
mod state;

use std::io::{IsTerminal, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use blastwall_core::EnvName;
use blastwall_core::config::Config;
use blastwall_core::env::EnvSource;
use blastwall_core::seal::{EnvIdentity, EnvRecipient};
use blastwall_vault::client::VaultClient;
use blastwall_vault::data::read_identity;
use blastwall_vault::drill::{self, DrillOptions, DrillRecord};
use blastwall_vault::keys::BackupRecipient;
use blastwall_vault::s3::probes::Report as S3Report;
use blastwall_vault::s3::{S3Location, S3Options, S3Store};
use blastwall_vault::source::{SourceKind, SourceSpec};
use blastwall_vault::store::BackupStore;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use zeroize::Zeroizing;

use crate::commands::vault::{fail, parse_size};
use crate::context::{KeyState, absolute_parent, config_path, load_config, load_identity};
use crate::exit::Exit;
use crate::failure::Failure;
use crate::output;
use state::{BackupState, SealedTargetCredential, Source, Target};

/// `blastwall backup …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Cmd {
    /// Add a vault to send backups to (or, on the vault host, to drill from)
    #[command(subcommand)]
    Target(TargetCmd),
    /// Add something to back up
    #[command(subcommand)]
    Source(SourceCmd),
    /// Take a consistent dump of a source, compress, encrypt and send it to its vault
    #[command(after_help = "\
Examples:
  blastwall backup run appdb
  blastwall backup run appdb --json

Streams dump → zstd → age → the vault in fixed-size parts, then an encrypted manifest with the
integrity facts. Memory stays flat whatever the size of the backup.")]
    Run {
        /// The source's name
        source: String,
        /// Part size (`8M`)
        #[arg(long, value_name = "SIZE", default_value = "8M")]
        part_size: String,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// List the backups in a vault: id, source, taken, size, retain-until, last drill
    #[command(
        after_help = "Examples:\n  blastwall backup list\n  blastwall backup list --source appdb --json"
    )]
    List {
        /// Only this source's backups
        #[arg(long)]
        source: Option<String>,
        /// The target to ask (default: the only one)
        #[arg(long)]
        target: Option<String>,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// Try, with the target's credential, to delete, overwrite and shorten retention; pass only
    /// if every attempt is refused
    #[command(after_help = "\
Examples:
  blastwall backup check-immutability

Exit 0 when every probe was refused, 1 when any got through (or could not be judged).")]
    CheckImmutability {
        /// The target to probe (default: the only one)
        #[arg(long)]
        target: Option<String>,
        /// On an S3-compatible `--endpoint` other than AWS, also try the bucket-level changes
        /// (versioning, lock configuration, policy, lifecycle); such a server may apply them if
        /// the credential is allowed, so use the writer credential
        #[arg(long)]
        bucket_probes: bool,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// Restore a source's latest backup (and one random older one) into a scratch target and
    /// compare the facts; records the result in the vault
    #[command(after_help = "\
Examples:
  blastwall backup drill appdb
  blastwall backup drill appdb --backup 20261127T083100Z-1a2b3c --identity /srv/blastwall-vault/keys/backup.key

Runs on the vault host (it needs the age identity), never in production. Exit 1 when a drill
failed, including one that could not run.")]
    Drill {
        /// The source's name
        source: String,
        /// This backup only
        #[arg(long)]
        backup: Option<String>,
        /// Drill only the latest backup (no random older one)
        #[arg(long)]
        latest_only: bool,
        /// The target to read from (default: the only one)
        #[arg(long)]
        target: Option<String>,
        /// The age identity file (default: the target's)
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into a real target: an empty PostgreSQL database, a new SQLite file or a
    /// new folder
    #[command(after_help = "\
Examples:
  blastwall backup restore 20261127T083100Z-1a2b3c --to postgres://app@db/appdb_restored
  blastwall backup restore 20261127T083100Z-1a2b3c --to /srv/restored/app.sqlite

Break-glass without Blastwall: see docs/backups.md (age -d | zstd -d | pg_restore).")]
    Restore {
        /// The backup's id
        id: String,
        /// Where to restore
        #[arg(long, value_name = "URL|PATH")]
        to: String,
        /// The target to read from (default: the only one)
        #[arg(long)]
        target: Option<String>,
        /// The age identity file (default: the target's)
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
}

/// `blastwall backup target …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum TargetCmd {
    /// Add a vault target (credential read from standard input) or an S3 Object Lock target
    /// (credential from the standard AWS sources)
    #[command(
        after_help = "\
Examples:
  # production: the credential is sealed to the production environment's key
  blastwall backup target add offsite --url https://vault-host:7171 --env production \\
      --recipient age1… --credential-stdin < writer-credential
  # a vault whose certificate a private CA (or itself) signed:
  blastwall backup target add offsite --url https://vault-host:7171 --ca-file vault-ca.pem \\
      --env production --credential-stdin < writer-credential
  # on the vault host, for drills: sealed to the backup identity
  blastwall backup target add vault --url http://127.0.0.1:7171 --credential-stdin \\
      --identity /srv/blastwall-vault/keys/backup.key < reader-credential
  # a bucket with Object Lock in COMPLIANCE mode, in another account:
  AWS_PROFILE=backup-writer blastwall backup target add offsite \\
      --s3 s3://acme-backups/prod --recipient age1…

A vault credential is never stored in the clear: it is sealed to `--env`'s key (or the
`--identity` file's), and using the target needs that key. An S3 target stores no secret: the
credential comes from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or `--profile`, web
identity, ECS or instance metadata, each time it is used. The bucket must lock new objects in
COMPLIANCE mode by default, or the target is refused.",
        override_usage = "blastwall backup target add [OPTIONS] <NAME> --url <URL> --credential-stdin (--env <ENV> | --identity <FILE>)\n       \
blastwall backup target add [OPTIONS] <NAME> --s3 <s3://BUCKET/PREFIX> --recipient <AGE1…>"
    )]
    Add {
        /// The target's name
        name: String,
        /// The vault's URL
        #[arg(long, required_unless_present = "s3", conflicts_with = "s3")]
        url: Option<String>,
        /// An S3 bucket with Object Lock in COMPLIANCE mode, and a key prefix
        #[arg(long, value_name = "s3://BUCKET/PREFIX")]
        s3: Option<String>,
        /// An S3-compatible endpoint instead of AWS's (path-style addressing)
        #[arg(long, value_name = "URL", requires = "s3")]
        endpoint: Option<String>,
        /// The bucket's region (default: the AWS environment's or profile's, else us-east-1)
        #[arg(long, requires = "s3")]
        region: Option<String>,
        /// The AWS profile holding the S3 credential (default: the standard AWS sources)
        #[arg(long, requires = "s3")]
        profile: Option<String>,
        /// The age recipient to encrypt to (default: the one the vault announces; required for S3)
        #[arg(long, value_name = "AGE1…")]
        recipient: Option<String>,
        /// Read the vault credential from standard input
        #[arg(long, required_unless_present = "s3", conflicts_with = "s3")]
        credential_stdin: bool,
        /// The age identity file, for drills and restores (the drill host only)
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// Trust the CA certificate(s) in this PEM file for an `https://` vault, beside the
        /// system's roots
        #[arg(long, value_name = "FILE", conflicts_with = "s3")]
        ca_file: Option<PathBuf>,
        /// Seal the vault credential to this environment's key (production: the environment
        /// the backups come from); without it, to the `--identity` file's key
        #[arg(long = "env", value_name = "ENV", conflicts_with = "s3")]
        seal_env: Option<String>,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
}

/// `blastwall backup source …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SourceCmd {
    /// Add a source: `--kind postgres --url …`, `--kind sqlite PATH` or `--kind dir PATH`
    #[command(after_help = "\
Examples:
  blastwall backup source add appdb --kind postgres --url postgres://backup@db/app
  blastwall backup source add state --kind sqlite /srv/app/state.sqlite
  blastwall backup source add uploads --kind dir /srv/app/uploads

Refuses a vault that stores its data on the same filesystem as the source (same host and
device): a backup deleted with its source is a copy.")]
    Add {
        /// The source's name
        name: String,
        /// postgres, sqlite or dir
        #[arg(long)]
        kind: String,
        /// The PostgreSQL URL
        #[arg(long)]
        url: Option<String>,
        /// The SQLite file or the folder
        path: Option<PathBuf>,
        /// The target to back up to (default: the only one)
        #[arg(long)]
        target: Option<String>,
        /// Accept a vault on the source's filesystem (demos and tests only)
        #[arg(long)]
        allow_same_volume: bool,
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
    let config = config_or_defaults(flag, env)?;
    let data_dir = config.data_dir.clone();
    let mut st = BackupState::load(&data_dir)?;
    let keys = Keys {
        config: &config,
        env,
    };
    match cmd {
        Cmd::Target(TargetCmd::Add {
            name,
            url,
            s3,
            endpoint,
            region,
            profile,
            recipient,
            credential_stdin: _,
            identity,
            ca_file,
            seal_env,
            json,
        }) => match (url, s3) {
            (Some(url), None) => {
                let a = VaultTargetArgs {
                    url,
                    recipient,
                    identity,
                    ca_file,
                    seal_env,
                };
                target_add(&config, &data_dir, &mut st, &name, a, json).await
            }
            (None, Some(s3)) => {
                let opts = S3Options {
                    endpoint,
                    region,
                    profile,
                };
                let a = S3TargetArgs {
                    url: s3,
                    opts,
                    recipient,
                    identity,
                };
                target_add_s3(&data_dir, &mut st, &name, a, json).await
            }
            _ => Err(Failure::usage(
                "give either `--url` (a vault) or `--s3` (a bucket)",
                "`blastwall backup target add --help` shows both",
            )),
        },
        Cmd::Source(SourceCmd::Add {
            name,
            kind,
            url,
            path,
            target,
            allow_same_volume,
            json,
        }) => {
            let args = SourceArgs {
                name,
                kind,
                url,
                path,
                target,
                allow_same_volume,
            };
            source_add(&keys, &data_dir, &mut st, args, json).await
        }
        Cmd::Run {
            source,
            part_size,
            json,
        } => backup_run(&keys, &st, &source, &part_size, json).await,
        Cmd::List {
            source,
            target,
            json,
        } => list(&keys, &st, source.as_deref(), target.as_deref(), json).await,
        Cmd::CheckImmutability {
            target,
            bucket_probes,
            json,
        } => check(&keys, &st, target.as_deref(), bucket_probes, json).await,
        Cmd::Drill {
            source,
            backup,
            latest_only,
            target,
            identity,
            json,
        } => {
            let (n, t) = st.target(target.as_deref())?;
            let id = identity_of(&t, identity)?;
            let client = keys.store(&n, &t).await?;
            let opts = DrillOptions {
                random_older: !latest_only && backup.is_none(),
                backup,
                actor: crate::context::actor(env),
            };
            let records = match drill::drill_source(&client, &id, &source, &opts).await {
                Ok(r) => r,
                Err(e) => {
                    // A drill that could not run is a failed drill: said so, recorded when the
                    // store still takes it, and exit 1.
                    let r = drill::failed(
                        &source,
                        opts.backup.as_deref().unwrap_or("-"),
                        &opts.actor,
                        format!("the drill could not run: {}", drill::one_line(&e)),
                    );
                    if let Err(e) = client.record_drill(&r).await {
                        tracing::warn!(error = %drill::one_line(&e), "cannot record the failed drill");
                    }
                    vec![r]
                }
            };
            print_drills(&records, json)?;
            Ok(if records.iter().all(|r| r.passed) {
                Exit::Clean
            } else {
                Exit::Failed
            })
        }
        Cmd::Restore {
            id,
            to,
            target,
            identity,
            json,
        } => {
            let (n, t) = st.target(target.as_deref())?;
            let ident = identity_of(&t, identity)?;
            let client = keys.store(&n, &t).await?;
            let report = drill::restore(&client, &ident, &id, &to)
                .await
                .map_err(fail)?;
            if json {
                output::json(&report)?;
            } else if report.differences.is_empty() {
                output::line(&format!(
                    "restored {} ({} `{}`) to {}: facts match",
                    report.backup, report.kind, report.source, report.to
                ));
            } else {
                output::line(&format!(
                    "restored {} to {}, but the facts differ:",
                    report.backup, report.to
                ));
                for d in &report.differences {
                    output::line(&format!("  {d}"));
                }
            }
            Ok(if report.differences.is_empty() {
                Exit::Clean
            } else {
                Exit::Failed
            })
        }
    }
}

/// The config when there is a file; the defaults (data in `./data`) when there is none, so the
/// vault host needs no `blastwall init`.
fn config_or_defaults(flag: Option<&Path>, env: &dyn EnvSource) -> Result<Config, Failure> {
    let path = config_path(flag);
    if path.exists() || flag.is_some() {
        return load_config(flag, env);
    }
    let base = absolute_parent(&path)?;
    Ok(Config::parse(None, None, &base, env)?)
}

/// What opens a target's sealed credential: the config's `[keys]` (or the default key
/// locations) and the process's environment.
struct Keys<'a> {
    config: &'a Config,
    env: &'a dyn EnvSource,
}

impl Keys<'_> {
    /// The vault credential of target `name`, unsealed with this process's key; fails closed
    /// (with what to do) when it is in plain text, missing, or the key is not here.
    fn credential(&self, name: &str, t: &Target) -> Result<SecretString, Failure> {
        let Some(sealed) = &t.sealed_credential else {
            let why = if t.plain_credential.is_some() {
                "keeps its vault credential in plain text, which is no longer accepted"
            } else {
                "has no vault credential"
            };
            return Err(Failure::usage(
                format!("the backup target `{name}` {why}"),
                format!(
                    "add it again, sealed: pipe the credential into `blastwall backup target add {name} --url {} --env ENV --credential-stdin` (or `--identity FILE` on the drill host); it replaces the old entry",
                    t.url
                ),
            ));
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&sealed.sealed)
            .map_err(|_| {
                Failure::usage(
                    format!("the sealed credential of the backup target `{name}` is damaged"),
                    "add the target again with `blastwall backup target add … --credential-stdin`",
                )
            })?;
        let (identity, opened_by) = match &sealed.env {
            Some(e) => {
                let env_name = EnvName::new(e)?;
                match load_identity(self.config, &env_name, self.env) {
                    KeyState::Present(id) => (id, format!("the key of environment `{e}`")),
                    KeyState::Sealed(d) => {
                        return Err(Failure::usage(
                            format!(
                                "the credential of the backup target `{name}` is sealed to environment `{e}`, whose key is not here ({d})"
                            ),
                            format!(
                                "run backups where the key of `{e}` is: `[keys]` in the config, {}, or `{}`",
                                blastwall_core::env::env_key_var(e),
                                self.config.default_key_path(&env_name).display()
                            ),
                        ));
                    }
                    KeyState::Invalid(d) => {
                        return Err(Failure::usage(
                            format!("the key of environment `{e}` cannot be used: {d}"),
                            "check the key file or variable named above",
                        ));
                    }
                }
            }
            None => {
                let path = t.identity.as_ref().ok_or_else(|| {
                    Failure::usage(
                        format!(
                            "the credential of the backup target `{name}` is sealed to a backup identity, and the target names none"
                        ),
                        "add the target again with `--env ENV` or `--identity FILE`",
                    )
                })?;
                (
                    env_identity_file(path)?,
                    format!("the identity `{}`", path.display()),
                )
            }
        };
        let plain = identity.unseal(&bytes).map_err(|_| {
            Failure::usage(
                format!(
                    "cannot unseal the credential of the backup target `{name}` with {opened_by}"
                ),
                "the key does not match the one it was sealed to (`recipient` in backup.json); add the target again",
            )
        })?;
        let text = std::str::from_utf8(plain.expose_secret()).map_err(|_| {
            Failure::usage(
                format!("the sealed credential of the backup target `{name}` is damaged"),
                "add the target again with `blastwall backup target add … --credential-stdin`",
            )
        })?;
        // The URL is sealed with the credential: a backup.json edited to point the target
        // elsewhere would otherwise send the credential there.
        let Some((sealed_url, credential)) = text.split_once('\n') else {
            return Err(Failure::usage(
                format!(
                    "the sealed credential of the backup target `{name}` does not name its vault"
                ),
                "add the target again with `blastwall backup target add … --credential-stdin`",
            ));
        };
        if sealed_url != t.url {
            return Err(Failure::usage(
                format!(
                    "the credential of the backup target `{name}` was sealed for `{sealed_url}`, but the target now points at `{}`",
                    t.url
                ),
                "if the vault really moved, add the target again with its new URL; otherwise backup.json was edited: find out by whom",
            ));
        }
        Ok(SecretString::from(credential.to_owned()))
    }

    /// A client of target `name`'s vault.
    fn client(&self, name: &str, t: &Target) -> Result<VaultClient, Failure> {
        vault_client(t, self.credential(name, t)?)
    }

    /// The target's vault or bucket; for S3 this loads the credential from the AWS sources.
    async fn store(&self, name: &str, t: &Target) -> Result<BackupStore, Failure> {
        match &t.s3 {
            None => Ok(BackupStore::from(self.client(name, t)?)),
            Some(opts) => Ok(BackupStore::from(s3_store(t, opts).await?)),
        }
    }
}

fn vault_client(t: &Target, credential: SecretString) -> Result<VaultClient, Failure> {
    VaultClient::with_ca(&t.url, credential, t.ca_file.as_deref()).map_err(fail)
}

/// An age identity file (the vault's `keys/backup.key`) as a sealing key.
fn env_identity_file(path: &Path) -> Result<EnvIdentity, Failure> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        Failure::usage(
            format!("cannot read the identity `{}`: {e}", path.display()),
            "pass the vault's `keys/backup.key` with `--identity`",
        )
    })?);
    EnvIdentity::parse(&text).map_err(|_| {
        Failure::usage(
            format!("`{}` is not an age identity", path.display()),
            "pass the vault's `keys/backup.key` with `--identity`",
        )
    })
}

async fn s3_store(t: &Target, opts: &S3Options) -> Result<S3Store, Failure> {
    let location = S3Location::parse(&t.url).map_err(fail)?;
    S3Store::connect(location, opts).await.map_err(fail)
}

fn identity_of(
    t: &Target,
    flag: Option<PathBuf>,
) -> Result<blastwall_vault::keys::BackupIdentity, Failure> {
    let path = flag.or_else(|| t.identity.clone()).ok_or_else(|| {
        Failure::usage(
            "no age identity to open the backups with",
            "drills and restores run on the vault host: pass `--identity FILE` (the vault's keys/backup.key)",
        )
    })?;
    read_identity(&path).map_err(fail)
}

fn check_name(what: &str, name: &str) -> Result<(), Failure> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        || name.starts_with('.')
    {
        return Err(Failure::usage(
            format!("invalid {what} name `{name}`"),
            "use letters, digits, `-`, `_` and `.`",
        ));
    }
    Ok(())
}

struct VaultTargetArgs {
    url: String,
    recipient: Option<String>,
    identity: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    seal_env: Option<String>,
}

async fn target_add(
    config: &Config,
    data_dir: &Path,
    st: &mut BackupState,
    name: &str,
    a: VaultTargetArgs,
    as_json: bool,
) -> Result<Exit, Failure> {
    let VaultTargetArgs {
        url,
        recipient,
        identity,
        ca_file,
        seal_env,
    } = a;
    check_name("target", name)?;
    // A target whose credential is still in plain text may be added again: that is the way out.
    if st
        .targets
        .get(name)
        .is_some_and(|t| t.sealed_credential.is_some() || t.s3.is_some())
    {
        return Err(Failure::usage(
            format!("a backup target `{name}` already exists"),
            "pick another name",
        ));
    }
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(Failure::usage(
            format!("invalid vault URL `{url}`"),
            "write it as `https://vault-host:7171` (or `http://127.0.0.1:7171` on the vault host)",
        ));
    }
    if ca_file.is_some() && !url.starts_with("https://") {
        return Err(Failure::usage(
            "`--ca-file` is for an `https://` vault",
            "give the vault's `https://` URL, or drop `--ca-file`",
        ));
    }
    if url.starts_with("http://") && !is_loopback_url(&url) {
        tracing::warn!(
            "`{url}` is plain HTTP to another host: the vault credential will cross the network \
             in clear; serve the vault with `--tls-cert`/`--tls-key` and use its `https://` URL"
        );
    }
    let ca_file = ca_file.map(|p| std::path::absolute(&p)).transpose()?;
    if let Some(p) = &ca_file {
        blastwall_vault::tls::client_config(Some(p)).map_err(fail)?;
    }
    let mut text = Zeroizing::new(String::new());
    if std::io::stdin().is_terminal() {
        return Err(Failure::usage(
            "--credential-stdin reads the credential from a pipe",
            "pipe it in: `blastwall vault credential add … | blastwall backup target add …`",
        ));
    }
    std::io::stdin().take(4096).read_to_string(&mut text)?;
    let credential = Zeroizing::new(text.trim().to_owned());
    blastwall_core::token::check_shape(&credential).map_err(|_| {
        Failure::usage(
            "standard input does not hold a vault credential",
            "pipe in what `blastwall vault credential add` printed",
        )
    })?;
    let identity = identity.map(|p| std::path::absolute(&p)).transpose()?;
    if let Some(p) = &identity {
        read_identity(p).map_err(fail)?;
    }
    let sealed = seal_credential(
        config,
        url.trim_end_matches('/'),
        seal_env.as_deref(),
        identity.as_deref(),
        &credential,
    )
    .await?;
    let mut target = Target {
        url: url.trim_end_matches('/').to_owned(),
        recipient: None,
        plain_credential: None,
        sealed_credential: Some(sealed),
        s3: None,
        identity,
        ca_file,
    };
    let info = vault_client(&target, SecretString::from(credential.to_string()))?
        .info()
        .await;
    // An untrusted certificate, or plain HTTP to an HTTPS vault, is never "unreachable for
    // now": it is refused outright.
    if let Err(
        e @ (blastwall_vault::VaultError::Untrusted { .. }
        | blastwall_vault::VaultError::HttpsRequired { .. }),
    ) = info
    {
        return Err(fail(e));
    }
    let recipient = match (recipient, info) {
        (Some(r), Ok(info)) => {
            if info.recipient != r.trim() {
                tracing::warn!(
                    "the vault announces another recipient than --recipient; keeping --recipient"
                );
            }
            r
        }
        (Some(r), Err(e)) => {
            tracing::warn!(error = %e, "cannot reach the vault now; the target is added anyway");
            r
        }
        (None, Ok(info)) => info.recipient,
        (None, Err(e)) => return Err(fail(e)),
    };
    BackupRecipient::parse(&recipient).map_err(fail)?;
    target.recipient = Some(recipient.trim().to_owned());
    st.targets.insert(name.to_owned(), target.clone());
    st.save(data_dir)?;
    if as_json {
        output::json(&json!({"name": name, "url": target.url, "recipient": target.recipient}))?;
    } else {
        output::line(&format!("backup target `{name}` added: {}", target.url));
    }
    Ok(Exit::Clean)
}

/// Whether `url`'s host is this machine (`localhost`, `127.0.0.0/8`, `::1`).
fn is_loopback_url(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    })
}

/// Seals `credential`, bound to the vault `url`, to environment `env`'s recipient (from the
/// store), or else to the recipient of the age identity file `identity`.
async fn seal_credential(
    config: &Config,
    url: &str,
    env: Option<&str>,
    identity: Option<&Path>,
    credential: &str,
) -> Result<SealedTargetCredential, Failure> {
    let (recipient, env) = match (env, identity) {
        (Some(e), _) => {
            if config.source.is_none() {
                return Err(Failure::usage(
                    format!(
                        "`--env {e}` needs this host's Blastwall setup, and there is no configuration here"
                    ),
                    "run it where `blastwall init` was run (or pass `--config FILE`); on the drill host, seal to `--identity FILE` instead",
                ));
            }
            let store = blastwall_store::open_existing(&config.store).await?;
            let name = EnvName::new(e)?;
            let environment = store.env_get(&name).await?.ok_or_else(|| {
                Failure::usage(
                    format!("unknown environment `{name}`"),
                    "`blastwall env list` shows the environments",
                )
            })?;
            (
                EnvRecipient::parse(&environment.recipient)?,
                Some(name.to_string()),
            )
        }
        (None, Some(path)) => (env_identity_file(path)?.recipient(), None),
        (None, None) => {
            return Err(Failure::usage(
                "a vault target's credential is kept sealed, and nothing to seal it to was given",
                "pass `--env ENV` (the environment whose key this host holds, e.g. `--env production`), or on the drill host `--identity FILE`",
            ));
        }
    };
    // The vault's URL, a newline, the credential (which has none): see `Keys::credential`.
    let plain = Zeroizing::new(format!("{url}\n{credential}"));
    let sealed = recipient.seal(plain.as_bytes())?;
    Ok(SealedTargetCredential {
        env,
        recipient: recipient.to_string(),
        sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
    })
}

struct S3TargetArgs {
    url: String,
    opts: S3Options,
    recipient: Option<String>,
    identity: Option<PathBuf>,
}

/// Adds an S3 target after checking that the credential works and that the bucket locks new
/// objects in COMPLIANCE mode (fail closed: never a target that could lose backups).
async fn target_add_s3(
    data_dir: &Path,
    st: &mut BackupState,
    name: &str,
    a: S3TargetArgs,
    as_json: bool,
) -> Result<Exit, Failure> {
    check_name("target", name)?;
    if st.targets.contains_key(name) {
        return Err(Failure::usage(
            format!("a backup target `{name}` already exists"),
            "pick another name",
        ));
    }
    let location = S3Location::parse(&a.url).map_err(fail)?;
    if let Some(ep) = &a.opts.endpoint
        && !(ep.starts_with("http://") || ep.starts_with("https://"))
    {
        return Err(Failure::usage(
            format!("invalid `--endpoint` `{ep}`"),
            "write it as a URL, like `https://s3.eu-west-1.amazonaws.com`",
        ));
    }
    let recipient = a.recipient.ok_or_else(|| {
        Failure::usage(
            "an S3 target needs `--recipient`",
            "pass the age public key backups are encrypted to (`blastwall vault recipient`, or `age-keygen -y KEY`)",
        )
    })?;
    BackupRecipient::parse(&recipient).map_err(fail)?;
    let identity = a.identity.map(|p| std::path::absolute(&p)).transpose()?;
    if let Some(p) = &identity {
        read_identity(p).map_err(fail)?;
    }
    let target = Target {
        url: location.to_string(),
        recipient: Some(recipient.trim().to_owned()),
        plain_credential: None,
        sealed_credential: None,
        s3: Some(a.opts),
        identity,
        ca_file: None,
    };
    let s3 = s3_store(&target, target.s3.as_ref().unwrap_or(&S3Options::default())).await?;
    let lock = s3.require_compliance().await.map_err(fail)?;
    st.targets.insert(name.to_owned(), target.clone());
    st.save(data_dir)?;
    if as_json {
        output::json(
            &json!({"name": name, "url": target.url, "recipient": target.recipient, "s3": target.s3, "lock": lock}),
        )?;
    } else {
        output::line(&format!(
            "backup target `{name}` added: {} ({})",
            target.url,
            lock.describe()
        ));
    }
    Ok(Exit::Clean)
}

struct SourceArgs {
    name: String,
    kind: String,
    url: Option<String>,
    path: Option<PathBuf>,
    target: Option<String>,
    allow_same_volume: bool,
}

async fn source_add(
    keys: &Keys<'_>,
    data_dir: &Path,
    st: &mut BackupState,
    a: SourceArgs,
    as_json: bool,
) -> Result<Exit, Failure> {
    check_name("source", &a.name)?;
    if st.sources.contains_key(&a.name) {
        return Err(Failure::usage(
            format!("a backup source `{}` already exists", a.name),
            "pick another name",
        ));
    }
    let kind = SourceKind::parse(&a.kind).ok_or_else(|| {
        Failure::usage(
            format!("unknown source kind `{}`", a.kind),
            "use `postgres`, `sqlite` or `dir`",
        )
    })?;
    let location = match (kind, a.url, a.path) {
        (SourceKind::Postgres, Some(u), None)
            if u.starts_with("postgres://") || u.starts_with("postgresql://") =>
        {
            u
        }
        (SourceKind::Postgres, _, _) => {
            return Err(Failure::usage(
                "a postgres source needs `--url postgres://…` and no path",
                "e.g. `--kind postgres --url postgres://backup@db/app`",
            ));
        }
        (_, None, Some(p)) => {
            let abs = std::fs::canonicalize(&p).map_err(|e| {
                Failure::usage(
                    format!("cannot find `{}`: {e}", p.display()),
                    "give the path of the SQLite file or the folder to back up",
                )
            })?;
            let ok = match kind {
                SourceKind::Sqlite => abs.is_file(),
                _ => abs.is_dir(),
            };
            if !ok {
                return Err(Failure::usage(
                    format!(
                        "`{}` is not a {}",
                        abs.display(),
                        if kind == SourceKind::Sqlite {
                            "file"
                        } else {
                            "folder"
                        }
                    ),
                    "give the path of the SQLite file or the folder to back up",
                ));
            }
            abs.to_string_lossy().into_owned()
        }
        _ => {
            return Err(Failure::usage(
                format!("a {kind} source needs a PATH and no `--url`"),
                "e.g. `--kind sqlite /srv/app/state.sqlite`",
            ));
        }
    };
    let (target_name, target) = st.target(a.target.as_deref())?;
    let spec = SourceSpec {
        name: a.name.clone(),
        kind,
        location,
    };
    same_volume_guard(keys, &spec, &target_name, &target, a.allow_same_volume).await?;
    // From now on the vault's scheduled drills expect this source's backups.
    drill::register_source(
        &keys.store(&target_name, &target).await?,
        &spec.name,
        &kind.to_string(),
    )
    .await
    .map_err(fail)?;
    st.sources.insert(
        a.name.clone(),
        Source {
            spec: spec.clone(),
            target: target_name.clone(),
        },
    );
    st.save(data_dir)?;
    if as_json {
        output::json(
            &json!({"name": spec.name, "kind": kind.to_string(), "location": spec.display_location(), "target": target_name}),
        )?;
    } else {
        output::line(&format!(
            "backup source `{}` ({kind}, {}) added, to `{target_name}`",
            spec.name,
            spec.display_location()
        ));
    }
    Ok(Exit::Clean)
}

/// Refuses a vault on the same host and filesystem as the source (issue 6: the incident's
/// backups lived in the volume they backed up).
async fn same_volume_guard(
    keys: &Keys<'_>,
    spec: &SourceSpec,
    target_name: &str,
    target: &Target,
    allow: bool,
) -> Result<(), Failure> {
    if target.s3.is_some() {
        // A bucket is never on the source's filesystem.
        return Ok(());
    }
    let info = keys
        .client(target_name, target)?
        .info()
        .await
        .map_err(|e| {
            Failure::usage(
                format!(
                    "cannot ask the vault where it stores its data: {}",
                    blastwall_vault::drill::one_line(&e)
                ),
                "start the vault first: the same-volume guard needs its answer",
            )
        })?;
    if info.machine_id != blastwall_vault::data::machine_id() {
        return Ok(());
    }
    let path = match spec.kind {
        SourceKind::Sqlite | SourceKind::Dir => Some(PathBuf::from(&spec.location)),
        SourceKind::Postgres => blastwall_vault::source::postgres::data_dir(&spec.location).await,
    };
    let Some(path) = path else {
        tracing::warn!(
            "cannot tell where the PostgreSQL source stores its data; same-volume guard not applied"
        );
        return Ok(());
    };
    let device = std::fs::metadata(&path)?.dev();
    if device == info.device {
        let e = blastwall_vault::VaultError::SameVolume {
            source_path: path.display().to_string(),
            device,
        };
        if allow {
            tracing::warn!("{}", blastwall_vault::drill::one_line(&e));
            return Ok(());
        }
        return Err(fail(e));
    }
    Ok(())
}

async fn backup_run(
    keys: &Keys<'_>,
    st: &BackupState,
    source: &str,
    part_size: &str,
    as_json: bool,
) -> Result<Exit, Failure> {
    let s = st.sources.get(source).ok_or_else(|| {
        Failure::usage(
            format!("no backup source `{source}`"),
            "add it with `blastwall backup source add`",
        )
    })?;
    let (target_name, target) = st.target(Some(&s.target))?;
    let recipient = target.recipient.as_deref().ok_or_else(|| {
        Failure::usage(
            format!("the target `{}` has no recipient", s.target),
            "add the target again with `--recipient age1…`",
        )
    })?;
    let recipient = BackupRecipient::parse(recipient).map_err(fail)?;
    let part = usize::try_from(parse_size(part_size)?).unwrap_or(usize::MAX);
    let store = keys.store(&target_name, &target).await?;
    // Sources added before registrations existed are registered by their next run (a no-op
    // when the vault has it already).
    drill::register_source(&store, &s.spec.name, &s.spec.kind.to_string())
        .await
        .map_err(fail)?;
    let summary = blastwall_vault::pipeline::run(&s.spec, &store, &recipient, part)
        .await
        .map_err(fail)?;
    if as_json {
        output::json(&summary)?;
    } else {
        output::line(&format!(
            "backup {} of `{}`: {} parts, {} bytes stored ({} plain) in {:.1}s, retained until {}",
            summary.id,
            summary.source,
            summary.parts,
            summary.stored_bytes,
            summary.plain_bytes,
            summary.seconds,
            summary.retain_until
        ));
    }
    Ok(Exit::Clean)
}

async fn list(
    keys: &Keys<'_>,
    st: &BackupState,
    source: Option<&str>,
    target: Option<&str>,
    as_json: bool,
) -> Result<Exit, Failure> {
    let (name, t) = st.target(target)?;
    let client = keys.store(&name, &t).await?;
    let backups = drill::list_backups(&client, source).await.map_err(fail)?;
    let drills = client.drills().await.map_err(fail)?;
    let last = |pred: &dyn Fn(&DrillRecord) -> bool| drills.iter().rfind(|d| pred(d)).cloned();
    let mut rows: Vec<serde_json::Value> = backups
        .iter()
        .map(|b| {
            let drill = last(&|d| d.backup == b.id && d.source == b.source);
            let passed = last(&|d| d.source == b.source && d.passed);
            json!({
                "id": b.id,
                "source": b.source,
                "taken_at": b.taken_at,
                "size": b.size,
                "retain_until": b.retain_until,
                "last_drill": drill.map(|d| json!({"at": d.at, "passed": d.passed, "reason": d.reason})),
                "source_last_passed": passed.map(|d| d.at),
            })
        })
        .collect();
    // A source whose drill failed before it had any backup (none arrived, or none could be
    // listed) has no row of its own: it gets one, so the failure shows.
    let mut without: Vec<&DrillRecord> = Vec::new();
    for d in drills.iter().rev() {
        if source.is_some_and(|s| s != d.source)
            || d.source == "-"
            || backups.iter().any(|b| b.source == d.source)
            || without.iter().any(|w| w.source == d.source)
        {
            continue;
        }
        without.push(d);
    }
    for d in without.into_iter().rev().filter(|d| !d.passed) {
        rows.push(json!({
            "id": "-",
            "source": d.source,
            "taken_at": null,
            "size": 0,
            "retain_until": null,
            "last_drill": {"at": d.at, "passed": d.passed, "reason": d.reason},
            "source_last_passed": null,
        }));
    }
    if as_json {
        output::json(&rows)?;
        return Ok(Exit::Clean);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or("-").to_owned();
            let drill = match &r["last_drill"] {
                serde_json::Value::Null => match r["source_last_passed"].as_str() {
                    Some(at) => format!("source passed {at}"),
                    None => "never".into(),
                },
                d => format!(
                    "{} {}",
                    if d["passed"].as_bool() == Some(true) {
                        "pass"
                    } else {
                        "FAIL"
                    },
                    d["at"].as_str().unwrap_or("-")
                ),
            };
            vec![
                s("id"),
                s("source"),
                s("taken_at"),
                r["size"].as_u64().unwrap_or(0).to_string(),
                s("retain_until"),
                drill,
            ]
        })
        .collect();
    output::table(
        &[
            "ID",
            "SOURCE",
            "TAKEN",
            "SIZE",
            "RETAIN-UNTIL",
            "LAST DRILL",
        ],
        &table,
    );
    Ok(Exit::Clean)
}

async fn check(
    keys: &Keys<'_>,
    st: &BackupState,
    target: Option<&str>,
    bucket_probes: bool,
    as_json: bool,
) -> Result<Exit, Failure> {
    let (name, t) = st.target(target)?;
    if let Some(opts) = &t.s3 {
        let s3 = s3_store(&t, opts).await?;
        let report = blastwall_vault::s3::probes::run(&s3, bucket_probes)
            .await
            .map_err(fail)?;
        return print_s3_check(&name, &report, as_json);
    }
    let client = keys.client(&name, &t)?;
    let probes = immutability::run(&client).await.map_err(fail)?;
    let pass = probes.iter().all(|p| p.refused);
    if as_json {
        output::json(&json!({"target": name, "pass": pass, "probes": probes}))?;
    } else {
        let rows: Vec<Vec<String>> = probes
            .iter()
            .map(|p| {
                vec![
                    p.probe.clone(),
                    probe_result(p.refused, &p.answer).to_owned(),
                    p.answer.clone(),
                ]
            })
            .collect();
        output::table(&["PROBE", "RESULT", "ANSWER"], &rows);
        output::line(if pass {
            "PASS: every attempt was refused"
        } else {
            "FAIL: the credential can change or remove backups"
        });
    }
    Ok(if pass { Exit::Clean } else { Exit::Failed })
}

/// The RESULT column of a probe: a refusal, a probe that got through, one that was not run (S3's
/// bucket-level probes off AWS), or an answer that proves nothing either way.
fn probe_result(refused: bool, answer: &str) -> &'static str {
    if refused {
        "refused"
    } else if answer.starts_with("not run") {
        "NOT RUN"
    } else if answer.starts_with("could not tell") {
        "UNKNOWN"
    } else {
        "GOT THROUGH"
    }
}

fn print_s3_check(name: &str, report: &S3Report, as_json: bool) -> Result<Exit, Failure> {
    let pass = report.pass();
    if as_json {
        output::json(&json!({"target": name, "pass": pass, "s3": report}))?;
    } else {
        output::line(&format!(
            "lock configuration of {}: {} ({})",
            report.location,
            report.lock_answer,
            if report.lock_ok {
                "ok"
            } else {
                "NOT COMPLIANCE"
            }
        ));
        let rows: Vec<Vec<String>> = report
            .probes
            .iter()
            .map(|p| {
                vec![
                    p.probe.clone(),
                    probe_result(p.refused, &p.answer).to_owned(),
                    p.answer.clone(),
                    p.shows.clone(),
                ]
            })
            .collect();
        output::table(&["PROBE", "RESULT", "ANSWER", "A REFUSAL SHOWS"], &rows);
        if pass {
            output::line("PASS: every attempt was refused and the bucket locks in COMPLIANCE mode");
        } else {
            let mut why = Vec::new();
            if !report.lock_ok {
                why.push("the bucket does not lock backups in COMPLIANCE mode".to_owned());
            }
            for (result, label) in [
                ("GOT THROUGH", "got through"),
                ("NOT RUN", "not run"),
                ("UNKNOWN", "could not tell"),
            ] {
                let names: Vec<&str> = report
                    .probes
                    .iter()
                    .filter(|p| !p.refused && probe_result(p.refused, &p.answer) == result)
                    .map(|p| p.probe.as_str())
                    .collect();
                if !names.is_empty() {
                    why.push(format!("{label}: {}", names.join(", ")));
                }
            }
            output::line(&format!("FAIL: {}", why.join("; ")));
        }
    }
    Ok(if pass { Exit::Clean } else { Exit::Failed })
}

fn print_drills(records: &[DrillRecord], as_json: bool) -> Result<(), Failure> {
    if as_json {
        output::json(&records)?;
        return Ok(());
    }
    for r in records {
        let verdict = if r.passed { "PASS" } else { "FAIL" };
        output::line(&format!(
            "{verdict} {} `{}`: rpo {}s; fetch {}ms, decrypt {}ms, restore {}ms, verify {}ms{}",
            r.backup,
            r.source,
            r.rpo_secs.unwrap_or(-1),
            r.fetch_ms,
            r.decrypt_ms,
            r.restore_ms,
            r.verify_ms,
            r.amcheck
                .as_deref()
                .map(|a| format!("; pg_amcheck {a}"))
                .unwrap_or_default()
        ));
        if let Some(reason) = &r.reason {
            output::line(&format!("  reason: {reason}"));
        }
    }
    Ok(())
}
