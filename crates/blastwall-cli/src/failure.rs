//! What a failed command prints: one line, then an optional `hint:` line.

use std::fmt;

use crate::exit::Exit;

/// A command's failure: the message, what to do next, and the exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
    pub(crate) code: Exit,
}

impl Failure {
    /// A usage or operational failure (exit 2) with a hint.
    pub(crate) fn usage(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: Some(hint.into()),
            code: Exit::Usage,
        }
    }

    /// A usage failure from an error's text, whose own `hint: …` line (if it has one) is the
    /// hint; `fallback` otherwise. One hint either way.
    pub(crate) fn usage_or_own_hint(text: &str, fallback: &str) -> Self {
        let (message, hint) = split_hint(text);
        Self {
            message,
            hint: Some(hint.unwrap_or_else(|| fallback.to_owned())),
            code: Exit::Usage,
        }
    }

    /// Prints it to stderr.
    pub(crate) fn print(&self) {
        eprintln!("error: {}", self.message);
        if let Some(h) = &self.hint {
            eprintln!("hint: {h}");
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Splits `message\nhint: …` (the form `blastwall-core` errors take) into message and hint.
fn split_hint(text: &str) -> (String, Option<String>) {
    let mut message = Vec::new();
    let mut hint = None;
    for line in text.lines() {
        match line.trim_start().strip_prefix("hint: ") {
            Some(h) => hint = Some(h.to_owned()),
            None => message.push(line),
        }
    }
    (message.join("\n"), hint)
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        let (message, hint) = split_hint(&format!("{e:#}"));
        Self {
            message,
            hint,
            code: Exit::Usage,
        }
    }
}

macro_rules! failure_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Self {
                Self::from(anyhow::Error::from(e))
            }
        }
    )*};
}

failure_from!(
    blastwall_core::ParseError,
    blastwall_core::SealError,
    blastwall_core::config::ConfigError,
    blastwall_store::StoreError,
    std::io::Error
);
