//! Environments: a name, a tier and the limits that come with them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ParseError;

/// Longest environment name accepted.
pub const ENV_NAME_MAX: usize = 32;

/// A validated environment name: `[a-z][a-z0-9-]{0,31}`.
///
/// No underscore, because the name is embedded in credentials between underscores.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvName(String);

impl EnvName {
    /// Checks and wraps a name.
    pub fn new(name: &str) -> Result<Self, ParseError> {
        let ok = !name.is_empty()
            && name.len() <= ENV_NAME_MAX
            && name.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(ParseError::new(
                "environment name",
                name,
                "use 1 to 32 characters: a lowercase letter, then lowercase letters, digits or `-`",
            ))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EnvName {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<EnvName> for String {
    fn from(value: EnvName) -> Self {
        value.0
    }
}

impl FromStr for EnvName {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for EnvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The tier of an environment: production guardrails apply to `prod`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Production: short token lifetimes, destructive operations held for approval.
    Prod,
    /// Anything else (staging, qa, dev).
    Nonprod,
}

impl Tier {
    /// The default longest token lifetime for the tier: 1h for prod, 8h otherwise.
    pub fn default_max_token_ttl(self) -> Duration {
        match self {
            Self::Prod => Duration::from_secs(3600),
            Self::Nonprod => Duration::from_secs(8 * 3600),
        }
    }

    /// The tier as text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prod => "prod",
            Self::Nonprod => "nonprod",
        }
    }
}

impl FromStr for Tier {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "prod" => Ok(Self::Prod),
            "nonprod" => Ok(Self::Nonprod),
            _ => Err(ParseError::new("tier", s, "use `prod` or `nonprod`")),
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An environment as the store records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    /// Its name.
    pub name: EnvName,
    /// Its tier.
    pub tier: Tier,
    /// The longest lifetime a token of this environment may have.
    #[serde(with = "crate::duration_secs")]
    pub max_token_ttl: Duration,
    /// The environment's public sealing key (an age X25519 recipient, `age1…`).
    pub recipient: String,
}

/// Parses `NAME:TIER` (as `blastwall init --env` takes it).
pub fn parse_name_tier(text: &str) -> Result<(EnvName, Tier), ParseError> {
    let (name, tier) = text.split_once(':').ok_or_else(|| {
        ParseError::new(
            "environment",
            text,
            "write it as NAME:TIER, e.g. `qa:nonprod`",
        )
    })?;
    Ok((EnvName::new(name)?, tier.parse()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["staging", "production", "qa-2", "a"] {
            assert!(EnvName::new(good).is_ok(), "{good}");
        }
        for bad in ["", "Staging", "2qa", "qa_2", "a b", &"x".repeat(33)] {
            assert!(EnvName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn name_tier() {
        assert_eq!(
            parse_name_tier("qa:nonprod").unwrap(),
            (EnvName::new("qa").unwrap(), Tier::Nonprod)
        );
        assert!(parse_name_tier("qa").is_err());
        assert!(parse_name_tier("qa:live").is_err());
    }
}
