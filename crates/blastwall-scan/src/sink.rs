//! Output sinks: where a report's findings and summary go. Human, JSON lines and SARIF are
//! sinks; the CLI picks one and hands it a writer (stdout).

mod human;
mod jsonl;
mod sarif;

use std::io;

use crate::finding::Finding;
use crate::summary::Summary;

pub use human::HumanSink;
pub use jsonl::JsonLinesSink;
pub use sarif::{SARIF_SCHEMA, SarifSink};

/// Receives findings one by one, in report order, then the summary once.
pub trait Sink {
    /// One finding (never holding a secret: only its redacted prefix).
    fn finding(&mut self, finding: &Finding) -> io::Result<()>;
    /// The summary, after the last finding; a sink that buffers writes everything here.
    fn finish(&mut self, summary: &Summary) -> io::Result<()>;
}
