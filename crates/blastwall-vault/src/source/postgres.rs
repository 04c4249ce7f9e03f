//! A PostgreSQL source: facts and dump from one exported snapshot.
//!
//! A REPEATABLE READ, READ ONLY transaction exports its snapshot (`pg_export_snapshot()`); the
//! per-table row counts and digests are read in that transaction while `pg_dump -Fc
//! --snapshot=<id>` dumps the very same snapshot (concurrently: the transaction stays open until
//! both are done), so the facts describe exactly what the dump holds. The digest of a table is
//! a sum of one 64-bit hash per row, computed by the server: independent of row order and never
//! sent row by row. Where every column has a built-in type whose hash depends only on the value
//! (integers, text, numeric, timestamps, uuid, jsonb, …), the row hash is
//! `hash_record_extended(row, 0)` (PostgreSQL 14+: each column's own hash function, the stable
//! one behind hash partitioning) and the digest is written `rec:<sum>`; otherwise (an enum, whose
//! hash is its OID and so changes in a restore; arrays; composite and extension types; an older
//! server) it is `hashtextextended(row::text, 0)`, about twice as costly because every value is
//! first printed as text, written as the bare sum. A drill recomputes each table the way its
//! recorded digest says.

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
    facts_like(conn, None).await
}

/// Prefix of a digest summed over `hash_record_extended` (see the module's documentation).
const RECORD_DIGEST: &str = "rec:";

/// Built-in types (fixed OIDs) whose hash function depends on the value alone, so a row of them
/// hashes the same after a dump and a restore into another cluster: bool, bytea, char, name,
/// int8, int2, int4, text, float4, float8, bpchar, varchar, date, time, timestamp, timestamptz,
/// interval, timetz, numeric, uuid, jsonb, inet, cidr, macaddr, money, bit, varbit.
const VALUE_HASHED_TYPES: &[i32] = &[
    16, 17, 18, 19, 20, 21, 23, 25, 700, 701, 1042, 1043, 1082, 1083, 1114, 1184, 1186, 1266, 1700,
    2950, 3802, 869, 650, 829, 790, 1560, 1562,
];

/// [`facts`], computing each table's digest the way `recorded` (a backup's facts) did, when
/// given: a drill of a backup recorded with the text digest recomputes the text digest.
pub async fn facts_like(
    conn: &mut PgConnection,
    recorded: Option<&Facts>,
) -> Result<Facts, VaultError> {
    let server_num: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int4")
        .fetch_one(&mut *conn)
        .await
        .map_err(VaultError::db("reading the server version"))?;
    let tables: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT n.nspname || '.' || c.relname, quote_ident(n.nspname) || '.' || quote_ident(c.relname), \
           coalesce((SELECT bool_and(coalesce(nullif(t.typbasetype, 0), t.oid)::int4 = ANY($1)) \
                     FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), true) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
           AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' \
         ORDER BY 1",
    )
    .bind(VALUE_HASHED_TYPES)
    .fetch_all(&mut *conn)
    .await
    .map_err(VaultError::db("listing tables"))?;
    let recorded_tables = match recorded {
        Some(Facts::Tables { tables, .. }) => Some(tables),
        _ => None,
    };
    let mut out = BTreeMap::new();
    for (name, quoted, value_hashed) in tables {
        let by_record = match recorded_tables.and_then(|t| t.get(&name)) {
            Some(r) => r.digest.starts_with(RECORD_DIGEST),
            None => value_hashed && server_num >= 140_000,
        };
        let row_hash = if by_record {
            "hash_record_extended(t, 0)"
        } else {
            "hashtextextended(t::text, 0)"
        };
        let sql = format!(
            "SELECT count(*)::int8, coalesce(sum({row_hash}), 0)::text FROM ONLY {quoted} AS t"
        );
        let (rows, sum): (i64, String) = sqlx::query_as(&sql)
            .fetch_one(&mut *conn)
            .await
            .map_err(VaultError::db(format!("reading `{name}`")))?;
        let digest = if by_record {
            format!("{RECORD_DIGEST}{sum}")
        } else {
            sum
        };
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

/// The facts of the database at `url`, computed the way `recorded` was (see [`facts_like`]).
pub async fn facts_at(url: &str, recorded: Option<&Facts>) -> Result<Facts, VaultError> {
    let mut conn = PgConnection::connect(url)
        .await
        .map_err(VaultError::db(format!(
            "connecting to `{}`",
            blastwall_core::config::redact_url(url)
        )))?;
    let f = facts_like(&mut conn, recorded).await;
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
/// their command line where `ps` shows it). libpq takes a password in the user part
/// (`postgres://u:p@host/db`) or as a `password` parameter (`?password=p`, which wins), both
/// percent-decoded (`+` is a plus, as libpq reads it); the other parameters are kept as written.
pub fn split_password(url: &str) -> (String, Option<String>) {
    let decode = |p: &str| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8_lossy()
            .into_owned()
    };
    match url::Url::parse(url) {
        Ok(mut u) => {
            let mut password = u.password().map(decode);
            let _ = u.set_password(None);
            if let Some(query) = u.query().map(str::to_owned) {
                let mut kept = Vec::new();
                for item in query.split('&') {
                    match item.strip_prefix("password=") {
                        Some(p) => password = Some(decode(p)),
                        None => kept.push(item),
                    }
                }
                if kept.len() != query.split('&').count() {
                    let kept = kept.join("&");
                    u.set_query((!kept.is_empty()).then_some(kept.as_str()));
                }
            }
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
        let (u, p) = split_password("postgres://bw@db/app?sslmode=disable&password=s%26cret");
        assert_eq!(u, "postgres://bw@db/app?sslmode=disable");
        assert_eq!(p.as_deref(), Some("s&cret"));
        let (u, p) = split_password(
            "postgres://bw@db/app?options=-c%20search_path%3Dapp&password=a+b%2B&sslmode=require",
        );
        assert_eq!(
            u,
            "postgres://bw@db/app?options=-c%20search_path%3Dapp&sslmode=require"
        );
        assert_eq!(p.as_deref(), Some("a+b+"));
        let (u, p) = split_password("postgres://bw:a+b@db/app");
        assert_eq!(u, "postgres://bw@db/app");
        assert_eq!(p.as_deref(), Some("a+b"));
        let (u, p) = split_password("postgres://bw:first@db/app?password=second");
        assert_eq!(u, "postgres://bw@db/app");
        assert_eq!(p.as_deref(), Some("second"));
        let (u, p) = split_password("postgres://bw@db/app");
        assert_eq!(u, "postgres://bw@db/app");
        assert_eq!(p, None);
    }
}
