//! An SQLite source: `VACUUM INTO` a private copy (consistent while the database is in use), then
//! the copy's per-table facts and `PRAGMA integrity_check`; the copy's file is the artifact.

use std::collections::BTreeMap;
use std::path::Path;

use futures_util::TryStreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};

use crate::error::VaultError;
use crate::facts::{Facts, SumDigest, TableFacts};
use crate::source::{Guard, Prepared, Producer, SourceSpec, quote_ident};

/// Copies the database with `VACUUM INTO` and records the copy's facts.
pub async fn prepare(spec: &SourceSpec) -> Result<Prepared, VaultError> {
    let path = Path::new(&spec.location);
    if !path.is_file() {
        return Err(VaultError::Source {
            source_name: spec.name.clone(),
            why: format!("`{}` is not a file", path.display()),
        });
    }
    let tmp = tempfile::Builder::new()
        .prefix("blastwall-backup-")
        .tempdir()
        .map_err(|e| VaultError::io("create", "a temporary folder", e))?;
    let copy = tmp.path().join("copy.sqlite");
    let copy_text = copy.to_string_lossy().replace('\'', "''");
    let mut conn = open(path, true).await?;
    let taken_at = crate::now();
    sqlx::raw_sql(&format!("VACUUM INTO '{copy_text}'"))
        .execute(&mut conn)
        .await
        .map_err(VaultError::db(format!("copying `{}`", path.display())))?;
    let version: String = sqlx::query_scalar("SELECT sqlite_version()")
        .fetch_one(&mut conn)
        .await
        .map_err(VaultError::db("reading the SQLite version"))?;
    let _ = conn.close().await;
    let facts = facts(&copy).await?;
    if let Facts::Tables {
        integrity: Some(i), ..
    } = &facts
        && i != "ok"
    {
        return Err(VaultError::Source {
            source_name: spec.name.clone(),
            why: format!("`PRAGMA integrity_check` says: {i}"),
        });
    }
    Ok(Prepared {
        facts: Some(facts),
        tools: [("sqlite".to_owned(), version)].into(),
        taken_at,
        producer: Producer::File(copy),
        guard: Guard::Temp(tmp),
    })
}

async fn open(path: &Path, read_only: bool) -> Result<SqliteConnection, VaultError> {
    SqliteConnectOptions::new()
        .filename(path)
        .read_only(read_only)
        .connect()
        .await
        .map_err(VaultError::db(format!("opening `{}`", path.display())))
}

/// Per-table row counts and digests, and `PRAGMA integrity_check`, of the database at `path`.
pub async fn facts(path: &Path) -> Result<Facts, VaultError> {
    let mut conn = open(path, true).await?;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(VaultError::db("listing tables"))?;
    let mut tables = BTreeMap::new();
    for name in names {
        let cols: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?)")
            .bind(&name)
            .fetch_all(&mut conn)
            .await
            .map_err(VaultError::db(format!("reading the columns of `{name}`")))?;
        let row_expr = if cols.is_empty() {
            "''".to_owned()
        } else {
            cols.iter()
                .map(|c| format!("quote({})", quote_ident(c)))
                .collect::<Vec<_>>()
                .join(" || '|' || ")
        };
        let sql = format!("SELECT {row_expr} FROM {}", quote_ident(&name));
        let mut digest = SumDigest::default();
        let mut rows = 0u64;
        let mut stream = sqlx::query_scalar::<_, String>(&sql).fetch(&mut conn);
        while let Some(row) = stream
            .try_next()
            .await
            .map_err(VaultError::db(format!("reading `{name}`")))?
        {
            digest.add(row.as_bytes());
            rows += 1;
        }
        drop(stream);
        tables.insert(
            name,
            TableFacts {
                rows,
                digest: digest.hex(),
            },
        );
    }
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .map_err(VaultError::db("checking integrity"))?;
    let _ = conn.close().await;
    Ok(Facts::Tables {
        tables,
        integrity: Some(integrity),
    })
}
