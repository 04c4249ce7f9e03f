//! Backup sources: how each kind takes a consistent dump and records its integrity facts.
//!
//! - PostgreSQL ([`postgres`]): a REPEATABLE READ transaction exports its snapshot; the facts are
//!   read in that transaction and `pg_dump -Fc --snapshot=…` dumps that same snapshot.
//! - SQLite ([`sqlite`]): `VACUUM INTO` a private copy (a consistent online copy), whose facts and
//!   `PRAGMA integrity_check` are recorded, and whose file is the artifact.
//! - A directory ([`dir`]): a tar with sorted entries; each file is hashed as it is archived.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::VaultError;
use crate::facts::Facts;

pub mod dir;
pub mod postgres;
pub mod sqlite;

/// The kind of a backup source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A PostgreSQL database, by URL.
    Postgres,
    /// An SQLite database file.
    Sqlite,
    /// A directory.
    Dir,
}

impl SourceKind {
    /// Parses `postgres`, `sqlite` or `dir`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "postgres" | "postgresql" => Some(Self::Postgres),
            "sqlite" => Some(Self::Sqlite),
            "dir" | "directory" => Some(Self::Dir),
            _ => None,
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
            Self::Dir => "dir",
        })
    }
}

/// A configured source. `Debug` hides any password in a PostgreSQL URL.
#[derive(Clone, Serialize, Deserialize)]
pub struct SourceSpec {
    /// Its name (`appdb`): letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// Its kind.
    pub kind: SourceKind,
    /// A `postgres://` URL, or an absolute path.
    pub location: String,
}

impl SourceSpec {
    /// The location with any password replaced by `***`.
    pub fn display_location(&self) -> String {
        blastwall_core::config::redact_url(&self.location)
    }
}

impl fmt::Debug for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SourceSpec({}, {}, {})",
            self.name,
            self.kind,
            self.display_location()
        )
    }
}

/// A dump ready to be streamed: the facts (when known before the stream), the tools, and the
/// producer that writes the artifact. Whatever keeps the dump consistent (PostgreSQL's open
/// snapshot, SQLite's private copy) lives in `guard` until the stream is done.
pub struct Prepared {
    /// Facts recorded before the stream (databases).
    pub facts: Option<Facts>,
    /// Tool and library versions.
    pub tools: BTreeMap<String, String>,
    /// When the snapshot was taken.
    pub taken_at: jiff::Timestamp,
    /// What writes the artifact.
    pub producer: Producer,
    /// Keeps the snapshot or the copy alive; finished by [`Guard::finish`].
    pub guard: Guard,
}

/// What writes a dump.
#[derive(Debug)]
pub enum Producer {
    /// A command whose stdout is the artifact (`pg_dump`).
    Command(std::process::Command),
    /// A file that is the artifact (SQLite's copy).
    File(PathBuf),
    /// A folder to archive as a tar (facts are recorded while archiving).
    Tar(PathBuf),
}

/// What keeps a dump consistent until the stream has been written.
pub enum Guard {
    /// Nothing.
    None,
    /// PostgreSQL's exporting transaction.
    Postgres(Box<sqlx::PgConnection>),
    /// A temporary folder holding a copy.
    Temp(tempfile::TempDir),
}

impl Guard {
    /// The facts read while the dump streams: PostgreSQL's, in the exported snapshot.
    pub async fn facts(&mut self) -> Result<Option<Facts>, VaultError> {
        match self {
            Self::Postgres(conn) => postgres::facts(conn).await.map(Some),
            Self::None | Self::Temp(_) => Ok(None),
        }
    }

    /// Ends the transaction, removes the copy.
    pub async fn finish(self) {
        if let Self::Postgres(mut conn) = self {
            let _ = sqlx::raw_sql("COMMIT").execute(&mut *conn).await;
            let _ = sqlx::Connection::close(*conn).await;
        }
    }
}

/// Takes the snapshot (or copy) of `spec` and records its facts.
pub async fn prepare(spec: &SourceSpec) -> Result<Prepared, VaultError> {
    let mut tools = BTreeMap::new();
    tools.insert("blastwall".into(), env!("CARGO_PKG_VERSION").into());
    tools.insert("zstd".into(), zstd::zstd_safe::version_string().into());
    tools.insert("age".into(), "age crate 0.11 (X25519)".into());
    let mut p = match spec.kind {
        SourceKind::Postgres => postgres::prepare(spec).await?,
        SourceKind::Sqlite => sqlite::prepare(spec).await?,
        SourceKind::Dir => dir::prepare(spec)?,
    };
    p.tools.append(&mut tools);
    Ok(p)
}

impl Producer {
    /// Writes the artifact to `w`; returns the facts recorded while writing, if any.
    pub fn run(self, source: &str, w: &mut dyn Write) -> Result<Option<Facts>, VaultError> {
        match self {
            Self::Command(cmd) => run_command(source, cmd, w).map(|()| None),
            Self::File(path) => {
                let mut f =
                    std::fs::File::open(&path).map_err(|e| VaultError::io("open", &path, e))?;
                std::io::copy(&mut f, w).map_err(|e| stream_error(&path, e))?;
                Ok(None)
            }
            Self::Tar(root) => dir::write_tar(&root, w).map(|files| Some(Facts::Files { files })),
        }
    }
}

/// An error while streaming: the sink's own errors (upload, disk) pass through unchanged.
pub(crate) fn stream_error(path: &std::path::Path, e: std::io::Error) -> VaultError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<crate::pipeline::SinkClosed>())
    {
        Some(_) => VaultError::Other("the upload stopped".into()),
        None => VaultError::io("stream", path, e),
    }
}

fn run_command(
    source: &str,
    mut cmd: std::process::Command,
    w: &mut dyn Write,
) -> Result<(), VaultError> {
    let tool = cmd.get_program().to_string_lossy().into_owned();
    let errfile =
        tempfile::tempfile().map_err(|e| VaultError::io("create", "a temporary file", e))?;
    let errclone = errfile
        .try_clone()
        .map_err(|e| VaultError::io("create", "a temporary file", e))?;
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(errclone)
        .spawn()
        .map_err(|e| VaultError::Tool {
            tool: tool.clone(),
            detail: e.to_string(),
            hint:
                "install the PostgreSQL client tools (Debian: `apt-get install postgresql-client`)"
                    .into(),
        })?;
    let copied = match child.stdout.take() {
        Some(mut out) => std::io::copy(&mut out, w),
        None => Ok(0),
    };
    let status = child
        .wait()
        .map_err(|e| VaultError::io("wait for", &tool, e))?;
    if !status.success() {
        let mut text = String::new();
        let mut errfile = errfile;
        let _ = std::io::Seek::rewind(&mut errfile);
        let _ = std::io::Read::read_to_string(&mut errfile, &mut text);
        return Err(VaultError::Tool {
            tool,
            detail: last_lines(&text, 3),
            hint: format!("check that `{source}` is reachable with the configured URL"),
        });
    }
    copied.map_err(|e| stream_error(std::path::Path::new(&tool), e))?;
    Ok(())
}

/// The last `n` non-empty lines of `text`, joined with `; `.
pub(crate) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("; ")
}

/// `"name"` with inner quotes doubled: an SQL identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
