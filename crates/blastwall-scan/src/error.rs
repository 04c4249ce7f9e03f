//! Errors of the scanner crate.
//!
//! Messages follow the house style: lowercase, one line, user input in backticks, never a secret.
//! What a scan could not read is not an error: it is counted and listed in the
//! [`Summary`](crate::Summary). These errors are for what stops a scan before it starts (a bad
//! rule, an unreadable wall file) or stops writing its output.

use std::path::PathBuf;

use thiserror::Error;

/// Something that stops the scanner from starting or from writing its output.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ScanError {
    /// A rule file is not valid TOML or has unknown keys.
    #[error("rule file `{file}` does not parse: {message}")]
    RuleFile {
        /// The rule file's name.
        file: String,
        /// What the parser said.
        message: String,
    },
    /// A rule is invalid (bad regex, no keywords, duplicate id, failing example, …).
    #[error("rule `{rule}` is invalid: {message}")]
    Rule {
        /// The rule's id.
        rule: String,
        /// What is wrong with it.
        message: String,
    },
    /// A wall file could not be read or written.
    #[error("cannot access wall file `{}`", path.display())]
    WallIo {
        /// The wall file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A wall file is not a wall file of a version this scanner reads.
    #[error("invalid wall file `{name}`: {message}")]
    WallFormat {
        /// Where the wall file came from (a path, or `<memory>`).
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// An environment name given for a wall file is not a valid environment name.
    #[error("invalid environment name `{0}` for a wall file")]
    WallEnv(String),
    /// The operating system refused randomness for a wall file's salt.
    #[error("cannot get randomness for the wall file salt: {0}")]
    Random(String),
    /// A baseline file could not be read or written.
    #[error("cannot access baseline file `{}`", path.display())]
    BaselineIo {
        /// The baseline file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A baseline file is not a baseline of a version this scanner reads.
    #[error("invalid baseline file `{}`: {message}", path.display())]
    BaselineFormat {
        /// The baseline file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// An output sink could not write.
    #[error("cannot write scan output")]
    Output(#[source] std::io::Error),
    /// The thread pool for the walk could not be started.
    #[error("cannot start the scan: {0}")]
    Start(String),
}
