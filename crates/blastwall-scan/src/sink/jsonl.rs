//! JSON lines: one object per finding (`"type": "finding"`), then one summary object
//! (`"type": "summary"`).

use std::io::{self, Write};

use serde::Serialize;

use crate::finding::Finding;
use crate::sink::Sink;
use crate::summary::Summary;

/// Writes findings and the summary as JSON lines.
#[derive(Debug)]
pub struct JsonLinesSink<W: Write> {
    out: W,
}

impl<W: Write> JsonLinesSink<W> {
    /// A sink writing to `out`.
    pub fn new(out: W) -> Self {
        Self { out }
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    r#type: &'static str,
    #[serde(flatten)]
    inner: &'a T,
}

impl<W: Write> Sink for JsonLinesSink<W> {
    fn finding(&mut self, finding: &Finding) -> io::Result<()> {
        let line = serde_json::to_string(&Tagged {
            r#type: "finding",
            inner: finding,
        })
        .map_err(io::Error::other)?;
        writeln!(self.out, "{line}")
    }

    fn finish(&mut self, summary: &Summary) -> io::Result<()> {
        #[derive(Serialize)]
        struct WithComplete<'a> {
            #[serde(flatten)]
            summary: &'a Summary,
            complete: bool,
        }
        let line = serde_json::to_string(&Tagged {
            r#type: "summary",
            inner: &WithComplete {
                summary,
                complete: summary.is_complete(),
            },
        })
        .map_err(io::Error::other)?;
        writeln!(self.out, "{line}")?;
        self.out.flush()
    }
}
