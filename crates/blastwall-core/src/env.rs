//! The environment variables Blastwall reads, each documented once, and the seam through which
//! code reads them (so tests pass a map instead of mutating the process environment).

use std::collections::HashMap;

/// Path of the config file (default: `./blastwall.toml`). Overridden by `--config`.
pub const CONFIG: &str = "BLASTWALL_CONFIG";
/// Overrides `[store] url`: `sqlite://PATH` or `postgres://…`.
pub const STORE_URL: &str = "BLASTWALL_STORE_URL";
/// Overrides `data_dir`.
pub const DATA_DIR: &str = "BLASTWALL_DATA_DIR";
/// Log filter for stderr (`info`, `debug`, `blastwall=trace`, …). Overridden by `-v`/`-q`.
pub const LOG: &str = "BLASTWALL_LOG";
/// Prefix of the variables that carry an environment's private key text directly:
/// `BLASTWALL_ENV_KEY_<NAME>`, the name upper-cased with `-` as `_`
/// (e.g. `BLASTWALL_ENV_KEY_PRODUCTION`). Used when the config names no key file.
pub const ENV_KEY_PREFIX: &str = "BLASTWALL_ENV_KEY_";
/// The audit checkpoint signing key text (overrides `[audit] signing_key`).
pub const AUDIT_KEY: &str = "BLASTWALL_AUDIT_KEY";
/// Runs the integration tests against another build of the binary.
pub const TEST_BIN: &str = "BLASTWALL_TEST_BIN";

/// Every documented variable, for `config show` and the docs.
pub const ALL: &[(&str, &str)] = &[
    (CONFIG, "path of the config file"),
    (STORE_URL, "overrides [store] url"),
    (DATA_DIR, "overrides data_dir"),
    (LOG, "log filter for stderr"),
    (
        "BLASTWALL_ENV_KEY_<NAME>",
        "an environment's private key text",
    ),
    (AUDIT_KEY, "the audit checkpoint signing key text"),
];

/// The variable that carries the key of environment `name`.
pub fn env_key_var(name: &str) -> String {
    format!(
        "{ENV_KEY_PREFIX}{}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

/// Where configuration code reads environment variables from.
pub trait EnvSource {
    /// The value of `name`, if set and valid Unicode.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_var_names() {
        assert_eq!(env_key_var("production"), "BLASTWALL_ENV_KEY_PRODUCTION");
        assert_eq!(env_key_var("qa-2"), "BLASTWALL_ENV_KEY_QA_2");
    }
}
