//! What every command needs: the configuration (loaded once), the store, the environment keys
//! this process holds, and the auditor that checkpoints what the command appended.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use blastwall_core::audit::{AuditRecord, CheckpointSigner};
use blastwall_core::config::{Config, DEFAULT_FILE, KeySource};
use blastwall_core::env::{self, EnvSource};
use blastwall_core::seal::EnvIdentity;
use blastwall_core::{EnvName, Environment};
use blastwall_store::{Auditor, Store};
use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};

use crate::failure::Failure;

/// The config file a command uses: `--config`/`BLASTWALL_CONFIG`, else `./blastwall.toml`.
pub(crate) fn config_path(flag: Option<&Path>) -> PathBuf {
    flag.map_or_else(|| PathBuf::from(DEFAULT_FILE), Path::to_path_buf)
}

/// Loads and checks the configuration; every problem is reported at once.
pub(crate) fn load_config(flag: Option<&Path>, env: &dyn EnvSource) -> Result<Config, Failure> {
    let path = config_path(flag);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Failure::usage(
                format!("no configuration at `{}`", path.display()),
                "run `blastwall init` in this folder, or pass `--config FILE` (or set BLASTWALL_CONFIG)",
            ));
        }
        Err(e) => {
            return Err(Failure::usage(
                format!("cannot read `{}`: {e}", path.display()),
                "check the file's permissions",
            ));
        }
    };
    let base = absolute_parent(&path)?;
    Ok(Config::parse(Some(&path), Some(&text), &base, env)?)
}

/// The absolute folder holding `path`.
pub(crate) fn absolute_parent(path: &Path) -> Result<PathBuf, Failure> {
    let abs = std::path::absolute(path)?;
    Ok(abs
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf))
}

/// An opened setup.
pub(crate) struct Ctx {
    pub(crate) config: Config,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) actor: String,
}

impl Ctx {
    /// Loads the config and opens the store.
    pub(crate) async fn open(flag: Option<&Path>, env: &dyn EnvSource) -> Result<Self, Failure> {
        let config = load_config(flag, env)?;
        let store = blastwall_store::open_existing(&config.store).await?;
        Ok(Self {
            config,
            store,
            actor: actor(env),
        })
    }

    /// The environment named `name` (as the user typed it), or a clear refusal.
    pub(crate) async fn environment(&self, name: &str) -> Result<Environment, Failure> {
        let name = EnvName::new(name)?;
        self.store.env_get(&name).await?.ok_or_else(|| {
            Failure::usage(
                format!("unknown environment `{name}`"),
                "`blastwall env list` shows the environments",
            )
        })
    }

    /// The auditor that signs checkpoints; needs the audit signing key.
    pub(crate) fn auditor(&self, env: &dyn EnvSource) -> Result<Auditor, Failure> {
        let signer = load_signer(&self.config, env)?;
        Ok(Auditor::new(
            self.store.clone(),
            signer,
            self.config.audit.checkpoint_every,
        ))
    }

    /// A fresh audit record by this command's actor.
    pub(crate) fn record(
        &self,
        action: &str,
        env: Option<&EnvName>,
        target: Option<&str>,
        detail: serde_json::Value,
    ) -> AuditRecord {
        record(&self.actor, action, env, target, detail)
    }
}

/// A fresh audit record.
pub(crate) fn record(
    actor: &str,
    action: &str,
    env: Option<&EnvName>,
    target: Option<&str>,
    detail: serde_json::Value,
) -> AuditRecord {
    AuditRecord {
        at: now_text(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        env: env.map(|e| e.to_string()),
        target: target.map(str::to_owned),
        detail: detail.to_string(),
    }
}

/// Now, as RFC 3339 UTC.
pub(crate) fn now_text() -> String {
    Timestamp::now().to_string()
}

/// Who is acting: `cli:<user>`.
pub(crate) fn actor(env: &dyn EnvSource) -> String {
    let user = env
        .var("USER")
        .or_else(|| env.var("LOGNAME"))
        .unwrap_or_else(|| "unknown".to_owned());
    format!("cli:{user}")
}

/// The audit checkpoint signing key: `BLASTWALL_AUDIT_KEY`, else `[audit] signing_key`.
pub(crate) fn load_signer(
    config: &Config,
    env: &dyn EnvSource,
) -> Result<CheckpointSigner, Failure> {
    let (text, from) = match env.var(env::AUDIT_KEY) {
        Some(t) => (SecretString::from(t), env::AUDIT_KEY.to_owned()),
        None => {
            let path = &config.audit.signing_key;
            match fs::read_to_string(path) {
                Ok(t) => (SecretString::from(t), format!("`{}`", path.display())),
                Err(e) => {
                    return Err(Failure::usage(
                        format!(
                            "cannot read the audit signing key `{}`: {e}",
                            path.display()
                        ),
                        "commands that change state sign audit checkpoints; run them where the key is, or set BLASTWALL_AUDIT_KEY",
                    ));
                }
            }
        }
    };
    CheckpointSigner::parse(text.expose_secret()).ok_or_else(|| {
        Failure::usage(
            format!("the audit signing key in {from} is not valid"),
            "it must be 64 hex characters, as `blastwall init` writes it",
        )
    })
}

/// Whether this process holds an environment's key.
pub(crate) enum KeyState {
    /// The key is here.
    Present(EnvIdentity),
    /// No key here: the environment is sealed for this process.
    Sealed(String),
    /// A key is configured but unusable.
    Invalid(String),
}

impl KeyState {
    /// `present`, `sealed` or `invalid`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Present(_) => "present",
            Self::Sealed(_) => "sealed",
            Self::Invalid(_) => "invalid",
        }
    }
}

/// Reads the key of environment `name`, if this process has it.
pub(crate) fn load_identity(config: &Config, name: &EnvName, env: &dyn EnvSource) -> KeyState {
    match config.key_source(name, env) {
        KeySource::Var(var) => match env.var(&var) {
            None => KeyState::Sealed(format!("variable {var} is not set")),
            Some(text) => {
                let text = SecretString::from(text);
                match EnvIdentity::parse(text.expose_secret()) {
                    Ok(id) => KeyState::Present(id),
                    Err(e) => KeyState::Invalid(format!("variable {var}: {e}")),
                }
            }
        },
        KeySource::File(path) => match fs::read_to_string(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                KeyState::Sealed(format!("no key file at `{}`", path.display()))
            }
            Err(e) => KeyState::Invalid(format!("`{}`: {e}", path.display())),
            Ok(text) => {
                let text = SecretString::from(text);
                match EnvIdentity::parse(text.expose_secret()) {
                    Ok(id) => KeyState::Present(id),
                    Err(e) => KeyState::Invalid(format!("`{}`: {e}", path.display())),
                }
            }
        },
    }
}

/// [`load_identity`] for an environment whose record is at hand: a key whose public half is not
/// the recipient recorded for the environment (another environment's key, copied over) is
/// `Invalid`, not `Present`: it would open none of the environment's credentials.
pub(crate) fn load_env_identity(
    config: &Config,
    environment: &Environment,
    env: &dyn EnvSource,
) -> KeyState {
    match load_identity(config, &environment.name, env) {
        KeyState::Present(id) if id.recipient().to_string() != environment.recipient => {
            let from = match config.key_source(&environment.name, env) {
                KeySource::Var(var) => format!("variable {var}"),
                KeySource::File(path) => format!("`{}`", path.display()),
            };
            KeyState::Invalid(format!(
                "the key in {from} is not environment `{}`'s key (its public half differs from the one recorded when the environment was created)",
                environment.name
            ))
        }
        other => other,
    }
}

/// Writes a secret file with mode 0600, refusing to overwrite an existing one.
pub(crate) fn write_secret_file(path: &Path, text: &str) -> Result<(), Failure> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            Failure::usage(
                format!("cannot create `{}`: {e}", path.display()),
                "a key file is never overwritten; move the old one away first if you mean to replace it",
            )
        })?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}
