//! The one configuration struct, parsed from `blastwall.toml` and the environment.
//!
//! Parsing is strict (`deny_unknown_fields`) and reports every problem at once, each naming the
//! key and the file. Relative paths are resolved against the config file's folder. Reading the
//! file is the caller's job: this crate does no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::env::{self, EnvSource};
use crate::environment::EnvName;

/// Default config file name, looked up in the current folder.
pub const DEFAULT_FILE: &str = "blastwall.toml";
/// Default number of audit entries between two signed checkpoints.
pub const DEFAULT_CHECKPOINT_EVERY: u32 = 100;

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
    /// The data folder (store, keys).
    pub data_dir: PathBuf,
    /// Where state lives.
    pub store: StoreUrl,
    /// Audit log settings.
    pub audit: AuditConfig,
    /// Where each environment's private key comes from, when not the default.
    pub keys: BTreeMap<EnvName, KeySource>,
    /// Extra catalog profiles, beside the built-in ones.
    pub catalog_dir: Option<PathBuf>,
    /// Operator Cedar policies (`*.cedar`), added to the generated ones.
    pub policy_dir: Option<PathBuf>,
    /// The gateway's settings.
    pub gateway: GatewayConfig,
}

/// `[gateway]`: how `blastwall serve` listens and forwards.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest request body buffered for classification; larger → 413.
    pub max_body_bytes: usize,
    /// Time limit to connect to an upstream.
    pub connect_timeout: Duration,
    /// Time limit for an upstream's response headers.
    pub response_timeout: Duration,
    /// Time limit for an agent to send a request's head, and then its body; also how long an
    /// idle keep-alive connection is kept.
    pub client_timeout: Duration,
    /// Most agent connections open at once; further ones are closed as soon as accepted.
    pub max_connections: usize,
    /// How often revocations are polled from the store (bounds how long a revoked token works).
    pub revocation_poll: Duration,
    /// Extra CA certificates (PEM) to trust, per upstream, beside the system's roots.
    pub ca_files: BTreeMap<String, PathBuf>,
    /// Requests a second each token may make, sustained (0: no limit). Past it, 429.
    pub token_rate: u32,
    /// Requests a token may make at once after a pause (at least 1).
    pub token_burst: u32,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            max_body_bytes: 1024 * 1024,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            client_timeout: Duration::from_secs(30),
            max_connections: 4096,
            revocation_poll: Duration::from_millis(250),
            ca_files: BTreeMap::new(),
            token_rate: 100,
            token_burst: 200,
        }
    }
}

/// Audit log settings.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Entries between two signed checkpoints.
    pub checkpoint_every: u32,
    /// The checkpoint signing key file.
    pub signing_key: PathBuf,
}

/// Where an environment's private key is read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum KeySource {
    /// A key file (0600), in age's identity format.
    File(PathBuf),
    /// An environment variable holding the key text.
    Var(String),
}

/// The store's location. `Debug`/`Display` hide any password in a PostgreSQL URL.
#[derive(Clone)]
pub enum StoreUrl {
    /// An SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (may carry a password).
    Postgres(SecretString),
}

impl StoreUrl {
    /// Parses `sqlite://PATH` (relative to `base`) or `postgres://…`/`postgresql://…`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(
                    "`sqlite://` needs a file path, e.g. `sqlite://data/blastwall.db`".into(),
                );
            }
            Ok(Self::Sqlite(base.join(path)))
        } else if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Ok(Self::Postgres(SecretString::from(text.to_owned())))
        } else {
            Err("expected `sqlite://PATH` or `postgres://USER@HOST/DB`".into())
        }
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(p) => format!("sqlite://{}", p.display()),
            Self::Postgres(url) => redact_url(url.expose_secret()),
        }
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Replaces the password of `scheme://user:password@host…` by `***`; also hides `password=` query
/// parameters.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(start) = out.find("://").map(|i| i + 3) {
        let end = out[start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..end].rfind('@').map(|i| start + i)
            && let Some(colon) = out[start..at].find(':').map(|i| start + i)
        {
            out.replace_range(colon + 1..at, "***");
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let redacted: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out = format!("{head}{}", redacted.join("&"));
    }
    out
}

/// Every problem found while loading the config, each naming the key and the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `environment`), as shown to the user.
    pub source: String,
    /// One line per problem: `` `key`: what is wrong ``.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration in {}", self.source)?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        write!(
            f,
            "\nhint: fix each of these; docs/configuration.md lists every key and its form"
        )
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    data_dir: Option<PathBuf>,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    keys: BTreeMap<String, KeySource>,
    #[serde(default)]
    catalog: RawCatalog,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    gateway: RawGateway,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    listen: Option<String>,
    max_body_bytes: Option<usize>,
    connect_timeout: Option<String>,
    response_timeout: Option<String>,
    client_timeout: Option<String>,
    max_connections: Option<usize>,
    revocation_poll: Option<String>,
    #[serde(default)]
    ca_files: BTreeMap<String, PathBuf>,
    token_rate: Option<u32>,
    token_burst: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    checkpoint_every: Option<u32>,
    signing_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    dir: Option<PathBuf>,
}

/// Reads the file's structure, collecting every unknown key and wrongly typed value rather than
/// the first only: each is reported with its line and key, its line blanked, and the text read
/// again (line numbers stay as they are). Returns what could be read with the problems found
/// (sorted by line); a syntax error, or a problem whose line cannot be set aside, is an `Err`
/// alone: what follows cannot be read with certainty.
fn raw_config(text: &str) -> Result<(RawConfig, Vec<String>), Vec<String>> {
    /// More than this is not worth listing.
    const MAX_PROBLEMS: usize = 20;
    let line_of = |t: &str, at: usize| t.get(..at).map_or(0, |b| b.matches('\n').count());
    if let Err(e) = toml::from_str::<toml::Table>(text) {
        let msg = e.message().trim().to_owned();
        return Err(vec![match e.span() {
            Some(s) => format!("line {}: {msg}", line_of(text, s.start) + 1),
            None => msg,
        }]);
    }
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let mut found: Vec<(usize, String)> = Vec::new();
    let sorted = |mut found: Vec<(usize, String)>| {
        found.sort_by_key(|(at, _)| *at);
        found.into_iter().map(|(_, p)| p).collect::<Vec<_>>()
    };
    loop {
        let current = lines.join("\n");
        let e = match toml::from_str::<RawConfig>(&current) {
            Ok(raw) => return Ok((raw, sorted(found))),
            Err(e) => e,
        };
        let msg = e.message().trim().to_owned();
        let Some(at) = e.span().map(|s| line_of(&current, s.start)) else {
            found.push((usize::MAX, msg));
            return Err(sorted(found));
        };
        found.push((
            at,
            format!(
                "line {}: {}{msg}",
                at + 1,
                e.span()
                    .and_then(|sp| key_at(&current, sp.start))
                    .map_or_else(String::new, |k| format!("`{k}`: "))
            ),
        ));
        let Some(line) = lines.get_mut(at) else {
            return Err(sorted(found));
        };
        if line.trim().is_empty() || found.len() >= MAX_PROBLEMS {
            return Err(sorted(found));
        }
        // A table that is not known goes with its keys (they would otherwise join the table
        // above and be reported again, under the wrong name).
        let header = line.trim_start().starts_with('[');
        line.clear();
        if header {
            for l in lines.iter_mut().skip(at + 1) {
                if l.trim_start().starts_with('[') {
                    break;
                }
                l.clear();
            }
        }
        // A value over several lines, cut: stop at what was found.
        if toml::from_str::<toml::Table>(&lines.join("\n")).is_err() {
            return Err(sorted(found));
        }
    }
}

/// The dotted key (`gateway.listen`) whose name or value holds byte `offset` of `text`, read
/// from the parsed document's spans (so table headers, arrays of tables, inline tables, dotted
/// keys and comments are all taken as TOML means them); `None` when no key does.
fn key_at(text: &str, offset: usize) -> Option<String> {
    use toml::Spanned;
    use toml::de::{DeTable, DeValue};

    fn in_table(t: &DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
        for (k, v) in t.iter() {
            path.push(k.get_ref().to_string());
            // The deepest key first: a key inside this value, then this key itself.
            if in_value(v, offset, path) {
                return true;
            }
            if k.span().contains(&offset) || v.span().contains(&offset) {
                return true;
            }
            path.pop();
        }
        false
    }

    fn in_value(v: &Spanned<DeValue<'_>>, offset: usize, path: &mut Vec<String>) -> bool {
        match v.get_ref() {
            DeValue::Table(t) => in_table(t, offset, path),
            DeValue::Array(items) => items.iter().any(|i| in_value(i, offset, path)),
            _ => false,
        }
    }

    let doc = DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    in_table(doc.get_ref(), offset, &mut path).then(|| path.join("."))
}

impl Config {
    /// Parses a config file's text. `path` is the file (for messages and relative paths); `text`
    /// is `None` when there is no file, and the defaults apply relative to `base`.
    pub fn parse(
        path: Option<&Path>,
        text: Option<&str>,
        base: &Path,
        env: &dyn EnvSource,
    ) -> Result<Self, ConfigError> {
        let source = path.map_or_else(
            || "defaults and environment".to_owned(),
            |p| format!("`{}`", p.display()),
        );
        let mut problems = Vec::new();
        let raw: RawConfig = match text {
            None => RawConfig::default(),
            Some(t) => match raw_config(t) {
                Ok((raw, found)) => {
                    // The rest is still checked, so every problem is listed at once.
                    problems = found;
                    raw
                }
                Err(found) => {
                    return Err(ConfigError {
                        source,
                        problems: found,
                    });
                }
            },
        };

        let data_dir = env
            .var(env::DATA_DIR)
            .map(PathBuf::from)
            .or(raw.data_dir)
            .map_or_else(|| base.join("data"), |d| base.join(d));

        let from_env = env.var(env::STORE_URL);
        let named = if from_env.is_some() {
            format!("`{}` (the environment variable)", env::STORE_URL)
        } else {
            "`store.url`".to_owned()
        };
        let store = match from_env.or(raw.store.url) {
            Some(url) => match StoreUrl::parse(&url, base) {
                Ok(u) => Some(u),
                Err(why) => {
                    problems.push(format!("{named} (`{}`): {why}", redact_url(&url)));
                    None
                }
            },
            None => Some(StoreUrl::Sqlite(data_dir.join("blastwall.db"))),
        };

        let checkpoint_every = raw
            .audit
            .checkpoint_every
            .unwrap_or(DEFAULT_CHECKPOINT_EVERY);
        if checkpoint_every == 0 {
            problems.push("`audit.checkpoint_every`: must be at least 1".into());
        }
        let signing_key = raw
            .audit
            .signing_key
            .map_or_else(|| data_dir.join("keys/audit.key"), |p| base.join(p));

        let mut keys = BTreeMap::new();
        for (name, src) in raw.keys {
            match EnvName::new(&name) {
                Ok(n) => {
                    let src = match src {
                        KeySource::File(p) => KeySource::File(base.join(p)),
                        v @ KeySource::Var(_) => v,
                    };
                    keys.insert(n, src);
                }
                Err(e) => problems.push(format!("`keys.{name}`: {}", e.hint)),
            }
        }

        let catalog_dir = raw.catalog.dir.map(|d| base.join(d));
        let policy_dir = raw.policy.dir.map(|d| base.join(d));

        let mut gateway = GatewayConfig::default();
        if let Some(listen) = raw.gateway.listen {
            match listen.parse() {
                Ok(a) => gateway.listen = a,
                Err(_) => problems.push(format!(
                    "`gateway.listen` (`{listen}`): expected an address and port, e.g. `127.0.0.1:7070`"
                )),
            }
        }
        if let Some(n) = raw.gateway.max_body_bytes {
            if n == 0 {
                problems.push("`gateway.max_body_bytes`: must be at least 1".into());
            }
            gateway.max_body_bytes = n;
        }
        if let Some(n) = raw.gateway.max_connections {
            if n == 0 {
                problems.push("`gateway.max_connections`: must be at least 1".into());
            }
            gateway.max_connections = n;
        }
        if let Some(n) = raw.gateway.token_rate {
            // Above a billion a second the limiter's one-nanosecond step takes over: a number
            // that would not mean what it says.
            if n > 1_000_000_000 {
                problems.push(
                    "`gateway.token_rate`: at most 1000000000 a second (0 turns the limit off)"
                        .into(),
                );
            }
            gateway.token_rate = n;
        }
        if let Some(n) = raw.gateway.token_burst {
            if n == 0 {
                problems.push("`gateway.token_burst`: must be at least 1".into());
            }
            gateway.token_burst = n;
        }
        for (key, value, slot) in [
            (
                "connect_timeout",
                raw.gateway.connect_timeout,
                &mut gateway.connect_timeout,
            ),
            (
                "response_timeout",
                raw.gateway.response_timeout,
                &mut gateway.response_timeout,
            ),
            (
                "client_timeout",
                raw.gateway.client_timeout,
                &mut gateway.client_timeout,
            ),
            (
                "revocation_poll",
                raw.gateway.revocation_poll,
                &mut gateway.revocation_poll,
            ),
        ] {
            if let Some(text) = value {
                match crate::parse_duration(&text) {
                    Ok(d) if !d.is_zero() => *slot = d,
                    _ => problems.push(format!(
                        "`gateway.{key}` (`{text}`): expected a duration above zero, e.g. `5s`"
                    )),
                }
            }
        }
        if gateway.revocation_poll > Duration::from_secs(1) {
            problems.push(
                "`gateway.revocation_poll`: at most `1s`, so a revocation takes effect within a second"
                    .into(),
            );
        }
        gateway.ca_files = raw
            .gateway
            .ca_files
            .into_iter()
            .map(|(k, v)| (k, base.join(v)))
            .collect();

        match store {
            Some(store) if problems.is_empty() => Ok(Self {
                source: path.map(Path::to_path_buf),
                data_dir,
                store,
                audit: AuditConfig {
                    checkpoint_every,
                    signing_key,
                },
                keys,
                catalog_dir,
                policy_dir,
                gateway,
            }),
            _ => Err(ConfigError { source, problems }),
        }
    }

    /// Where the key of `env` is read from: the config's `[keys]` entry, else the variable
    /// `BLASTWALL_ENV_KEY_<NAME>` when it is set, else `<data_dir>/keys/<name>.key`.
    pub fn key_source(&self, name: &EnvName, env: &dyn EnvSource) -> KeySource {
        if let Some(src) = self.keys.get(name) {
            return src.clone();
        }
        let var = env::env_key_var(name.as_str());
        if env.var(&var).is_some() {
            return KeySource::Var(var);
        }
        KeySource::File(self.default_key_path(name))
    }

    /// `<data_dir>/keys/<name>.key`.
    pub fn default_key_path(&self, name: &EnvName) -> PathBuf {
        self.data_dir.join("keys").join(format!("{name}.key"))
    }

    /// The resolved config as TOML-like text for `config show`: no secret, passwords redacted.
    pub fn show(&self) -> serde_json::Value {
        let keys: BTreeMap<String, String> = self
            .keys
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    match v {
                        KeySource::File(p) => format!("file {}", p.display()),
                        KeySource::Var(n) => format!("variable {n}"),
                    },
                )
            })
            .collect();
        serde_json::json!({
            "source": self.source.as_ref().map(|p| p.display().to_string()),
            "data_dir": self.data_dir.display().to_string(),
            "store": { "url": self.store.redacted() },
            "audit": {
                "checkpoint_every": self.audit.checkpoint_every,
                "signing_key": self.audit.signing_key.display().to_string(),
            },
            "keys": keys,
            "catalog": { "dir": self.catalog_dir.as_ref().map(|p| p.display().to_string()) },
            "policy": { "dir": self.policy_dir.as_ref().map(|p| p.display().to_string()) },
            "gateway": {
                "listen": self.gateway.listen.to_string(),
                "max_body_bytes": self.gateway.max_body_bytes,
                "connect_timeout": crate::format_duration(self.gateway.connect_timeout),
                "response_timeout": crate::format_duration(self.gateway.response_timeout),
                "client_timeout": crate::format_duration(self.gateway.client_timeout),
                "max_connections": self.gateway.max_connections,
                "revocation_poll": crate::format_duration(self.gateway.revocation_poll),
                "token_burst": self.gateway.token_burst,
                "token_rate": self.gateway.token_rate,
                "ca_files": self.gateway.ca_files.iter().map(|(k, v)| (k.clone(), v.display().to_string())).collect::<BTreeMap<_, _>>(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::parse(
            Some(Path::new("/etc/bw/blastwall.toml")),
            Some(text),
            Path::new("/etc/bw"),
            &env,
        )
    }

    #[test]
    fn defaults() {
        let c = parse("", &[]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/etc/bw/data"));
        assert_eq!(c.store.redacted(), "sqlite:///etc/bw/data/blastwall.db");
        assert_eq!(c.audit.checkpoint_every, DEFAULT_CHECKPOINT_EVERY);
    }

    #[test]
    fn environment_overrides_file() {
        let c = parse(
            "[store]\nurl = \"sqlite://a.db\"\n",
            &[(env::STORE_URL, "postgres://bw:hunter2@db/bw")],
        )
        .unwrap();
        assert_eq!(c.store.redacted(), "postgres://bw:***@db/bw");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let e = parse(
            "data_dir = \"d\"\n[store]\nurl = \"sqlite://a.db\"\nurll = 1\n",
            &[],
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("blastwall.toml"), "{text}");
        assert!(text.contains("urll"), "{text}");
        assert!(text.contains("line 4"), "{text}");
    }

    #[test]
    fn every_unknown_key_and_wrong_type_at_once() {
        let e = parse(
            "data_dir = \"d\"\nbogus = 1\n[audit]\ncheckpoint_every = \"lots\"\n[gateway]\nlisten = \"127.0.0.1:1\"\nmax_body_bytes = \"big\"\nlisen = \"x\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.problems.len(), 4, "{e}");
        let text = e.to_string();
        // In the file's order, with the checks of values after them.
        assert!(e.problems[0].starts_with("line 2"), "{e}");
        for part in [
            "line 2: `bogus`",
            "line 4: `audit.checkpoint_every`",
            "line 7: `gateway.max_body_bytes`",
            "line 8: `gateway.lisen`",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        // An unknown table is one problem, not one more per key in it.
        let e = parse(
            "[gateway]\nlisten = \"127.0.0.1:1\"\n[bogus]\na = 1\nb = 2\n[audit]\ncheckpoint_every = \"x\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.problems.len(), 2, "{e}");
        assert!(e.problems[0].starts_with("line 3"), "{e}");
        assert!(e.problems[1].starts_with("line 7"), "{e}");
        // A syntax error alone: what follows it cannot be read.
        let e = parse("[store\nurl = 1\n", &[]).unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        assert!(e.problems[0].starts_with("line 1"), "{e}");
    }

    /// The key named in a problem is the one TOML means, whatever the line looks like: a
    /// header with a comment after it, a dotted key, an inline table, an array of tables.
    #[test]
    fn problems_name_the_key_as_toml_reads_it() {
        let e = parse(
            "audit.checkpoint_every = \"x\"\n[gateway] # the proxy\nlisten = \"127.0.0.1:1\"\nmax_body_bytes = \"big\" # = 1 MiB\n[keys]\nproduction = { var = \"P\", fil = \"k\" }\n[[bogus]]\na = 1\n",
            &[],
        )
        .unwrap_err();
        let text = e.to_string();
        for part in [
            "line 1: `audit.checkpoint_every`",
            "line 4: `gateway.max_body_bytes`",
            "line 6: `keys.production`",
            "line 7: `bogus`",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        assert_eq!(e.problems.len(), 4, "{e}");
    }

    #[test]
    fn a_bad_store_url_from_the_environment_names_the_variable() {
        let e = parse("", &[("BLASTWALL_STORE_URL", "bogus")]).unwrap_err();
        assert!(e.to_string().contains("`BLASTWALL_STORE_URL`"), "{e}");
    }

    #[test]
    fn all_problems_at_once() {
        let e = parse(
            "[store]\nurl = \"mysql://x\"\n[audit]\ncheckpoint_every = 0\n[keys]\nBAD_NAME = { file = \"k\" }\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.problems.len(), 3, "{e}");
    }

    #[test]
    fn key_sources() {
        let c = parse("[keys]\nproduction = { var = \"PROD_KEY\" }\n", &[]).unwrap();
        let env: HashMap<String, String> =
            [("BLASTWALL_ENV_KEY_QA".to_owned(), "x".to_owned())].into();
        let prod = EnvName::new("production").unwrap();
        assert_eq!(c.key_source(&prod, &env), KeySource::Var("PROD_KEY".into()));
        let qa = EnvName::new("qa").unwrap();
        assert_eq!(
            c.key_source(&qa, &env),
            KeySource::Var("BLASTWALL_ENV_KEY_QA".into())
        );
        let st = EnvName::new("staging").unwrap();
        assert_eq!(
            c.key_source(&st, &env),
            KeySource::File(PathBuf::from("/etc/bw/data/keys/staging.key"))
        );
    }

    #[test]
    fn gateway_settings() {
        let c = parse(
            "[gateway]\nlisten = \"0.0.0.0:8080\"\nconnect_timeout = \"2s\"\nca_files = { railway = \"ca.pem\" }\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.gateway.listen.port(), 8080);
        assert_eq!(c.gateway.connect_timeout, Duration::from_secs(2));
        assert_eq!(
            c.gateway.ca_files["railway"],
            PathBuf::from("/etc/bw/ca.pem")
        );
        let e = parse(
            "[gateway]\nlisten = \"nowhere\"\nrevocation_poll = \"5s\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.problems.len(), 2, "{e}");
        // The per-token rate: on by default, 0 turns it off, a burst of 0 is refused.
        let d = parse("", &[]).unwrap();
        assert_eq!((d.gateway.token_rate, d.gateway.token_burst), (100, 200));
        let c = parse("[gateway]\ntoken_rate = 0\ntoken_burst = 5\n", &[]).unwrap();
        assert_eq!((c.gateway.token_rate, c.gateway.token_burst), (0, 5));
        let e = parse("[gateway]\ntoken_burst = 0\n", &[]).unwrap_err();
        assert!(e.to_string().contains("token_burst"), "{e}");
        assert!(parse("[gateway]\ntoken_rate = -1\n", &[]).is_err());
        assert!(parse("[gateway]\ntoken_rate = 1000000000\n", &[]).is_ok());
        let e = parse("[gateway]\ntoken_rate = 1000000001\n", &[]).unwrap_err();
        assert!(e.to_string().contains("token_rate"), "{e}");
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact_url("postgres://u:p@h:5432/d"),
            "postgres://u:***@h:5432/d"
        );
        assert_eq!(redact_url("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(
            redact_url("postgres://h/d?user=u&password=p"),
            "postgres://h/d?user=u&password=***"
        );
    }
}
