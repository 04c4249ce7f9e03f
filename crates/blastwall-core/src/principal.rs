//! Who holds and who owns a credential.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ParseError;

/// A principal's name: a human owner (`jer@pocketos.com`) or a holder (`cursor-agent`).
///
/// Printable, no whitespace or control characters, 1 to 128 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PrincipalName(String);

impl PrincipalName {
    /// Checks and wraps a name.
    pub fn new(what: &'static str, text: &str) -> Result<Self, ParseError> {
        let ok = !text.is_empty()
            && text.chars().count() <= 128
            && text.chars().all(|c| !c.is_whitespace() && !c.is_control());
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(ParseError::new(
                what,
                text,
                "use 1 to 128 characters without spaces, e.g. `jer@pocketos.com` or `cursor-agent`",
            ))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PrincipalName {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new("name", &value)
    }
}

impl From<PrincipalName> for String {
    fn from(value: PrincipalName) -> Self {
        value.0
    }
}

impl fmt::Display for PrincipalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
