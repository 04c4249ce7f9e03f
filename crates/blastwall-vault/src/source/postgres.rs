//! A PostgreSQL source: facts and dump from one exported snapshot.
//!
//! A REPEATABLE READ, READ ONLY transaction exports its snapshot (`pg_export_snapshot()`); the
//! per-table row counts and digests are read in that transaction while `pg_dump -Fc
//! --snapshot=<id>` dumps the very same snapshot (concurrently: the transaction stays open until
//! both are done), so the facts describe exactly what the dump holds. The digest of a table is
//! the sum of each row's 64-bit `hashtextextended(row::text, 0)` (the stable hash behind hash
//! partitioning, 2.5× cheaper than `md5`), computed by the server: independent of row order and
//! never sent row by row.

use std::collections::BTreeMap;

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::error::VaultError;
use crate::facts::{Facts, TableFacts};
use crate::scratch::pg_bin;
use crate::source::{Guard, Prepared, Producer, SourceSpec};

/// Opens the snapshot, records the facts, and prepares `pg_dump` on the same snapshot.
pub async fn prepare(spec: &SourceSpec) -> Result<Prepared, VaultError> {
    let mut conn = PgConnection::connect(&spec.location)
        .await
        .map_err(|e| VaultError::Source {
            source_name: spec.name.clone(),
            why: format!("cannot connect to `{}`: {e}", spec.display_location()),
        })?;
    sqlx::raw_sql("BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut conn)
        .await
        .map_err(VaultError::db("opening the snapshot transaction"))?;
    let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut conn)
        .await
        .map_err(VaultError::db("exporting the snapshot"))?;
    let taken_at = crate::now();
    let server: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await
        .map_err(VaultError::db("reading the server version"))?;
    let pg_dump = pg_bin("pg_dump");
    let mut cmd = std::process::Command::new(&pg_dump);
    let (url, password) = split_password(&spec.location);
    cmd.args(["--format=custom", "--compress=0", "--no-sync"])
        .arg(format!("--snapshot={snapshot}"))
        .arg(format!("--dbname={url}"));
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let mut tools = BTreeMap::new();
    tools.insert("postgres server".to_owned(), server);
    tools.insert("pg_dump".to_owned(), tool_version(&pg_dump));
    // The facts are read on this connection, in the exported snapshot, while pg_dump streams
    // the same snapshot: see `Guard::facts`.
    Ok(Prepared {
        facts: None,
        tools,
        taken_at,
        producer: Producer::Command(cmd),
        guard: Guard::Postgres(Box::new(conn)),
    })
}

/// Per-table row counts and order-independent digests, read on `conn` (in its snapshot).
pub async fn facts(conn: &mut PgConnection) -> Result<Facts, VaultError> {
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT n.nspname || '.' || c.relname, quote_ident(n.nspname) || '.' || quote_ident(c.relname) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
           AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' \
         ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(VaultError::db("listing tables"))?;
    let mut out = BTreeMap::new();
    for (name, quoted) in tables {
        let sql = format!(
            "SELECT count(*)::int8, coalesce(sum(hashtextextended(t::text, 0)::numeric), 0)::text \
             FROM ONLY {quoted} AS t"
        );
        let (rows, digest): (i64, String) = sqlx::query_as(&sql)
            .fetch_one(&mut *conn)
            .await
            .map_err(VaultError::db(format!("reading `{name}`")))?;
        out.insert(
            name,
            TableFacts {
                rows: u64::try_from(rows).unwrap_or(0),
                digest,
            },
        );
    }
    Ok(Facts::Tables {
        tables: out,
        integrity: None,
    })
}

/// The facts of the database at `url`.
pub async fn facts_at(url: &str) -> Result<Facts, VaultError> {
    let mut conn = PgConnection::connect(url)
        .await
        .map_err(VaultError::db(format!(
            "connecting to `{}`",
            blastwall_core::config::redact_url(url)
        )))?;
    let f = facts(&mut conn).await;
    let _ = conn.close().await;
    f
}

/// Where the server at `url` keeps its data, when it says (superuser or `pg_read_all_settings`)
/// and that folder is visible here: for the same-volume guard.
pub async fn data_dir(url: &str) -> Option<std::path::PathBuf> {
    let mut conn = PgConnection::connect(url).await.ok()?;
    let dir: Option<String> = sqlx::query_scalar("SHOW data_directory")
        .fetch_one(&mut conn)
        .await
        .ok();
    let _ = conn.close().await;
    dir.map(std::path::PathBuf::from).filter(|p| p.exists())
}

/// The URL without its password, and the password (passed to tools in `PGPASSWORD`, never on
/// their command line where `ps` shows it).
pub fn split_password(url: &str) -> (String, Option<String>) {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let password = u.password().map(|p| {
                url::form_urlencoded::parse(format!("p={p}").as_bytes())
                    .next()
                    .map_or_else(|| p.to_owned(), |(_, v)| v.into_owned())
            });
            let _ = u.set_password(None);
            (u.to_string(), password)
        }
        Err(_) => (url.to_owned(), None),
    }
}

/// `TOOL --version`'s first line.
pub fn tool_version(tool: &std::path::Path) -> String {
    std::process::Command::new(tool)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_split_off() {
        let (u, p) = split_password("postgres://bw:s%40cret@db:5432/app");
        assert_eq!(u, "postgres://bw@db:5432/app");
        assert_eq!(p.as_deref(), Some("s@cret"));
        let (u, p) = split_password("postgres://bw@db/app");
        assert_eq!(u, "postgres://bw@db/app");
        assert_eq!(p, None);
    }
}
