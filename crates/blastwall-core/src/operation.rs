//! Operations (what a request does), their classes, and the decisions taken on them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ParseError;

/// How much harm an operation can do. Ordered: `Read < Write < Destructive`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationClass {
    /// Reads only.
    Read,
    /// Creates or changes something reversibly.
    Write,
    /// Irreversible: deletes data, changes a schema, a credential or a permission.
    Destructive,
}

impl OperationClass {
    /// The class as text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Destructive => "destructive",
        }
    }
}

impl fmt::Display for OperationClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OperationClass {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            "destructive" => Ok(Self::Destructive),
            _ => Err(ParseError::new(
                "operation class",
                s,
                "use `read`, `write` or `destructive`",
            )),
        }
    }
}

/// An operation name: `<profile>:<resource>.<verb>`, e.g. `railway:volume.delete`, or
/// `<profile>:unknown` for a request the profile does not recognise.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OperationName(String);

impl OperationName {
    /// Checks and wraps an operation name.
    pub fn new(text: &str) -> Result<Self, ParseError> {
        let hint = "write it as `<profile>:<resource>.<verb>`, e.g. `railway:volume.delete`";
        let (profile, rest) = text
            .split_once(':')
            .ok_or_else(|| ParseError::new("operation", text, hint))?;
        let ok = is_ident(profile)
            && (rest == "unknown"
                || rest
                    .split_once('.')
                    .is_some_and(|(res, verb)| is_ident(res) && is_ident(verb)));
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(ParseError::new("operation", text, hint))
        }
    }

    /// The unknown operation of a profile.
    pub fn unknown(profile: &str) -> Self {
        Self(format!("{profile}:unknown"))
    }

    /// The profile part.
    pub fn profile(&self) -> &str {
        self.0.split_once(':').map_or("", |(p, _)| p)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl TryFrom<String> for OperationName {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<OperationName> for String {
    fn from(value: OperationName) -> Self {
        value.0
    }
}

impl fmt::Display for OperationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A pattern over operation names, as scopes are written: `railway:domain.*`, `github:*.read`,
/// `railway:*`, or an exact name. `*` matches one whole segment (profile, resource or verb);
/// `<profile>:*` matches every operation of the profile except `<profile>:unknown`, which must be
/// named explicitly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OperationPattern {
    text: String,
    profile: Segment,
    rest: PatternRest,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Any,
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PatternRest {
    All,
    Unknown,
    Op { resource: Segment, verb: Segment },
}

impl OperationPattern {
    /// Parses a pattern.
    pub fn new(text: &str) -> Result<Self, ParseError> {
        let hint = "write it as `<profile>:<resource>.<verb>` where any part may be `*`, e.g. `railway:domain.*`";
        let bad = || ParseError::new("scope pattern", text, hint);
        let (profile, rest) = text.split_once(':').ok_or_else(bad)?;
        let seg = |s: &str| -> Result<Segment, ParseError> {
            if s == "*" {
                Ok(Segment::Any)
            } else if is_ident(s) {
                Ok(Segment::Exact(s.to_owned()))
            } else {
                Err(bad())
            }
        };
        let profile = seg(profile)?;
        let rest = match rest {
            "*" => PatternRest::All,
            "unknown" => PatternRest::Unknown,
            _ => {
                let (r, v) = rest.split_once('.').ok_or_else(bad)?;
                PatternRest::Op {
                    resource: seg(r)?,
                    verb: seg(v)?,
                }
            }
        };
        Ok(Self {
            text: text.to_owned(),
            profile,
            rest,
        })
    }

    /// Whether `op` matches this pattern.
    pub fn matches(&self, op: &OperationName) -> bool {
        let Some((profile, rest)) = op.as_str().split_once(':') else {
            return false;
        };
        if !seg_matches(&self.profile, profile) {
            return false;
        }
        match (&self.rest, rest) {
            (PatternRest::Unknown, r) => r == "unknown",
            (_, "unknown") => false,
            (PatternRest::All, _) => true,
            (PatternRest::Op { resource, verb }, r) => r
                .split_once('.')
                .is_some_and(|(res, v)| seg_matches(resource, res) && seg_matches(verb, v)),
        }
    }

    /// Whether the pattern names one operation, with no wildcard (`railway:variable.read`).
    pub fn is_exact(&self) -> bool {
        matches!(self.profile, Segment::Exact(_))
            && matches!(
                &self.rest,
                PatternRest::Unknown
                    | PatternRest::Op {
                        resource: Segment::Exact(_),
                        verb: Segment::Exact(_),
                    }
            )
    }

    /// The profile this pattern is limited to, if it names one.
    pub fn profile(&self) -> Option<&str> {
        match &self.profile {
            Segment::Any => None,
            Segment::Exact(p) => Some(p),
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn seg_matches(seg: &Segment, text: &str) -> bool {
    match seg {
        Segment::Any => true,
        Segment::Exact(s) => s == text,
    }
}

impl TryFrom<String> for OperationPattern {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<OperationPattern> for String {
    fn from(value: OperationPattern) -> Self {
        value.text
    }
}

impl fmt::Display for OperationPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// What the gateway decides for a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "lowercase")]
pub enum Decision {
    /// Forward it.
    Allow,
    /// Refuse it, with a reason written for the agent.
    Deny {
        /// Why.
        reason: String,
    },
    /// Hold it until a human approves the request with this id.
    Hold {
        /// The approval request's id.
        request_id: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(s: &str) -> OperationName {
        OperationName::new(s).unwrap()
    }

    #[test]
    fn pattern_matching() {
        let p = OperationPattern::new("railway:domain.*").unwrap();
        assert!(p.matches(&op("railway:domain.create")));
        assert!(!p.matches(&op("railway:volume.delete")));
        assert!(!p.matches(&op("github:domain.create")));
        let p = OperationPattern::new("github:*.read").unwrap();
        assert!(p.matches(&op("github:repo.read")));
        assert!(!p.matches(&op("github:repo.delete")));
        let p = OperationPattern::new("railway:*").unwrap();
        assert!(p.matches(&op("railway:volume.delete")));
        assert!(!p.matches(&OperationName::unknown("railway")));
        let p = OperationPattern::new("railway:unknown").unwrap();
        assert!(p.matches(&OperationName::unknown("railway")));
    }

    #[test]
    fn bad_patterns() {
        for bad in [
            "",
            "railway",
            "railway:",
            "railway:domain",
            "rail way:*",
            "railway:do*.x",
        ] {
            assert!(OperationPattern::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn classes_are_ordered() {
        assert!(OperationClass::Read < OperationClass::Write);
        assert!(OperationClass::Write < OperationClass::Destructive);
    }
}
