//! Drills and restores: fetch a backup, check every part against the manifest, decrypt and
//! decompress it, restore it into a scratch target (or the real one), recompute the facts and
//! compare them with those recorded at dump time.
//!
//! A drill that could not run is a failed drill, never a skip: every error becomes a
//! [`DrillRecord`] with `passed: false` and the reason, recorded in the vault like a pass. The
//! drill runner lives with the vault (it needs the age identity), never in production.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::error::VaultError;
use crate::facts::{Facts, compare};
use crate::keys::BackupIdentity;
use crate::manifest::{Manifest, id_time, manifest_name};
use crate::scratch::{ScratchPostgres, pg_bin};
use crate::source::postgres::split_password;
use crate::store::BackupStore;

/// The result of one drill, as recorded in the vault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    /// The backup drilled.
    pub backup: String,
    /// Its source.
    pub source: String,
    /// When the drill ran (RFC 3339).
    pub at: String,
    /// Whether everything matched.
    pub passed: bool,
    /// Why it failed.
    #[serde(default)]
    pub reason: Option<String>,
    /// When the backup's snapshot was taken.
    #[serde(default)]
    pub taken_at: Option<String>,
    /// The backup's age at the drill (recovery point), in seconds.
    #[serde(default)]
    pub rpo_secs: Option<i64>,
    /// Milliseconds to fetch and check the parts.
    pub fetch_ms: u64,
    /// Milliseconds to decrypt and decompress.
    pub decrypt_ms: u64,
    /// Milliseconds to restore into the scratch target.
    pub restore_ms: u64,
    /// Milliseconds to recompute and compare the facts.
    pub verify_ms: u64,
    /// `pg_amcheck`'s verdict, where it ran.
    #[serde(default)]
    pub amcheck: Option<String>,
    /// Who ran it.
    pub actor: String,
}

/// A complete backup in the vault (its manifest is there).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupEntry {
    /// The backup's id.
    pub id: String,
    /// Its source.
    pub source: String,
    /// When it was taken: the time its id names, but never later than the store received its
    /// manifest (the id is the writer's to choose; a future-dated one must not make a stale
    /// source look fresh).
    pub taken_at: String,
    /// When the store received its manifest (the vault's receipt time; S3's last-modified).
    pub received: String,
    /// Bytes stored (parts and manifest).
    pub size: u64,
    /// Number of objects (parts and manifest).
    pub objects: usize,
    /// The manifest's retain-until.
    pub retain_until: String,
}

/// Which backups of a source to drill.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// This backup only.
    pub backup: Option<String>,
    /// Also one random older backup.
    pub random_older: bool,
    /// Who runs the drill.
    pub actor: String,
}

/// The complete backups in the vault, oldest first, of one source or all.
pub async fn list_backups(
    client: &BackupStore,
    source: Option<&str>,
) -> Result<Vec<BackupEntry>, VaultError> {
    let prefix = source.map_or_else(|| "backups/".to_owned(), crate::manifest::source_prefix);
    let objects = client.list(&prefix).await?;
    let mut groups: std::collections::BTreeMap<(String, String), Vec<crate::objects::ObjectMeta>> =
        std::collections::BTreeMap::new();
    for o in objects {
        let mut it = o.name.splitn(4, '/');
        let (Some("backups"), Some(src), Some(id), Some(_)) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        groups
            .entry((src.to_owned(), id.to_owned()))
            .or_default()
            .push(o);
    }
    let mut out: Vec<BackupEntry> = groups
        .into_iter()
        .filter_map(|((source, id), objs)| {
            let manifest = objs.iter().find(|o| o.name.ends_with("/manifest.age"))?;
            let received = manifest.received.parse::<jiff::Timestamp>().ok();
            let taken = match (id_time(&id), received) {
                (Some(t), Some(r)) => Some(t.min(r)),
                (t, r) => t.or(r),
            };
            Some(BackupEntry {
                taken_at: taken.map(|t| t.to_string()).unwrap_or_default(),
                received: manifest.received.clone(),
                retain_until: manifest.retain_until.clone(),
                size: objs.iter().map(|o| o.size).sum(),
                objects: objs.len(),
                id,
                source,
            })
        })
        .collect();
    // In the order the store received them, not the order of the writer-chosen ids: the latest
    // is the one that arrived last.
    out.sort_by(|a, b| {
        let at = |e: &BackupEntry| e.received.parse::<jiff::Timestamp>().ok();
        at(a).cmp(&at(b)).then_with(|| a.id.cmp(&b.id))
    });
    Ok(out)
}

/// Registers `source` (of `kind`) in the store, so that the vault's scheduled drills expect its
/// backups: the same bytes every time, so a repeat is a no-op. S3 targets are not drilled by a
/// vault, and their writer may only write backups: nothing is registered there.
pub async fn register_source(
    client: &BackupStore,
    source: &str,
    kind: &str,
) -> Result<(), VaultError> {
    if let BackupStore::Vault(_) = client {
        let body = serde_json::json!({ "source": source, "kind": kind }).to_string();
        let sha = crate::sha256_hex(body.as_bytes());
        match client
            .put_hashed(
                &crate::manifest::registration_name(source),
                bytes::Bytes::from(body),
                sha,
            )
            .await
        {
            // Registered before (perhaps with another kind, when a source was added again under
            // the same name): the name is what the scheduled drills look for.
            Ok(_) | Err(VaultError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The sources that have at least one complete backup.
pub async fn sources(client: &BackupStore) -> Result<Vec<String>, VaultError> {
    let mut s: Vec<String> = list_backups(client, None)
        .await?
        .into_iter()
        .map(|b| b.source)
        .collect();
    s.dedup();
    Ok(s)
}

/// Drills `source`'s latest backup (or `opts.backup`), plus one random older one when asked;
/// records each result in the vault.
pub async fn drill_source(
    client: &BackupStore,
    identity: &BackupIdentity,
    source: &str,
    opts: &DrillOptions,
) -> Result<Vec<DrillRecord>, VaultError> {
    let backups = list_backups(client, Some(source)).await?;
    let mut chosen = Vec::new();
    match &opts.backup {
        Some(id) => match backups.iter().find(|b| &b.id == id) {
            Some(b) => chosen.push(b.clone()),
            None => {
                let r = failed(
                    source,
                    id,
                    &opts.actor,
                    format!("no backup `{id}` of `{source}` in the vault"),
                );
                client.record_drill(&r).await?;
                return Ok(vec![r]);
            }
        },
        None => {
            let Some(latest) = backups.last() else {
                let r = failed(
                    source,
                    "-",
                    &opts.actor,
                    format!("no backup of `{source}` in the vault"),
                );
                client.record_drill(&r).await?;
                return Ok(vec![r]);
            };
            chosen.push(latest.clone());
            if opts.random_older && backups.len() > 1 {
                let mut r = [0u8; 4];
                if getrandom::fill(&mut r).is_ok() {
                    let i = u32::from_le_bytes(r) as usize % (backups.len() - 1);
                    if let Some(b) = backups.get(i) {
                        chosen.push(b.clone());
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    for b in chosen {
        let r = drill_one(client, identity, &b, &opts.actor).await;
        client.record_drill(&r).await?;
        out.push(r);
    }
    Ok(out)
}

/// A drill that failed (or could not run) for `reason`, with no timings.
pub fn failed(source: &str, backup: &str, actor: &str, reason: String) -> DrillRecord {
    DrillRecord::untimed(
        source,
        backup,
        crate::now().to_string(),
        false,
        Some(reason),
        actor,
    )
}

impl DrillRecord {
    /// A record with its verdict and no timings (a drill that could not run, or one known only
    /// by name).
    pub(crate) fn untimed(
        source: &str,
        backup: &str,
        at: String,
        passed: bool,
        reason: Option<String>,
        actor: &str,
    ) -> Self {
        Self {
            backup: backup.to_owned(),
            source: source.to_owned(),
            at,
            passed,
            reason,
            taken_at: None,
            rpo_secs: None,
            fetch_ms: 0,
            decrypt_ms: 0,
            restore_ms: 0,
            verify_ms: 0,
            amcheck: None,
            actor: actor.to_owned(),
        }
    }
}

/// Drills one backup; never fails: an error is a failed drill with its reason.
pub async fn drill_one(
    client: &BackupStore,
    identity: &BackupIdentity,
    backup: &BackupEntry,
    actor: &str,
) -> DrillRecord {
    let span = tracing::info_span!("drill", source = %backup.source, backup = %backup.id);
    async {
        let mut rec = failed(&backup.source, &backup.id, actor, String::new());
        rec.taken_at = Some(backup.taken_at.clone());
        if let Ok(t) = backup.taken_at.parse::<jiff::Timestamp>() {
            rec.rpo_secs = Some(crate::now().duration_since(t).as_secs());
        }
        match drill_steps(client, identity, backup, &mut rec).await {
            Ok(differences) if differences.is_empty() => {
                rec.passed = true;
                rec.reason = None;
            }
            Ok(differences) => {
                rec.reason = Some(format!(
                    "the restored data differs from the facts recorded at backup time: {}",
                    differences.join("; ")
                ));
            }
            Err(e) => rec.reason = Some(one_line(&e)),
        }
        tracing::info!(passed = rec.passed, reason = ?rec.reason, "drill done");
        rec
    }
    .instrument(span)
    .await
}

async fn drill_steps(
    client: &BackupStore,
    identity: &BackupIdentity,
    backup: &BackupEntry,
    rec: &mut DrillRecord,
) -> Result<Vec<String>, VaultError> {
    // Blocking (a crashed cluster's stop, a large dump's removal): off the drill's runtime.
    let _ = tokio::task::spawn_blocking(crate::scratch::sweep_stale).await;
    let work = tempfile::Builder::new()
        .prefix("blastwall-drill-")
        .tempdir()
        .map_err(|e| VaultError::io("create", "a temporary folder", e))?;
    let held = crate::scratch::hold(work.path())?;
    // Declared in this order, the folder is removed before its lock is let go (a sweep would
    // otherwise take a folder being removed for a crashed drill's).
    let (_held, work) = (held, work);
    let fetched = fetch(client, identity, backup, work.path(), Here::FetchAndRestore).await?;
    rec.fetch_ms = fetched.fetch_ms;
    rec.decrypt_ms = fetched.decrypt_ms;
    let m = &fetched.manifest;
    let t = Instant::now();
    let (restored, amcheck) = match m.kind.as_str() {
        "postgres" => {
            let scratch = tokio::task::spawn_blocking(ScratchPostgres::start)
                .await
                .map_err(|e| {
                    VaultError::Other(format!("the scratch cluster task failed: {e}"))
                })??;
            // The archive is untrusted (anyone with the vault's public key can write one):
            // everything that reads it (the restore, which refreshes materialized views and so
            // runs the archive's functions, the facts and amcheck, which evaluate index
            // expressions) runs as a role without superuser rights, which PostgreSQL refuses
            // `COPY … TO PROGRAM`, server files and untrusted languages.
            let admin = scratch.url("postgres");
            let extensions = archive_extensions(&fetched.artifact).await?;
            prepare_drill_database(&admin, &scratch.url("drill"), &extensions).await?;
            let url = scratch.url_as(DRILL_ROLE, "drill");
            pg_restore(&fetched.artifact, &url).await?;
            rec.restore_ms = ms(t);
            let tv = Instant::now();
            let facts = crate::source::postgres::facts_at(&url, Some(&m.facts)).await?;
            let amcheck = amcheck(&scratch, DRILL_ROLE).await;
            rec.verify_ms = ms(tv);
            let _ = tokio::task::spawn_blocking(move || drop(scratch)).await;
            (facts, Some(amcheck))
        }
        "sqlite" => {
            rec.restore_ms = ms(t);
            let tv = Instant::now();
            let facts = crate::source::sqlite::facts(&fetched.artifact).await?;
            rec.verify_ms = ms(tv);
            (facts, None)
        }
        "dir" => {
            let dest = work.path().join("restored");
            std::fs::create_dir(&dest).map_err(|e| VaultError::io("create", &dest, e))?;
            crate::source::dir::unpack(&fetched.artifact, &dest)?;
            rec.restore_ms = ms(t);
            let tv = Instant::now();
            let files = crate::facts::dir_facts(&dest)?;
            rec.verify_ms = ms(tv);
            (Facts::Files { files }, None)
        }
        other => {
            return Err(VaultError::Manifest {
                id: backup.id.clone(),
                why: format!("unknown source kind `{other}`"),
            });
        }
    };
    let mut differences = compare(&m.facts, &restored);
    if let Some(a) = &amcheck
        && a != "ok"
        && a != "not available"
    {
        differences.push(format!("pg_amcheck: {a}"));
    }
    rec.amcheck = amcheck;
    Ok(differences)
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The backup.
    pub backup: String,
    /// Its source.
    pub source: String,
    /// Its kind.
    pub kind: String,
    /// Where it went (password redacted).
    pub to: String,
    /// Differences between the recorded and the restored facts (empty: identical).
    pub differences: Vec<String>,
    /// Milliseconds in all.
    pub ms: u64,
}

/// Restores backup `id` to `to`: a PostgreSQL URL (an empty database), a new SQLite file path, or
/// a new (or empty) folder; then compares the facts.
pub async fn restore(
    client: &BackupStore,
    identity: &BackupIdentity,
    id: &str,
    to: &str,
) -> Result<RestoreReport, VaultError> {
    let span = tracing::info_span!("restore", backup = %id);
    async {
        let t = Instant::now();
        let backup = list_backups(client, None)
            .await?
            .into_iter()
            .find(|b| b.id == id)
            .ok_or_else(|| VaultError::BackupNotFound(id.to_owned()))?;
        let target_err = |why: String| VaultError::Target {
            target: blastwall_core::config::redact_url(to),
            why,
        };
        let _ = tokio::task::spawn_blocking(crate::scratch::sweep_stale).await;
        let work = tempfile::Builder::new()
            .prefix("blastwall-drill-restore-")
            .tempdir()
            .map_err(|e| VaultError::io("create", "a temporary folder", e))?;
        let held = crate::scratch::hold(work.path())?;
        let (_held, work) = (held, work);
        // The operator's target is the operator's to size: only the fetch is checked here.
        let fetched = fetch(client, identity, &backup, work.path(), Here::Fetch).await?;
        let m = &fetched.manifest;
        let restored = match m.kind.as_str() {
            "postgres" => {
                if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
                    return Err(target_err(
                        "a PostgreSQL backup restores to a `postgres://` URL".into(),
                    ));
                }
                pg_restore(&fetched.artifact, to).await?;
                crate::source::postgres::facts_at(to, Some(&m.facts)).await?
            }
            "sqlite" => {
                let dest = Path::new(to);
                if dest.exists() {
                    return Err(target_err("the file exists".into()));
                }
                std::fs::copy(&fetched.artifact, dest)
                    .map_err(|e| VaultError::io("write", dest, e))?;
                crate::source::sqlite::facts(dest).await?
            }
            "dir" => {
                let dest = Path::new(to);
                if dest.exists()
                    && std::fs::read_dir(dest)
                        .map_err(|e| VaultError::io("list", dest, e))?
                        .next()
                        .is_some()
                {
                    return Err(target_err("the folder is not empty".into()));
                }
                std::fs::create_dir_all(dest).map_err(|e| VaultError::io("create", dest, e))?;
                crate::source::dir::unpack(&fetched.artifact, dest)?;
                Facts::Files {
                    files: crate::facts::dir_facts(dest)?,
                }
            }
            other => {
                return Err(VaultError::Manifest {
                    id: id.to_owned(),
                    why: format!("unknown source kind `{other}`"),
                });
            }
        };
        Ok(RestoreReport {
            backup: id.to_owned(),
            source: m.source.clone(),
            kind: m.kind.clone(),
            to: blastwall_core::config::redact_url(to),
            differences: compare(&m.facts, &restored),
            ms: ms(t),
        })
    }
    .instrument(span)
    .await
}

struct Fetched {
    manifest: Manifest,
    artifact: PathBuf,
    fetch_ms: u64,
    decrypt_ms: u64,
}

/// The largest manifest a drill reads (it is held in memory, decrypted and parsed): a
/// manifest lists every file of a folder backup, about 150 bytes each, so this is room for over
/// a million files; a writer's manifest of the vault's largest object size would make each
/// drill hold gigabytes.
const MAX_MANIFEST: u64 = 256 << 20;

/// Hashes what it writes.
struct HashingWriter<'a, W: std::io::Write> {
    inner: &'a mut W,
    hasher: Sha256,
}

impl<W: std::io::Write> std::io::Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What a drill host must have room for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Here {
    /// The sealed parts and the plain artifact.
    Fetch,
    /// Those, and the restore into a scratch target (a drill).
    FetchAndRestore,
}

/// Fetches the manifest and every part (checking each against the manifest), then decrypts and
/// decompresses into `work/artifact`, checking the plain artifact's size and BLAKE3.
async fn fetch(
    client: &BackupStore,
    identity: &BackupIdentity,
    backup: &BackupEntry,
    work: &Path,
    here: Here,
) -> Result<Fetched, VaultError> {
    let t = Instant::now();
    let mut sealed = Vec::new();
    client
        .get_into(
            &manifest_name(&backup.source, &backup.id),
            &mut sealed,
            MAX_MANIFEST,
        )
        .await
        .map_err(|e| match e {
            e @ VaultError::TooLarge { .. } => e,
            e => missing(e, format!("the manifest of `{}`", backup.id)),
        })?;
    let manifest = Manifest::decrypt(&sealed, identity, &backup.id)?;
    drop(sealed);
    if manifest.id != backup.id || manifest.source != backup.source {
        return Err(VaultError::Manifest {
            id: backup.id.clone(),
            why: format!(
                "it describes `{}/{}`, not this backup (was it moved?)",
                manifest.source, manifest.id
            ),
        });
    }
    // The manifest is the writer's word: a backup that says it restores to a petabyte (or a
    // stream that decompresses without end) must not fill the drill host's disk, which may be
    // the vault's own. The sealed parts and the plain artifact must fit in what is free, less
    // a reserve, before a byte is fetched (decompression already stops at the plain size).
    let sealed_bytes = manifest
        .parts
        .iter()
        .fold(0u64, |n, p| n.saturating_add(p.size));
    let kind = match here {
        Here::Fetch => None,
        Here::FetchAndRestore => Some(manifest.kind.as_str()),
    };
    check_room(work, kind, &backup.id, sealed_bytes, manifest.plain_bytes)?;
    let sealed_path = work.join("artifact.age");
    let mut out = std::fs::File::create(&sealed_path)
        .map_err(|e| VaultError::io("create", &sealed_path, e))?;
    let n = manifest.parts.len();
    for (i, part) in manifest.parts.iter().enumerate() {
        let damaged = |actual: &str| {
            VaultError::Other(format!(
                "part {} of {n} (`{}`) is damaged: its SHA-256 is {actual}, the manifest records {}",
                i + 1,
                part.name,
                part.sha256
            ))
        };
        // Streamed to the file as it arrives, hashed on the way: a part (up to the vault's
        // largest object) is never held in memory whole.
        let mut sink = HashingWriter {
            inner: &mut out,
            hasher: Sha256::new(),
        };
        let got = match client.get_into(&part.name, &mut sink, part.size).await {
            Ok(got) => got,
            Err(VaultError::TooLarge { .. }) => {
                return Err(damaged(&format!("that of more than {} bytes", part.size)));
            }
            Err(e) => {
                return Err(missing(
                    e,
                    format!("part {} of {n} (`{}`)", i + 1, part.name),
                ));
            }
        };
        let actual = hex::encode(sink.hasher.finalize());
        if actual != part.sha256 || got != part.size {
            return Err(damaged(&actual));
        }
    }
    out.sync_all()
        .map_err(|e| VaultError::io("sync", &sealed_path, e))?;
    drop(out);
    let fetch_ms = ms(t);
    let t = Instant::now();
    let artifact = work.join("artifact");
    let (id, from, to, ident) = (
        backup.id.clone(),
        sealed_path.clone(),
        artifact.clone(),
        identity.clone(),
    );
    let limit = manifest.plain_bytes;
    let (bytes, hash) =
        tokio::task::spawn_blocking(move || decrypt_file(&from, &to, &ident, &id, limit))
            .await
            .map_err(|e| VaultError::Other(format!("the decrypt task failed: {e}")))??;
    let _ = std::fs::remove_file(&sealed_path);
    if bytes != manifest.plain_bytes || hash != manifest.plain_blake3 {
        return Err(VaultError::Other(format!(
            "the decrypted artifact of `{}` is not the one recorded ({bytes} bytes, BLAKE3 {hash}; the manifest records {} bytes, {})",
            backup.id, manifest.plain_bytes, manifest.plain_blake3
        )));
    }
    Ok(Fetched {
        manifest,
        artifact,
        fetch_ms,
        decrypt_ms: ms(t),
    })
}

/// How many bytes a PostgreSQL restore may take per byte of its (compressed) dump: the data
/// uncompressed, and its indexes built again.
const PG_RESTORE_FACTOR: u64 = 4;

/// What an empty scratch cluster takes (`initdb`'s files and the first WAL segments).
const PG_CLUSTER_BYTES: u64 = 128 << 20;

/// Refuses a drill whose backup would not fit on the drill host, before a byte is fetched: the
/// sealed parts and the plain artifact, then (with the `kind` of a scratch restore) the artifact
/// and what the restore writes (a folder's files as many bytes again; a PostgreSQL cluster up to
/// [`PG_RESTORE_FACTOR`] times the dump, in the scratch cluster's folder, which may be on
/// another filesystem).
fn check_room(
    work: &Path,
    kind: Option<&str>,
    id: &str,
    sealed: u64,
    plain: u64,
) -> Result<(), VaultError> {
    let refuse = |needed: u64, room: u64, place: &Path, what: String| {
        Err(VaultError::Other(format!(
            "backup `{id}` needs {needed} bytes to restore ({what}) and the drill host has {room} to spare in `{}`; free space there or drill on a larger host",
            place.display()
        )))
    };
    let fetching = sealed.saturating_add(plain);
    let pg = (kind == Some("postgres")).then(|| {
        (
            crate::scratch::next_base_dir(),
            plain
                .saturating_mul(PG_RESTORE_FACTOR)
                .saturating_add(PG_CLUSTER_BYTES),
        )
    });
    let restoring = plain.saturating_add(match kind {
        Some("dir") => plain,
        _ => 0,
    });
    let room = room_for_restore(work)?;
    let mut needed = fetching.max(restoring);
    if let Some((base, cluster)) = &pg {
        if same_filesystem(work, base) {
            needed = needed.max(plain.saturating_add(*cluster));
        } else {
            let room = room_for_restore(base)?;
            if *cluster > room {
                return refuse(
                    *cluster,
                    room,
                    base,
                    format!("a scratch cluster for a dump of {plain}"),
                );
            }
        }
    }
    if needed > room {
        return refuse(
            needed,
            room,
            work,
            match kind {
                None => format!("{sealed} sealed, {plain} plain"),
                Some(k) => format!("{sealed} sealed, {plain} plain, then the {k} restore"),
            },
        );
    }
    Ok(())
}

/// Whether `a` and `b` are on one filesystem (unknown: assumed so, which adds their needs).
fn same_filesystem(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev(),
        _ => true,
    }
}

/// Bytes a drill may write under `work`: what is free there for unprivileged users, less a
/// reserve of a tenth of the filesystem, at most 1 GiB, kept for everything else on the host.
fn room_for_restore(work: &Path) -> Result<u64, VaultError> {
    let st = rustix::fs::statvfs(work)
        .map_err(|e| VaultError::io("read free space of", work, std::io::Error::from(e)))?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let total = st.f_blocks.saturating_mul(st.f_frsize);
    let reserve = (total / 10).min(1 << 30);
    Ok(free.saturating_sub(reserve))
}

/// Decrypts and decompresses `from` into `to`: its size and BLAKE3. Stops as soon as the output
/// passes `limit` (the size the manifest records), so a stream that decompresses to far more
/// (a zstd bomb) cannot fill the drill host's disk.
fn decrypt_file(
    from: &Path,
    to: &Path,
    identity: &BackupIdentity,
    id: &str,
    limit: u64,
) -> Result<(u64, String), VaultError> {
    let what = || format!("backup `{id}`");
    let f = std::fs::File::open(from).map_err(|e| VaultError::io("open", from, e))?;
    let dec = age::Decryptor::new_buffered(std::io::BufReader::new(f)).map_err(|e| {
        VaultError::Decrypt {
            what: what(),
            why: e.to_string(),
        }
    })?;
    let reader = dec
        .decrypt(std::iter::once(identity.as_identity()))
        .map_err(|e| VaultError::Decrypt {
            what: what(),
            why: e.to_string(),
        })?;
    let mut z = zstd::stream::read::Decoder::new(reader).map_err(|e| VaultError::Decrypt {
        what: what(),
        why: e.to_string(),
    })?;
    let mut out = std::fs::File::create(to).map_err(|e| VaultError::io("create", to, e))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = std::io::Read::read(&mut z, &mut buf).map_err(|e| VaultError::Decrypt {
            what: what(),
            why: format!("the stream is damaged: {e}"),
        })?;
        if k == 0 {
            break;
        }
        let chunk = buf.get(..k).unwrap_or_default();
        hasher.update(chunk);
        out.write_all(chunk)
            .map_err(|e| VaultError::io("write", to, e))?;
        n += k as u64;
        if n > limit {
            drop(out);
            let _ = std::fs::remove_file(to);
            return Err(VaultError::Other(format!(
                "the decrypted artifact of `{id}` is larger than the {limit} bytes its manifest records; stopped there"
            )));
        }
    }
    out.sync_all().map_err(|e| VaultError::io("sync", to, e))?;
    Ok((n, hasher.finalize().to_hex().to_string()))
}

fn missing(e: VaultError, what: String) -> VaultError {
    match e {
        VaultError::Remote { status: 404, .. }
        | VaultError::S3 {
            status: Some(404), ..
        } => VaultError::Other(format!("{what} is missing from the vault")),
        other => other,
    }
}

/// The role a drill restores and verifies as: it owns the scratch database and nothing else.
const DRILL_ROLE: &str = "blastwall_drill";

/// The schema amcheck is installed in, owned by the superuser, before the archive is restored.
const AMCHECK_SCHEMA: &str = "blastwall_amcheck";

/// Creates the drill role and the `drill` database it owns; as the superuser, installs the
/// extensions the archive names (so that restoring it needs no superuser rights; their scripts
/// come from the server, not the archive) and amcheck in a schema of its own, with the right
/// to run its checks granted to the role.
async fn prepare_drill_database(
    admin_url: &str,
    drill_admin_url: &str,
    extensions: &[String],
) -> Result<(), VaultError> {
    use sqlx::Connection;
    let role = crate::source::quote_ident(DRILL_ROLE);
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .map_err(VaultError::db("connecting to the scratch cluster"))?;
    sqlx::raw_sql(&format!(
        "CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
    ))
    .execute(&mut conn)
    .await
    .map_err(VaultError::db("creating the drill role"))?;
    sqlx::raw_sql(&format!("CREATE DATABASE drill OWNER {role}"))
        .execute(&mut conn)
        .await
        .map_err(VaultError::db("creating the scratch database"))?;
    let _ = conn.close().await;
    let mut conn = sqlx::PgConnection::connect(drill_admin_url)
        .await
        .map_err(VaultError::db("connecting to the scratch database"))?;
    for name in extensions {
        // Best effort: one this server lacks makes the restore fail with the reason.
        let _ = sqlx::raw_sql(&format!(
            "CREATE EXTENSION IF NOT EXISTS {}",
            crate::source::quote_ident(name)
        ))
        .execute(&mut conn)
        .await;
    }
    let schema = crate::source::quote_ident(AMCHECK_SCHEMA);
    let amcheck = sqlx::raw_sql(&format!(
        "CREATE SCHEMA {schema};
         CREATE EXTENSION IF NOT EXISTS amcheck SCHEMA {schema};
         GRANT USAGE ON SCHEMA {schema} TO {role};
         GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {schema} TO {role};"
    ))
    .execute(&mut conn)
    .await;
    if let Err(e) = amcheck {
        tracing::debug!(error = %e, "amcheck not installed in the scratch database");
    }
    let _ = conn.close().await;
    Ok(())
}

/// The extensions an archive creates (`pg_restore --list`), to be installed by the superuser
/// before an unprivileged restore.
async fn archive_extensions(file: &Path) -> Result<Vec<String>, VaultError> {
    let mut cmd = tokio::process::Command::new(pg_bin("pg_restore"));
    cmd.arg("--list").arg(file);
    let out = run_pg_tool(
        cmd,
        "pg_restore --list",
        "the backup is not a PostgreSQL custom-format archive",
    )
    .await?;
    Ok(extension_names(&String::from_utf8_lossy(&out)))
}

/// Runs a PostgreSQL client tool (stdin closed): its stdout, or an error naming `tool` with the
/// last lines of its stderr and `hint`.
async fn run_pg_tool(
    mut cmd: tokio::process::Command,
    tool: &str,
    hint: &str,
) -> Result<Vec<u8>, VaultError> {
    // Killed if the drill is dropped (the vault stops mid-drill): its scratch cluster and the
    // decrypted dump are then removed, and nothing must still be writing to them.
    let out = cmd
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| VaultError::Tool {
            tool: tool.into(),
            detail: e.to_string(),
            hint: "install the PostgreSQL client tools".into(),
        })?;
    if !out.status.success() {
        return Err(VaultError::Tool {
            tool: tool.into(),
            detail: crate::source::last_lines(&String::from_utf8_lossy(&out.stderr), 3),
            hint: hint.into(),
        });
    }
    Ok(out.stdout)
}

/// The names of the `EXTENSION` entries of a `pg_restore --list` table of contents
/// (`12; 3079 16384 EXTENSION - pgcrypto -`), plain identifiers only.
fn extension_names(toc: &str) -> Vec<String> {
    let mut names: Vec<String> = toc
        .lines()
        .filter(|l| !l.trim_start().starts_with(';'))
        .filter_map(|l| {
            let mut words = l.split_whitespace().skip_while(|w| *w != "EXTENSION");
            words.next()?;
            let _schema = words.next()?;
            let name = words.next()?;
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                .then(|| name.to_owned())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `pg_restore --no-owner --no-privileges -d URL FILE` (password in `PGPASSWORD`).
async fn pg_restore(file: &Path, url: &str) -> Result<(), VaultError> {
    let (url_np, password) = split_password(url);
    let mut cmd = tokio::process::Command::new(pg_bin("pg_restore"));
    cmd.args([
        "--no-owner",
        "--no-privileges",
        "--no-comments",
        "--exit-on-error",
    ])
    .arg(format!("--dbname={url_np}"))
    .arg(file);
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    run_pg_tool(cmd, "pg_restore", "restore into an empty database")
        .await
        .map(|_| ())
}

/// Runs `pg_amcheck` on the scratch database as `role` (amcheck was installed for it before the
/// restore): `ok`, `not available`, or what it reported.
async fn amcheck(scratch: &ScratchPostgres, role: &str) -> String {
    let bin = pg_bin("pg_amcheck");
    if !bin.is_file() {
        return "not available".into();
    }
    let out = tokio::process::Command::new(bin)
        .kill_on_drop(true)
        .arg("-h")
        .arg(scratch.socket_dir())
        .args(["-U", role])
        .arg(format!("--port={}", scratch.port()))
        .arg("drill")
        .stdin(std::process::Stdio::null())
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => "ok".into(),
        Ok(o) => crate::source::last_lines(
            &format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            3,
        ),
        Err(_) => "not available".into(),
    }
}

fn ms(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// An error as one line (`hint:` lines dropped).
pub fn one_line(e: &VaultError) -> String {
    e.to_string()
        .lines()
        .filter(|l| !l.starts_with("hint: "))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that decompresses to more than its manifest records is cut off there, and what
    /// was written of it is removed.
    #[test]
    fn decompression_stops_at_the_recorded_size() {
        let identity = BackupIdentity::generate();
        let recipient = identity.recipient();
        let dir = tempfile::tempdir().unwrap();
        let sealed = dir.path().join("sealed");
        let plain = vec![0u8; 4 * 1024 * 1024];
        let compressed = zstd::encode_all(plain.as_slice(), 19).unwrap();
        assert!(compressed.len() < 10_000);
        let enc =
            age::Encryptor::with_recipients(std::iter::once(recipient.as_recipient())).unwrap();
        let mut out = Vec::new();
        let mut w = enc.wrap_output(&mut out).unwrap();
        w.write_all(&compressed).unwrap();
        w.finish().unwrap();
        std::fs::write(&sealed, &out).unwrap();
        let to = dir.path().join("artifact");
        let err = decrypt_file(&sealed, &to, &identity, "b1", 1024 * 1024).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
        assert!(!to.exists());
        let (n, _) = decrypt_file(&sealed, &to, &identity, "b1", plain.len() as u64).unwrap();
        assert_eq!(n, plain.len() as u64);
    }

    #[test]
    fn extensions_are_read_from_the_table_of_contents() {
        let toc = ";\n; Archive created at 2026-11-27\n;     dbname: appdb\n2; 3079 16385 EXTENSION - pgcrypto \n3; 0 0 COMMENT - EXTENSION pgcrypto \n4; 3079 16400 EXTENSION - uuid-ossp \n5; 3079 16401 EXTENSION - bad;name \n215; 1259 16386 TABLE public t app\n";
        assert_eq!(extension_names(toc), ["pgcrypto", "uuid-ossp"]);
    }
}
