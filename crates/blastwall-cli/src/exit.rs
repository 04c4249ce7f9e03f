//! Exit codes, one enum, documented in `docs/cli.md`.

/// How `blastwall` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Everything asked was done; a check passed.
    Clean = 0,
    /// A check failed (`log verify` found tampering), or findings.
    Failed = 1,
    /// Bad usage or configuration, or the command could not do what was asked.
    Usage = 2,
    /// A production secret was found outside production.
    ProductionSecret = 3,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        Self::from(e as u8)
    }
}
