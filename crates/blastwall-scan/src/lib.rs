//! The wall scanner: finds secrets, and above all production secrets, in files, environment
//! variables and other processes' environments and command lines.
//!
//! It owns the rules (data in `catalog/secrets/`, embedded and checked at start), the wall file
//! of fingerprints (keyed hashes of production secrets, written by `blastwall wall export`), the
//! walker and readers (archives, UTF-16, binary strings, `/proc`), the engine that runs rules and
//! fingerprints in one pass, and the output sinks (human, JSON lines, SARIF). It leaves the
//! command line, exit codes and reading the gateway's store to `blastwall-cli`.

pub mod baseline;
mod engine;
pub mod error;
pub mod finding;
pub mod fingerprint;
pub mod rules;
pub mod scanner;
pub mod sink;
pub mod summary;

pub use baseline::Baseline;
pub use error::ScanError;
pub use finding::{Confidence, Finding, Location, Severity, redact};
pub use fingerprint::{WallFile, tier_of_env};
pub use rules::{Rule, RuleSet, RuleSpec, Validator};
pub use scanner::{Progress, Report, ScanOptions, Scanner, Targets};
pub use sink::{HumanSink, JsonLinesSink, SarifSink, Sink};
pub use summary::{SkipReason, Skipped, Summary};
