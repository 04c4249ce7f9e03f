//! The vault server (axum; HTTPS through rustls when given a certificate): create-only uploads,
//! time-locked retention, roles, audit, metrics, and scheduled drills, where a drill that could
//! not run is recorded as a failure.
//!
//! Routes (all but `/healthz` and `/metrics` need `Authorization: Bearer <vault credential>`):
//!
//! | route                          | roles          | what                                         |
//! |--------------------------------|----------------|----------------------------------------------|
//! | `PUT /v1/objects/{name}`       | writer         | create (body checked against `x-blastwall-sha256`) |
//! | `GET /v1/objects/{name}`       | reader, admin  | read                                         |
//! | `DELETE /v1/objects/{name}`    | admin          | delete, only once retain-until has passed    |
//! | `GET /v1/list?prefix=`         | any            | list objects (names, sizes, retention)       |
//! | `PUT /v1/retention/{name}`     | admin          | lengthen one object's retention              |
//! | `PUT /v1/policy`               | admin          | lengthen the minimum retention               |
//! | `POST /v1/drills`              | reader, admin  | record a drill result                        |
//! | `GET /v1/drills`               | any            | drill results                                |
//! | `GET /v1/info`                 | any            | machine id, device, policy, recipient        |
//!
//! Every create, refusal, drill and expiry is appended to the vault's audit log.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use blastwall_core::audit::throttle::Throttle;
use futures_util::StreamExt;
use jiff::Timestamp;
use secrecy::SecretString;
use serde::Deserialize;
use sha2::Digest;
use tokio::io::AsyncWriteExt;
use tracing::Instrument;

use crate::client::{SHA256_HEADER, VaultClient, VaultInfo};
use crate::clock::TrustedClock;
use crate::creds::{CredentialEntry, Credentials, Role};
use crate::data::VaultData;
use crate::drill::DrillRecord;
use crate::error::VaultError;
use crate::log::VaultLog;
use crate::objects::{Created, ObjectMeta, ObjectStore};

/// Largest single object accepted (a part, or a manifest).
pub const MAX_OBJECT: u64 = 1 << 30;

/// The window of the refusal budget ([`Throttle`]).
const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// How many refusals per actor per window get an audit entry each.
const REFUSALS_PER_WINDOW: u32 = 60;

/// Most sources one vault accepts registrations for (see `put_object`).
pub const MAX_SOURCES: usize = 1000;

/// A vault ready to serve.
#[derive(Debug)]
pub struct Vault {
    state: Arc<AppState>,
}

#[derive(Debug)]
struct AppState {
    data: RwLock<VaultData>,
    store: ObjectStore,
    clock: TrustedClock,
    log: VaultLog,
    usage: Mutex<HashMap<String, u64>>,
    /// Uploads in flight, by writer.
    uploading: Mutex<HashMap<String, usize>>,
    internal: CredentialEntry,
    internal_secret: SecretString,
    metrics: Metrics,
    limits: blastwall_serve::Limits,
    /// Refusals written one by one per actor per minute; the rest are counted.
    refusals: Throttle,
    /// Entries of changes already made (an object stored, a retention lengthened) whose append
    /// failed: written first at the next append or the minute's tick, and while any wait, the
    /// vault makes no further change (a change it cannot record is not made).
    unaudited: Mutex<Vec<Unaudited>>,
    /// An exclusive lock on the folder's `serve.lock`, held while this vault is open.
    _serving: std::fs::File,
}

/// An audit entry waiting to be written.
#[derive(Debug)]
struct Unaudited {
    actor: String,
    action: String,
    target: Option<String>,
    detail: serde_json::Value,
    /// When the change was made.
    at: String,
}

#[derive(Debug, Default)]
struct Metrics {
    created: AtomicU64,
    bytes: AtomicU64,
    refused: AtomicU64,
    connections_refused: AtomicU64,
    /// Objects stored, and their bytes: kept as they change, so `/metrics` (which anyone may
    /// read) never lists the store.
    stored_objects: AtomicU64,
    stored_bytes: AtomicU64,
    drills_passed: AtomicU64,
    drills_failed: AtomicU64,
}

impl Vault {
    /// Opens the vault folder: settings, store (dropping cut-short uploads), clock and audit log.
    /// `limits` bound what clients may hold: connections, and the time they may take to send a
    /// request head or the next bytes of an upload.
    pub fn open(data: VaultData, limits: blastwall_serve::Limits) -> Result<Self, VaultError> {
        // One process serves a folder: two would each count quotas, keep the trusted clock and
        // extend the audit chain on their own, forking it.
        let lock_path = data.root().join("serve.lock");
        let serving = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| VaultError::io("open", &lock_path, e))?;
        match serving.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(VaultError::InUse(data.root().to_path_buf()));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(VaultError::io("lock", &lock_path, e));
            }
        }
        let store = ObjectStore::open(data.root())?;
        let clock = TrustedClock::open(&data.clock_path())?;
        let log = VaultLog::open(&data.audit_path())?;
        let mut usage = HashMap::new();
        let metrics = Metrics::default();
        for m in store.list("")? {
            *usage.entry(m.writer.clone()).or_insert(0) += charge(m.size);
            metrics.stored_objects.fetch_add(1, Ordering::Relaxed);
            metrics.stored_bytes.fetch_add(m.size, Ordering::Relaxed);
        }
        // The scheduled drills read through the same API as everyone, with a reader credential
        // that lives only in this process's memory.
        let internal_cred = crate::creds::generate(Role::Reader)?;
        let internal = CredentialEntry {
            name: "vault-scheduler".into(),
            role: Role::Reader,
            digest: internal_cred.digest().to_hex(),
            created: crate::now().to_string(),
            quota_bytes: None,
        };
        let internal_secret = SecretString::from(internal_cred.expose().to_owned());
        Ok(Self {
            state: Arc::new(AppState {
                data: RwLock::new(data),
                store,
                clock,
                log,
                usage: Mutex::new(usage),
                uploading: Mutex::new(HashMap::new()),
                internal,
                internal_secret,
                metrics,
                limits,
                refusals: Throttle::new(REFUSAL_WINDOW, REFUSALS_PER_WINDOW),
                unaudited: Mutex::new(Vec::new()),
                _serving: serving,
            }),
        })
    }

    /// The router.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .route("/v1/info", get(info))
            .route(
                "/v1/objects/{*name}",
                put(put_object).get(get_object).delete(delete_object),
            )
            .route("/v1/list", get(list))
            // JSON bodies are read before the handler checks the credential: bounded, so an
            // anonymous client cannot make the vault hold gigabytes.
            .route(
                "/v1/retention/{*name}",
                put(set_retention).layer(DefaultBodyLimit::max(JSON_BODY_LIMIT)),
            )
            .route(
                "/v1/policy",
                put(set_policy).layer(DefaultBodyLimit::max(JSON_BODY_LIMIT)),
            )
            .route(
                "/v1/drills",
                get(drills)
                    .post(record_drill)
                    .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT)),
            )
            // Objects stream to disk after the credential is checked; their size is the quota's.
            .layer(DefaultBodyLimit::disable())
            .with_state(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` resolves, over HTTPS when `tls` is given; runs
    /// scheduled drills when configured.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        tls: Option<crate::tls::ServerTls>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), VaultError> {
        let addr = listener
            .local_addr()
            .map_err(|e| VaultError::Other(format!("no local address: {e}")))?;
        let every = self.read_data().settings.drill_every_secs;
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let mut drills = None;
        if let Some(secs) = every.filter(|s| *s > 0) {
            let state = self.state.clone();
            let (base, leaf) = match &tls {
                Some(t) => (format!("https://{addr}"), Some(t.leaf.clone())),
                None => (format!("http://{addr}"), None),
            };
            // Drills run on a thread of their own with its own runtime: a long restore never
            // takes a worker from the server. A stop interrupts a round (its scratch cluster is
            // stopped and its decrypted files removed) and waits for that.
            drills = Some(
                std::thread::Builder::new()
                    .name("vault-drills".into())
                    .spawn(move || {
                        scheduled_drills(&state, &base, leaf, Duration::from_secs(secs), stopping);
                    })
                    .map_err(|e| {
                        VaultError::Other(format!("cannot start the drill scheduler: {e}"))
                    })?,
            );
        }
        // The trusted clock's mark is persisted every minute, so a restart loses at most a
        // minute of it (before, it moved on disk only when an admin deleted something, and each
        // restart rolled expiry back to then).
        let ticker = {
            let state = self.state.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(60));
                loop {
                    every.tick().await;
                    if let Err(e) = state.clock.persist() {
                        tracing::warn!(error = %e, "could not persist the trusted clock");
                    }
                    if let Err(e) = state.flush_unaudited() {
                        tracing::error!(error = %e, "the vault audit log still takes no appends");
                    }
                    state.log_suppressed();
                }
            })
        };
        let limits = self.state.limits;
        let state = self.state.clone();
        let on_full = move || {
            state
                .metrics
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
        };
        let app = self.router();
        match tls {
            None => {
                blastwall_serve::serve(
                    listener,
                    blastwall_serve::Plain,
                    app,
                    limits,
                    // Handlers write and fsync files: on the work-stealing runtime, one that
                    // blocks does not stall the connections queued behind it.
                    blastwall_serve::Threads::Caller,
                    on_full,
                    shutdown,
                )
                .await
            }
            Some(t) => {
                let handshake = TlsHandshake(tokio_rustls::TlsAcceptor::from(t.config));
                blastwall_serve::serve(
                    listener,
                    handshake,
                    app,
                    limits,
                    blastwall_serve::Threads::Caller,
                    on_full,
                    shutdown,
                )
                .await
            }
        };
        let _ = stop.send(true);
        ticker.abort();
        if let Some(drills) = drills {
            let joined = tokio::time::timeout(
                DRILL_STOP_WAIT,
                tokio::task::spawn_blocking(move || drills.join()),
            )
            .await;
            if !matches!(joined, Ok(Ok(Ok(())))) {
                tracing::error!(
                    "the drill scheduler did not stop cleanly: a scratch cluster or decrypted files may be left in the temporary folder"
                );
            }
        }
        if let Err(e) = self.state.flush_unaudited() {
            let n = self
                .state
                .unaudited
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .len();
            tracing::error!(error = %e, entries = n, "audit entries of changes made could not be written before the stop");
        }
        self.state.log_suppressed();
        Ok(())
    }

    fn read_data(&self) -> VaultData {
        self.state.read_data()
    }
}

impl AppState {
    fn read_data(&self) -> VaultData {
        self.data
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The credential presented, if it has one of `roles`; a refusal is audited.
    fn auth(
        &self,
        headers: &HeaderMap,
        roles: &[Role],
        action: &str,
        target: Option<&str>,
    ) -> Result<CredentialEntry, ApiError> {
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let data = self.read_data();
        let entry = match presented {
            None => None,
            Some(p) => {
                let internal = internal_match(&self.internal, p);
                match internal {
                    Some(e) => Some(e),
                    None => Credentials::open(&data.credentials_path())
                        .map_err(ApiError::from)?
                        .authenticate(p)
                        .cloned(),
                }
            }
        };
        let Some(entry) = entry else {
            self.refuse("anonymous", action, target, "unknown credential");
            return Err(VaultError::Unauthorized.into());
        };
        if !roles.contains(&entry.role) {
            self.refuse(&entry.name, action, target, &format!("role {}", entry.role));
            return Err(VaultError::Forbidden {
                role: entry.role.to_string(),
                action: action.to_owned(),
            }
            .into());
        }
        Ok(entry)
    }

    /// Counts a refusal, and appends it to the audit log unless its actor is past the minute's
    /// budget (anyone can send refused requests, at the vault's full rate: one fsynced entry
    /// each would fill the disk the backups need). What is past the budget is appended as one
    /// count a minute by [`AppState::log_suppressed`].
    fn refuse(&self, actor: &str, action: &str, target: Option<&str>, why: &str) {
        self.metrics.refused.fetch_add(1, Ordering::Relaxed);
        if !self.refusals.admit(actor, std::time::Instant::now()) {
            return;
        }
        tracing::warn!(actor, action, target, why, "refused");
        // Kept entries of changes go first; a refusal that cannot be written is counted again
        // with the suppressed ones, not lost.
        let written = self.flush_unaudited().and_then(|()| {
            self.log.append(
                &format!("vault:{actor}"),
                &format!("{action}.refused"),
                target,
                serde_json::json!({ "why": why }),
            )
        });
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot append to the vault audit log");
            self.refusals.give_back(
                blastwall_core::audit::throttle::Suppressed {
                    actor: actor.to_owned(),
                    count: 1,
                },
                std::time::Instant::now(),
            );
        }
    }

    /// Appends one entry per actor whose refusals were counted rather than written.
    fn log_suppressed(&self) {
        let now = std::time::Instant::now();
        if let Err(e) = self.flush_unaudited() {
            tracing::error!(error = %e, "the vault audit log still takes no appends");
        }
        for sup in self.refusals.take_suppressed(now) {
            let detail = serde_json::json!({
                "count": sup.count,
                "window_secs": REFUSAL_WINDOW.as_secs(),
                "note": "refusals past the per-minute budget, counted instead of written one by one",
            });
            if let Err(e) = self.log.append(
                &format!("vault:{}", sup.actor),
                "refusals.suppressed",
                None,
                detail,
            ) {
                // Counted again, for the next minute's entry (or the stop's).
                tracing::error!(error = %e, "cannot append to the vault audit log");
                self.refusals.give_back(sup, now);
            }
        }
    }

    /// Appends the entry of a change just made. When it cannot be written, it is kept and
    /// written before anything else once the log takes appends again (see
    /// [`AppState::unaudited`]).
    fn audit(
        &self,
        actor: &str,
        action: &str,
        target: Option<&str>,
        detail: serde_json::Value,
    ) -> Result<(), ApiError> {
        self.keep_or_append(actor, action, target, detail)
            .map_err(ApiError::from)
    }

    /// [`AppState::audit`]'s work, with the vault's own error.
    fn keep_or_append(
        &self,
        actor: &str,
        action: &str,
        target: Option<&str>,
        detail: serde_json::Value,
    ) -> Result<(), VaultError> {
        let actor = format!("vault:{actor}");
        let written = self
            .flush_unaudited()
            .and_then(|()| self.log.append(&actor, action, target, detail.clone()));
        if let Err(e) = written {
            tracing::error!(error = %e, action, "cannot append to the vault audit log; the entry is kept and the vault makes no change until it is written");
            self.unaudited
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(Unaudited {
                    actor,
                    action: action.to_owned(),
                    target: target.map(str::to_owned),
                    detail,
                    at: crate::now().to_string(),
                });
            return Err(e);
        }
        Ok(())
    }

    /// Writes the entries kept by [`AppState::audit`], oldest first (each says when its change
    /// was made).
    fn flush_unaudited(&self) -> Result<(), VaultError> {
        let mut pending = self
            .unaudited
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(first) = pending.first() {
            let mut detail = first.detail.clone();
            if let Some(o) = detail.as_object_mut() {
                o.insert("made_at".into(), first.at.clone().into());
            }
            self.log
                .append(&first.actor, &first.action, first.target.as_deref(), detail)?;
            pending.remove(0);
        }
        Ok(())
    }

    /// Refuses a change while an earlier one's entry is not written and cannot be now.
    fn require_audit(&self) -> Result<(), ApiError> {
        self.flush_unaudited().map_err(|e| {
            tracing::error!(error = %e, "the vault audit log takes no appends");
            ApiError::from(VaultError::AuditUnavailable)
        })
    }
}

impl AppState {
    /// Records a drill in `drills.jsonl` and the audit log, and counts it.
    fn store_drill(&self, actor: &str, drill: &DrillRecord) -> Result<(), VaultError> {
        let path = self.read_data().drills_path();
        append_line(&path, drill)?;
        if drill.passed {
            self.metrics.drills_passed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.metrics.drills_failed.fetch_add(1, Ordering::Relaxed);
        }
        // Recorded in `drills.jsonl` already: its entry is kept if the log takes none now.
        self.keep_or_append(
            actor,
            "drill",
            Some(&drill.backup),
            serde_json::json!({"source": drill.source, "passed": drill.passed, "reason": drill.reason, "rpo_secs": drill.rpo_secs}),
        )
    }

    /// Records a scheduled drill that could not run, straight into this vault (not over HTTP,
    /// which may be what failed).
    fn drill_could_not_run(&self, source: &str, backup: &str, reason: String) {
        let rec = crate::drill::failed(source, backup, SCHEDULER_ACTOR, reason);
        tracing::error!(source, backup, reason = ?rec.reason, "scheduled drill could not run");
        if let Err(e) = self.store_drill(&self.internal.name, &rec) {
            tracing::error!(error = %e, "cannot record a failed drill");
        }
    }

    /// What the vault holds, read from its own store: each source's latest complete backup (if
    /// any), and when each registered source was registered.
    fn expected_sources(&self) -> Result<ExpectedSources, VaultError> {
        let mut out = ExpectedSources::default();
        // The latest is the backup whose manifest the vault received last (ids are the writer's
        // to choose: the largest would let a planted `9999…` id take the failures of the real
        // latest), as `list_backups` orders them.
        let mut received: std::collections::BTreeMap<String, (Option<Timestamp>, String)> =
            std::collections::BTreeMap::new();
        for m in self.store.list("backups/")? {
            let mut it = m.name.splitn(4, '/');
            if let (Some(_), Some(src), Some(id), Some("manifest.age")) =
                (it.next(), it.next(), it.next(), it.next())
            {
                let candidate = (m.received.parse::<Timestamp>().ok(), id.to_owned());
                match received.get_mut(src) {
                    Some(best) if *best >= candidate => {}
                    Some(best) => *best = candidate,
                    None => {
                        received.insert(src.to_owned(), candidate);
                    }
                }
            }
        }
        out.latest = received
            .into_iter()
            .map(|(src, (_, id))| (src, id))
            .collect();
        for m in self.store.list(crate::manifest::REGISTRATIONS_PREFIX)? {
            if let Some(src) = m
                .name
                .strip_prefix(crate::manifest::REGISTRATIONS_PREFIX)
                .filter(|n| !n.contains('/'))
                && let Ok(at) = m.received.parse::<Timestamp>()
            {
                out.registered.insert(src.to_owned(), at);
            }
        }
        Ok(out)
    }
}

/// Who the scheduled drills are recorded as run by.
const SCHEDULER_ACTOR: &str = "vault serve";

#[derive(Debug, Default)]
struct ExpectedSources {
    /// Source → id of its latest complete backup.
    latest: std::collections::BTreeMap<String, String>,
    /// Source → when it was registered.
    registered: std::collections::BTreeMap<String, Timestamp>,
}

fn internal_match(internal: &CredentialEntry, presented: &str) -> Option<CredentialEntry> {
    let digest = blastwall_core::Credential::parse(presented).ok()?.digest();
    let mine = blastwall_core::TokenDigest::from_hex(&internal.digest)?;
    mine.ct_eq(&digest).then(|| internal.clone())
}

/// An error answer: a stable code, a message and a hint, never internal detail.
#[derive(Debug)]
struct ApiError(VaultError);

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = &self.0;
        let status = match e {
            VaultError::Unauthorized => StatusCode::UNAUTHORIZED,
            VaultError::Forbidden { .. } | VaultError::Shorten { .. } => StatusCode::FORBIDDEN,
            VaultError::Retained { .. } => StatusCode::LOCKED,
            VaultError::Conflict { .. } => StatusCode::CONFLICT,
            VaultError::NotFound(_) => StatusCode::NOT_FOUND,
            VaultError::BadName(_) | VaultError::UnexpectedName(_) => StatusCode::BAD_REQUEST,
            VaultError::HashMismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            VaultError::Quota { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            VaultError::BodyStalled { .. } => StatusCode::REQUEST_TIMEOUT,
            VaultError::TooManyUploads { .. } => StatusCode::TOO_MANY_REQUESTS,
            VaultError::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            VaultError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            VaultError::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            VaultError::Other(m) if m.starts_with("bad request") => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let (message, hint) = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "internal error");
            (
                "internal error".to_owned(),
                "see the vault's log".to_owned(),
            )
        } else if let VaultError::DiskFull { .. } = e {
            tracing::error!(error = %e, "disk full");
            (
                "the vault's disk is full".to_owned(),
                "no earlier backup was touched; free space on the vault host and retry".to_owned(),
            )
        } else {
            let text = e.to_string();
            let mut lines = text.splitn(2, "\nhint: ");
            (
                lines.next().unwrap_or_default().to_owned(),
                lines.next().unwrap_or_default().to_owned(),
            )
        };
        (
            status,
            axum::Json(serde_json::json!({
                "error": e.code(),
                "message": message,
                "hint": hint,
            })),
        )
            .into_response()
    }
}

/// Most uploads one writer may have in flight: each holds a connection for as long as its
/// bytes keep coming, so without a bound one writer could hold every connection of the vault
/// (`backup run` uploads one part at a time).
pub const MAX_UPLOADS_PER_WRITER: usize = 8;

/// One of a writer's [`MAX_UPLOADS_PER_WRITER`] places, given back when dropped.
struct UploadSlot {
    state: Arc<AppState>,
    writer: String,
}

impl UploadSlot {
    fn take(state: &Arc<AppState>, writer: &str) -> Option<Self> {
        let mut uploading = state
            .uploading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = uploading.entry(writer.to_owned()).or_insert(0);
        if *n >= MAX_UPLOADS_PER_WRITER {
            return None;
        }
        *n += 1;
        Some(Self {
            state: state.clone(),
            writer: writer.to_owned(),
        })
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut uploading = self
            .state
            .uploading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = uploading.get_mut(&self.writer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                uploading.remove(&self.writer);
            }
        }
    }
}

/// What an object counts against its writer's quota: its bytes plus [`OBJECT_OVERHEAD`].
fn charge(size: u64) -> u64 {
    size.saturating_add(OBJECT_OVERHEAD)
}

/// What every object costs the vault besides its bytes (its metadata file, an inode, its audit
/// entry), counted against the quota so that empty objects are not free: without it a writer
/// could create objects without end under any quota.
pub const OBJECT_OVERHEAD: u64 = 4096;

/// An upload's file in `tmp/`, removed when dropped (by then a committed upload has been renamed
/// away, so only a refused, failed or abandoned one is still there). Without it an upload whose
/// client went away mid-body stayed on disk until the next start, outside any quota.
struct TempUpload(std::path::PathBuf);

impl TempUpload {
    /// Creates the file, here rather than on a blocking thread: a creation still queued when the
    /// upload is dropped would bring the file back after the drop removed it.
    fn create(path: std::path::PathBuf) -> Result<(Self, tokio::fs::File), VaultError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| VaultError::io("create", &path, e))?;
        Ok((Self(path), tokio::fs::File::from_std(file)))
    }
}

impl Drop for TempUpload {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.0.display(), error = %e, "could not remove an unfinished upload");
        }
    }
}

/// Bytes counted against a writer's quota for an upload in flight; given back when dropped while
/// held (the upload failed, or the object existed already).
struct Reservation {
    state: Arc<AppState>,
    writer: String,
    size: u64,
    held: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.held
            && let Some(used) = self
                .state
                .usage
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get_mut(&self.writer)
        {
            *used = used.saturating_sub(self.size);
        }
    }
}

/// The largest JSON body (retention, policy, drill record) the vault reads.
const JSON_BODY_LIMIT: usize = 64 * 1024;

/// A JSON body read whole within the client time limit. axum's `Json` waits for the body as long
/// as the client likes, and it is read before the handler checks the credential: an anonymous
/// client that announced a body and sent none held its connection until the vault stopped.
struct TimedJson<T>(T);

impl<T: serde::de::DeserializeOwned> axum::extract::FromRequest<Arc<AppState>> for TimedJson<T> {
    type Rejection = ApiError;

    async fn from_request(
        req: axum::extract::Request,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let limit = state.limits.client_timeout;
        let read = axum::body::to_bytes(req.into_body(), JSON_BODY_LIMIT);
        let bytes = match tokio::time::timeout(limit, read).await {
            Err(_) => {
                return Err(VaultError::BodyStalled {
                    after: blastwall_core::format_duration(limit),
                }
                .into());
            }
            Ok(Err(e)) => {
                let too_large = e
                    .into_inner()
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some();
                return Err(if too_large {
                    VaultError::BodyTooLarge {
                        limit: JSON_BODY_LIMIT,
                    }
                    .into()
                } else {
                    bad_request("body cut short")
                });
            }
            Ok(Ok(b)) => b,
        };
        serde_json::from_slice(&bytes)
            .map(TimedJson)
            .map_err(|e| bad_request(&format!("invalid JSON body: {e}")))
    }
}

fn bad_request(what: &str) -> ApiError {
    ApiError(VaultError::Other(format!("bad request: {what}")))
}

async fn put_object(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let span = tracing::info_span!("vault.put", object = %name);
    async move {
        let who = s.auth(&headers, &[Role::Writer], "object.create", Some(&name))?;
        crate::objects::check_new_name(&name)?;
        s.require_audit()?;
        let _slot = UploadSlot::take(&s, &who.name).ok_or_else(|| {
            s.refuse(&who.name, "object.create", Some(&name), "too many uploads");
            VaultError::TooManyUploads {
                writer: who.name.clone(),
                max: MAX_UPLOADS_PER_WRITER,
            }
        })?;
        let declared = headers
            .get(SHA256_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_ascii_lowercase)
            .ok_or_else(|| bad_request("missing or invalid `x-blastwall-sha256`"))?;
        let size: u64 = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad_request("a `content-length` is required"))?;
        if size > MAX_OBJECT {
            return Err(bad_request("object larger than 1 GiB; send smaller parts"));
        }
        // The check and the reservation are one step under the lock: uploads running at the same
        // time each count against the quota before their bytes arrive (checked first and added
        // after the commit, N parallel uploads all passed the check).
        let mut reservation = Reservation {
            state: s.clone(),
            writer: who.name.clone(),
            size: charge(size),
            held: true,
        };
        {
            let quota = who.quota_bytes.or(s.read_data().settings.default_quota_bytes);
            let mut usage = s
                .usage
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let used = usage.get(&who.name).copied().unwrap_or(0);
            if let Some(quota) = quota
                && used.saturating_add(charge(size)) > quota
            {
                reservation.held = false;
                drop(usage);
                s.refuse(&who.name, "object.create", Some(&name), "quota");
                return Err(VaultError::Quota {
                    writer: who.name.clone(),
                    used,
                    quota,
                    size: charge(size),
                }
                .into());
            }
            *usage.entry(who.name.clone()).or_insert(0) += charge(size);
        }
        // A backup goes under a registered source, and only the writer that registered it may
        // add to it: otherwise any writer could start sources at will (each drilled every
        // round) or plant backups, and "latest" ones, in another writer's source.
        if let Some(rest) = name.strip_prefix("backups/") {
            let source = rest.split('/').next().unwrap_or_default();
            let registration = s.store.get(&crate::manifest::registration_name(source))?;
            let refusal = match &registration {
                None => Some(format!(
                    "source `{source}` is not registered (`blastwall backup source add` or `backup run` registers it)"
                )),
                Some(meta) if meta.writer != who.name => {
                    Some(format!("source `{source}` was registered by another writer"))
                }
                Some(_) => None,
            };
            if let Some(why) = refusal {
                s.refuse(&who.name, "object.create", Some(&name), &why);
                return Err(VaultError::Forbidden {
                    role: format!("writer ({why})"),
                    action: "object.create".into(),
                }
                .into());
            }
        }
        if name.starts_with(crate::manifest::REGISTRATIONS_PREFIX)
            && s.store.get(&name)?.is_none()
            && s.store.list(crate::manifest::REGISTRATIONS_PREFIX)?.len() >= MAX_SOURCES
        {
            // Each registered source costs a scheduled drill (and, without backups, a recorded
            // failure) every round: a writer must not be able to multiply them at will.
            s.refuse(&who.name, "object.create", Some(&name), "too many sources");
            return Err(VaultError::Forbidden {
                role: format!("writer (this vault already has {MAX_SOURCES} sources)"),
                action: "source.register".into(),
            }
            .into());
        }
        // Removed however this ends: refused, failed, or dropped because the client went away
        // mid-upload (hyper drops the handler then); a committed upload was renamed away.
        let (tmp, file) = TempUpload::create(s.store.temp_path()?)?;
        let actual = match receive(file, &tmp.0, body, size, s.limits.client_timeout).await {
            Ok(h) => h,
            Err(e) => {
                if let VaultError::DiskFull { .. } = e {
                    s.refuse(&who.name, "object.create", Some(&name), "disk full");
                }
                return Err(e.into());
            }
        };
        if actual != declared {
            s.refuse(&who.name, "object.create", Some(&name), "hash mismatch");
            return Err(VaultError::HashMismatch { name, actual }.into());
        }
        let received = s.clock.receipt();
        let retention = s.read_data().min_retention();
        let retain_until = jiff::SignedDuration::try_from(retention)
            .ok()
            .and_then(|d| received.checked_add(d).ok())
            .ok_or_else(|| VaultError::Other("retention out of range".into()))?;
        let meta = ObjectMeta {
            name: name.clone(),
            size,
            sha256: actual,
            received: received.to_string(),
            retain_until: retain_until.to_string(),
            writer: who.name.clone(),
        };
        match s.store.commit(&tmp.0, meta).await {
            Ok(Created::New(meta)) => {
                // The bytes are stored: the reservation is the usage now.
                reservation.held = false;
                s.metrics.created.fetch_add(1, Ordering::Relaxed);
                s.metrics.bytes.fetch_add(size, Ordering::Relaxed);
                s.metrics.stored_objects.fetch_add(1, Ordering::Relaxed);
                s.metrics.stored_bytes.fetch_add(size, Ordering::Relaxed);
                s.audit(
                    &who.name,
                    "object.create",
                    Some(&name),
                    serde_json::json!({"size": size, "sha256": meta.sha256, "retain_until": meta.retain_until}),
                )?;
                tracing::info!(size, "created");
                Ok((StatusCode::CREATED, answer(meta, true)).into_response())
            }
            Ok(Created::Existing(meta)) => Ok((StatusCode::OK, answer(meta, false)).into_response()),
            Err(e @ VaultError::Conflict { .. }) => {
                s.refuse(&who.name, "object.overwrite", Some(&name), "exists with other bytes");
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }
    .instrument(span)
    .await
}

fn answer(meta: ObjectMeta, created: bool) -> axum::Json<serde_json::Value> {
    let mut v = serde_json::to_value(meta).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("created".into(), created.into());
    }
    axum::Json(v)
}

/// Streams an upload to `tmp`, hashing it; an upload that sends nothing for `idle` is dropped
/// (the connection it holds is the client's, the time it takes is not).
/// The least an upload must send per client time limit.
const MIN_UPLOAD_PER_PERIOD: u64 = 1024;

async fn receive(
    mut file: tokio::fs::File,
    tmp: &std::path::Path,
    body: Body,
    size: u64,
    idle: Duration,
) -> Result<String, VaultError> {
    let mut hasher = sha2::Sha256::new();
    let mut n: u64 = 0;
    let mut stream = body.into_data_stream();
    let stalled = || VaultError::BodyStalled {
        after: blastwall_core::format_duration(idle),
    };
    // Each `idle` period must bring at least MIN_UPLOAD_PER_PERIOD bytes: an upload dripping
    // a byte just inside the limit would otherwise hold its connection and quota for ever.
    let mut period = (tokio::time::Instant::now(), 0u64);
    loop {
        let Ok(next) = tokio::time::timeout(idle, stream.next()).await else {
            return Err(stalled());
        };
        let Some(chunk) = next else { break };
        let chunk =
            chunk.map_err(|e| VaultError::Other(format!("bad request: body cut short: {e}")))?;
        period.1 = period.1.saturating_add(chunk.len() as u64);
        if period.0.elapsed() >= idle {
            if period.1 < MIN_UPLOAD_PER_PERIOD {
                return Err(stalled());
            }
            period = (tokio::time::Instant::now(), 0);
        }
        n += chunk.len() as u64;
        if n > size {
            return Err(VaultError::Other(
                "bad request: body longer than its content-length".into(),
            ));
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| VaultError::io("write", tmp, e))?;
    }
    if n != size {
        return Err(VaultError::Other(
            "bad request: body shorter than its content-length".into(),
        ));
    }
    file.sync_all()
        .await
        .map_err(|e| VaultError::io("sync", tmp, e))?;
    Ok(hex::encode(hasher.finalize()))
}

async fn get_object(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    s.auth(
        &headers,
        &[Role::Reader, Role::Admin],
        "object.get",
        Some(&name),
    )?;
    let path = s.store.path_of(&name)?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| VaultError::io("open", &path, e))?;
    let stream = tokio_util_stream(file);
    Ok((StatusCode::OK, Body::from_stream(stream)).into_response())
}

/// A file as a stream of chunks, without buffering it whole.
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures_util::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
}

async fn delete_object(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = s.auth(&headers, &[Role::Admin], "object.delete", Some(&name))?;
    s.require_audit()?;
    let meta = s
        .store
        .get(&name)?
        .ok_or_else(|| VaultError::NotFound(name.clone()))?;
    let until: Timestamp = meta.retain_until.parse().map_err(|_| VaultError::Corrupt {
        path: name.clone().into(),
        why: "bad retain_until".into(),
    })?;
    let now = s.clock.expiry_now()?;
    if now < until {
        s.refuse(&who.name, "object.delete", Some(&name), "retained");
        return Err(VaultError::Retained {
            name,
            until: meta.retain_until,
        }
        .into());
    }
    s.store.remove(&name)?;
    s.metrics.stored_objects.fetch_sub(1, Ordering::Relaxed);
    s.metrics
        .stored_bytes
        .fetch_sub(meta.size, Ordering::Relaxed);
    if let Some(u) = s
        .usage
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get_mut(&meta.writer)
    {
        *u = u.saturating_sub(charge(meta.size));
    }
    s.audit(
        &who.name,
        "object.expire",
        Some(&name),
        serde_json::json!({"retain_until": meta.retain_until, "at": now.to_string()}),
    )?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
}

async fn list(
    State(s): State<Arc<AppState>>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    s.auth(
        &headers,
        &[Role::Writer, Role::Reader, Role::Admin],
        "object.list",
        None,
    )?;
    Ok(axum::Json(s.store.list(&q.prefix)?).into_response())
}

#[derive(Debug, Deserialize)]
struct RetentionBody {
    retain_until: String,
}

async fn set_retention(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    TimedJson(body): TimedJson<RetentionBody>,
) -> Result<Response, ApiError> {
    let who = s.auth(&headers, &[Role::Admin], "retention.change", Some(&name))?;
    s.require_audit()?;
    let mut meta = s
        .store
        .get(&name)?
        .ok_or_else(|| VaultError::NotFound(name.clone()))?;
    let asked: Timestamp = body
        .retain_until
        .parse()
        .map_err(|_| bad_request("`retain_until` must be an RFC 3339 time"))?;
    let current: Timestamp = meta.retain_until.parse().map_err(|_| VaultError::Corrupt {
        path: name.clone().into(),
        why: "bad retain_until".into(),
    })?;
    if asked < current {
        s.refuse(&who.name, "retention.shorten", Some(&name), "shorter");
        return Err(VaultError::Shorten {
            what: format!("the retain-until of `{name}`"),
            current: meta.retain_until,
            asked: asked.to_string(),
        }
        .into());
    }
    meta.retain_until = asked.to_string();
    s.store.write_meta(&meta)?;
    s.audit(
        &who.name,
        "retention.lengthen",
        Some(&name),
        serde_json::json!({"retain_until": meta.retain_until}),
    )?;
    Ok(axum::Json(meta).into_response())
}

#[derive(Debug, Deserialize)]
struct PolicyBody {
    min_retention_secs: u64,
}

async fn set_policy(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    TimedJson(body): TimedJson<PolicyBody>,
) -> Result<Response, ApiError> {
    let who = s.auth(&headers, &[Role::Admin], "policy.change", None)?;
    s.require_audit()?;
    let updated = {
        let mut data = s
            .data
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = data.settings.min_retention_secs;
        if body.min_retention_secs < current {
            drop(data);
            s.refuse(&who.name, "policy.shorten", None, "shorter");
            return Err(VaultError::Shorten {
                what: "the minimum retention".into(),
                current: blastwall_core::format_duration(Duration::from_secs(current)),
                asked: blastwall_core::format_duration(Duration::from_secs(
                    body.min_retention_secs,
                )),
            }
            .into());
        }
        data.settings.min_retention_secs = body.min_retention_secs;
        data.save_settings()?;
        data.settings.clone()
    };
    s.audit(
        &who.name,
        "policy.lengthen",
        None,
        serde_json::json!({"min_retention_secs": updated.min_retention_secs}),
    )?;
    Ok(axum::Json(updated).into_response())
}

async fn record_drill(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    TimedJson(drill): TimedJson<DrillRecord>,
) -> Result<Response, ApiError> {
    let who = s.auth(&headers, &[Role::Reader, Role::Admin], "drill.record", None)?;
    s.require_audit()?;
    s.store_drill(&who.name, &drill)?;
    Ok(StatusCode::CREATED.into_response())
}

async fn drills(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    s.auth(
        &headers,
        &[Role::Writer, Role::Reader, Role::Admin],
        "drill.list",
        None,
    )?;
    Ok(axum::Json(read_drills(&s.read_data().drills_path())?).into_response())
}

async fn info(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let who = s.auth(
        &headers,
        &[Role::Writer, Role::Reader, Role::Admin],
        "info",
        None,
    )?;
    let data = s.read_data();
    Ok(axum::Json(VaultInfo {
        machine_id: crate::data::machine_id(),
        device: data.device()?,
        min_retention_secs: data.settings.min_retention_secs,
        recipient: data.recipient()?.to_string(),
        role: who.role.to_string(),
    })
    .into_response())
}

/// `ok`, or 503 while a change the vault made waits for its audit entry (the vault refuses
/// changes until the log takes it).
async fn healthz(State(s): State<Arc<AppState>>) -> Response {
    let waiting = s
        .unaudited
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .len();
    // Kept entries are tried again here too, so health comes back with the log, not a minute
    // later with the next tick.
    if waiting == 0 || s.flush_unaudited().is_ok() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "audit log unwritable: changes are refused\n",
        )
            .into_response()
    }
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let m = &s.metrics;
    let objects = m.stored_objects.load(Ordering::Relaxed);
    let bytes = m.stored_bytes.load(Ordering::Relaxed);
    let text = format!(
        "# TYPE blastwall_vault_objects_created_total counter\nblastwall_vault_objects_created_total {}\n\
         # TYPE blastwall_vault_bytes_received_total counter\nblastwall_vault_bytes_received_total {}\n\
         # TYPE blastwall_vault_refusals_total counter\nblastwall_vault_refusals_total {}\n\
         # TYPE blastwall_vault_connections_refused_total counter\nblastwall_vault_connections_refused_total {}\n\
         # TYPE blastwall_vault_drills_total counter\nblastwall_vault_drills_total{{result=\"pass\"}} {}\nblastwall_vault_drills_total{{result=\"fail\"}} {}\n\
         # TYPE blastwall_vault_objects gauge\nblastwall_vault_objects {objects}\n\
         # TYPE blastwall_vault_stored_bytes gauge\nblastwall_vault_stored_bytes {bytes}\n",
        m.created.load(Ordering::Relaxed),
        m.bytes.load(Ordering::Relaxed),
        m.refused.load(Ordering::Relaxed),
        m.connections_refused.load(Ordering::Relaxed),
        m.drills_passed.load(Ordering::Relaxed),
        m.drills_failed.load(Ordering::Relaxed),
    );
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}

/// The answer to a plain-HTTP request on the HTTPS port: a clear refusal rather than a reset.
fn https_only() -> Vec<u8> {
    let body = serde_json::json!({
        "error": "https_required",
        "message": "this vault serves HTTPS only",
        "hint": "use the vault's `https://` URL, not `http://`",
    })
    .to_string();
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers plain HTTP with [`https_only`]: reads the request's head first and drains what
/// follows after the answer, so the client reads the answer rather than a reset.
async fn refuse_plain_http(mut tcp: tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 16 * 1024];
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 64 * 1024 {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(buf.get(..n).unwrap_or_default()),
            }
        }
    })
    .await;
    if tcp.write_all(&https_only()).await.is_err() || tcp.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut drained = 0usize;
        while drained < (8 << 20) {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

/// The vault's TLS handshake; plain HTTP sent to the HTTPS port gets a plain answer saying so.
#[derive(Clone)]
struct TlsHandshake(tokio_rustls::TlsAcceptor);

impl blastwall_serve::Handshake for TlsHandshake {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

    async fn handshake(&self, tcp: tokio::net::TcpStream, first: u8) -> Option<Self::Io> {
        // A TLS connection opens with a handshake record (0x16); anything else is most likely
        // plain HTTP sent to the HTTPS port.
        if first != 0x16 {
            tracing::debug!("plain HTTP on the HTTPS port refused");
            refuse_plain_http(tcp).await;
            return None;
        }
        match self.0.accept(tcp).await {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
        }
    }
}

/// Appends one JSON line to `path`, fsynced.
fn append_line<T: serde::Serialize>(path: &std::path::Path, value: &T) -> Result<(), VaultError> {
    use std::io::Write;
    let mut line =
        serde_json::to_vec(value).map_err(|e| VaultError::Other(format!("cannot encode: {e}")))?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| VaultError::io("open", path, e))?;
    f.write_all(&line)
        .and_then(|()| f.sync_data())
        .map_err(|e| VaultError::io("append to", path, e))
}

/// Every drill in `drills.jsonl`.
pub fn read_drills(path: &std::path::Path) -> Result<Vec<DrillRecord>, VaultError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(VaultError::io("read", path, e)),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|e| VaultError::Corrupt {
                path: path.to_path_buf(),
                why: e.to_string(),
            })
        })
        .collect()
}

/// Every `every`, drills the latest backup of each source found in the vault (plus one random
/// older one), until `stop` is set.
fn scheduled_drills(
    state: &AppState,
    base: &str,
    leaf: Option<rustls::pki_types::CertificateDer<'static>>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "the drill scheduler cannot start its runtime");
            return;
        }
    };
    let mut wait = first_wait(state, every);
    loop {
        let deadline = std::time::Instant::now() + wait;
        wait = every;
        while std::time::Instant::now() < deadline {
            if *stop.borrow() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let stopped = runtime.block_on(async {
            tokio::select! {
                () = drill_round(state, base, leaf.clone(), every) => false,
                // Dropping the round stops its scratch cluster, kills its tools and removes its
                // decrypted files; the drill in progress is recorded by none.
                _ = stop.wait_for(|s| *s) => true,
            }
        });
        if stopped {
            tracing::info!("a drill round was interrupted by the stop");
            return;
        }
    }
}

/// How long a stop waits for an interrupted drill to clean up (a scratch cluster's stop).
const DRILL_STOP_WAIT: Duration = Duration::from_secs(60);

/// How long the scheduler waits before its first round: what is left of the interval since the
/// last scheduled drill on record, and nothing when there is none. Waiting a whole interval from
/// each start, a vault restarted more often than `--drill-every` (deploys, certificate renewals,
/// a crash loop) never drilled.
fn first_wait(state: &AppState, every: Duration) -> Duration {
    let last = read_drills(&state.read_data().drills_path())
        .ok()
        .and_then(|drills| {
            drills
                .iter()
                .rev()
                .find(|d| d.actor == SCHEDULER_ACTOR)
                .and_then(|d| d.at.parse::<jiff::Timestamp>().ok())
        });
    let Some(last) = last else {
        return Duration::ZERO;
    };
    let since = crate::now().duration_since(last);
    match Duration::try_from(since) {
        Ok(elapsed) => every.saturating_sub(elapsed),
        // A record from the future (the clock was set back): a whole interval.
        Err(_) => every,
    }
}

/// One round of scheduled drills. Every source the vault knows (registered, or with a backup)
/// gets a drill record: a pass, a failure, or a drill that could not run, which is a failure
/// with its reason, never a skip. A registered source without a backup fails once its first
/// interval has passed.
async fn drill_round(
    state: &AppState,
    base: &str,
    leaf: Option<rustls::pki_types::CertificateDer<'static>>,
    every: Duration,
) {
    let known = match state.expected_sources() {
        Ok(k) => k,
        Err(e) => {
            // Not even the vault's own store can be listed: nothing is known to drill, and that
            // is the failure to record.
            state.drill_could_not_run(
                "-",
                "-",
                format!(
                    "cannot list the vault's store: {}",
                    crate::drill::one_line(&e)
                ),
            );
            return;
        }
    };
    let mut sources: std::collections::BTreeSet<String> = known.latest.keys().cloned().collect();
    sources.extend(known.registered.keys().cloned());
    let all_fail = |why: String| {
        for source in &sources {
            let backup = known.latest.get(source).map_or("-", String::as_str);
            state.drill_could_not_run(source, backup, why.clone());
        }
    };
    let data = state.read_data();
    let identity = match data.identity() {
        Ok(i) => i,
        Err(e) => {
            return all_fail(format!(
                "the drill could not run: cannot read the backup identity: {}",
                crate::drill::one_line(&e)
            ));
        }
    };
    let client = match leaf {
        Some(leaf) => VaultClient::pinned(base, state.internal_secret.clone(), leaf),
        None => VaultClient::new(base, state.internal_secret.clone()),
    };
    let client = match client {
        Ok(c) => crate::store::BackupStore::from(c),
        Err(e) => {
            return all_fail(format!(
                "the drill could not run: cannot reach the vault: {}",
                crate::drill::one_line(&e)
            ));
        }
    };
    let now = crate::now();
    for source in &sources {
        if !known.latest.contains_key(source) {
            let Some(at) = known.registered.get(source) else {
                continue;
            };
            let due = jiff::SignedDuration::try_from(every)
                .ok()
                .and_then(|d| at.checked_add(d).ok())
                .is_none_or(|due| now >= due);
            if due {
                state.drill_could_not_run(
                    source,
                    "-",
                    format!(
                        "no backup of `{source}` in the vault, {} after it was registered (at {at}; one is expected every {})",
                        blastwall_core::format_duration(Duration::from_secs(
                            now.duration_since(*at).as_secs().unsigned_abs()
                        )),
                        blastwall_core::format_duration(every)
                    ),
                );
            }
            continue;
        }
        let opts = crate::drill::DrillOptions {
            backup: None,
            random_older: true,
            actor: SCHEDULER_ACTOR.into(),
        };
        match crate::drill::drill_source(&client, &identity, source, &opts).await {
            Ok(records) => {
                for r in records {
                    tracing::info!(source = %source, backup = %r.backup, passed = r.passed, reason = ?r.reason, "scheduled drill");
                }
            }
            Err(e) => {
                let backup = known.latest.get(source).map_or("-", String::as_str);
                state.drill_could_not_run(
                    source,
                    backup,
                    format!("the drill could not run: {}", crate::drill::one_line(&e)),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::data::Settings;

    struct Running {
        base: String,
        data: VaultData,
        _dir: tempfile::TempDir,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            if let Some(s) = self.stop.take() {
                let _ = s.send(());
            }
        }
    }

    async fn start(min_retention_secs: u64) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let (data, _) = VaultData::init(
            &dir.path().join("v"),
            Settings {
                min_retention_secs,
                drill_every_secs: None,
                default_quota_bytes: None,
                tls_cert: None,
                tls_key: None,
            },
        )
        .unwrap();
        let limits = blastwall_serve::Limits {
            client_timeout: Duration::from_secs(30),
            max_connections: 64,
            drain: Duration::from_secs(5),
        };
        let vault = Vault::open(data.clone(), limits).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(vault.serve(listener, None, async {
            let _ = rx.await;
        }));
        Running {
            base,
            data,
            _dir: dir,
            stop: Some(tx),
        }
    }

    fn client(r: &Running, name: &str, role: Role) -> VaultClient {
        let mut creds = Credentials::open(&r.data.credentials_path()).unwrap();
        let c = creds.add(name, role, None).unwrap();
        VaultClient::new(&r.base, SecretString::from(c.expose().to_owned())).unwrap()
    }

    fn status(e: VaultError) -> u16 {
        match e {
            VaultError::Remote { status, .. } => status,
            other => panic!("{other}"),
        }
    }

    #[tokio::test]
    async fn roles_retention_and_policy() {
        let r = start(86400).await;
        let w = client(&r, "w", Role::Writer);
        let rd = client(&r, "r", Role::Reader);
        let a = client(&r, "a", Role::Admin);
        let put = w
            .put("canary/b-x", Bytes::from_static(b"abc"))
            .await
            .unwrap();
        assert!(put.created);
        assert!(
            !w.put("canary/b-x", Bytes::from_static(b"abc"))
                .await
                .unwrap()
                .created
        );
        assert_eq!(
            status(
                w.put("canary/b-x", Bytes::from_static(b"abd"))
                    .await
                    .unwrap_err()
            ),
            409
        );
        assert_eq!(
            status(
                rd.put("canary/b-y", Bytes::from_static(b"1"))
                    .await
                    .unwrap_err()
            ),
            403
        );
        assert_eq!(status(w.get("canary/b-x").await.unwrap_err()), 403);
        assert_eq!(&rd.get("canary/b-x").await.unwrap()[..], b"abc");
        assert_eq!(status(w.delete("canary/b-x").await.unwrap_err()), 403);
        assert_eq!(status(a.delete("canary/b-x").await.unwrap_err()), 423);
        assert_eq!(
            status(
                a.set_retention("canary/b-x", "2020-01-01T00:00:00Z")
                    .await
                    .unwrap_err()
            ),
            403
        );
        let later = "2099-01-01T00:00:00Z";
        a.set_retention("canary/b-x", later).await.unwrap();
        assert_eq!(w.list("canary/b-").await.unwrap()[0].retain_until, later);
        assert_eq!(status(a.set_policy(60).await.unwrap_err()), 403);
        a.set_policy(2 * 86400).await.unwrap();
        let info = w.info().await.unwrap();
        assert_eq!(info.min_retention_secs, 2 * 86400);
        assert_eq!(info.role, "writer");
    }

    #[tokio::test]
    async fn the_admin_deletes_what_has_expired() {
        let r = start(0).await;
        let w = client(&r, "w", Role::Writer);
        let a = client(&r, "a", Role::Admin);
        // The gauges on /metrics follow what is stored (without listing the store).
        let gauges = || async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let addr = r.base.trim_start_matches("http://");
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: v\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut text = String::new();
            tcp.read_to_string(&mut text).await.unwrap();
            let read = |name: &str| -> u64 {
                let line = text.lines().find(|l| l.starts_with(name)).unwrap();
                line.rsplit(' ').next().unwrap().parse().unwrap()
            };
            (
                read("blastwall_vault_objects "),
                read("blastwall_vault_stored_bytes "),
            )
        };
        assert_eq!(gauges().await, (0, 0));
        w.put("canary/b-old", Bytes::from_static(b"old"))
            .await
            .unwrap();
        w.put("canary/b-new", Bytes::from_static(b"newer"))
            .await
            .unwrap();
        assert_eq!(gauges().await, (2, 8));
        tokio::time::sleep(Duration::from_millis(20)).await;
        a.delete("canary/b-old").await.unwrap();
        assert_eq!(gauges().await, (1, 5));
        a.delete("canary/b-new").await.unwrap();
        assert!(w.list("").await.unwrap().is_empty());
        assert_eq!(gauges().await, (0, 0));
        let log = VaultLog::open(&r.data.audit_path()).unwrap();
        let actions: Vec<String> = log
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| e.record.action)
            .collect();
        assert_eq!(
            actions,
            [
                "object.create",
                "object.create",
                "object.expire",
                "object.expire"
            ]
        );
    }
}
