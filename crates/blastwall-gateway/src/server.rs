//! The gateway's state, router and server loop.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use blastwall_core::audit::AuditRecord;
use blastwall_core::audit::throttle::Throttle;
use blastwall_core::config::GatewayConfig;
use blastwall_core::record::{TokenId, UpstreamRecord};
use blastwall_core::seal::EnvIdentity;
use blastwall_core::{EnvName, Environment};
use blastwall_policy::Catalog;
use blastwall_store::{Auditor, Store, SyncAuditLog};
use http::StatusCode;
use tokio::sync::{RwLock, mpsc, watch};

use crate::auth::Tokens;
use crate::authorize::Authorize;
use crate::error::GatewayError;
use crate::forward::Clients;
use crate::inject::OpenedCredential;
use crate::metrics::Metrics;

/// Everything `blastwall serve` needs to start a gateway.
pub struct GatewaySetup {
    /// The shared store.
    pub store: Arc<dyn Store>,
    /// Signs checkpoints of what the gateway appends to the audit log.
    pub auditor: Auditor,
    /// The operation catalog.
    pub catalog: Arc<Catalog>,
    /// Operator Cedar policies folder, if any.
    pub policy_dir: Option<std::path::PathBuf>,
    /// The environment keys this process holds; every other environment is sealed here.
    pub keys: HashMap<EnvName, EnvIdentity>,
    /// Listen address, limits and time-outs.
    pub config: GatewayConfig,
}

impl std::fmt::Debug for GatewaySetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewaySetup")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The shared state of a running gateway.
#[derive(Clone, Debug)]
pub struct Gateway {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) authorize: Authorize,
    pub(crate) keys: HashMap<EnvName, EnvIdentity>,
    pub(crate) tokens: Arc<Tokens>,
    pub(crate) envs: RwLock<HashMap<EnvName, Arc<Environment>>>,
    pub(crate) upstreams: RwLock<HashMap<String, Arc<UpstreamRecord>>>,
    /// By upstream, then environment, so a lookup copies neither name.
    pub(crate) credentials: RwLock<HashMap<String, HashMap<EnvName, Arc<OpenedCredential>>>>,
    pub(crate) clients: Clients,
    pub(crate) audit: mpsc::Sender<AuditRecord>,
    /// The runtime the gateway started on (the audit writer's): an entry that must wait for room
    /// in the queue waits there, not on a connection worker's runtime, which stops first.
    pub(crate) runtime: tokio::runtime::Handle,
    /// Whether the audit writer is failing to write: while it is, nothing is forwarded.
    pub(crate) audit_failing: Arc<AtomicBool>,
    pub(crate) metrics: Metrics,
    /// Unauthenticated refusals, and each token's rate-limited ones, written one by one per
    /// minute; the rest are counted.
    pub(crate) refusals: Throttle,
    /// Each token's request rate (`[gateway] token_rate`, `token_burst`); `None` when off.
    pub(crate) token_limit: Option<TokenLimiter>,
    pub(crate) config: GatewayConfig,
}

/// A gateway ready to serve, with its background tasks.
#[derive(Debug)]
pub struct Running {
    /// The gateway's state (for an in-process router, e.g. tests).
    pub gateway: Gateway,
    audit_task: tokio::task::JoinHandle<()>,
    /// When the stop began, for the audit writer's deadline.
    stopping: watch::Sender<Option<Instant>>,
    poll_task: tokio::task::JoinHandle<()>,
    refresh_task: tokio::task::JoinHandle<()>,
    summary_task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    /// Builds the gateway: validates the policies, loads environments and starts the revocation
    /// poller and the audit writer. Fails (and so stops start-up) on a bad policy or CA file.
    pub async fn start(setup: GatewaySetup) -> Result<Running, GatewayError> {
        let authorize = Authorize::new(&setup.catalog, setup.policy_dir.as_deref())?;
        let clients = Clients::new(setup.config.connect_timeout, &setup.config.ca_files)?;
        let envs = setup
            .store
            .env_list()
            .await?
            .into_iter()
            .map(|e| (e.name.clone(), Arc::new(e)))
            .collect();
        let tokens = Arc::new(Tokens::new(
            setup.store.clone(),
            setup.config.revocation_poll,
        ));
        tokens.poll_once().await.map_err(GatewayError::Store)?;
        let (tx, rx) = mpsc::channel(10_000);
        let audit_failing = Arc::new(AtomicBool::new(false));
        let (stopping, stop_seen) = watch::channel(None);
        // Opening the SQLite connection blocks briefly (a file and a few pragmas), once, at
        // start-up, before anything is served.
        let audit_task = match setup.store.sync_audit_log()? {
            Some(mut log) => {
                log.set_busy_timeout(AUDIT_ATTEMPT_LIMIT)?;
                spawn_audit_thread(setup.auditor, log, rx, audit_failing.clone(), stop_seen)?
            }
            None => tokio::spawn(audit_writer(
                setup.auditor,
                rx,
                audit_failing.clone(),
                stop_seen,
            )),
        };
        let poll_task = tokio::spawn(tokens.clone().run_poller());
        let inner = Inner {
            store: setup.store,
            catalog: setup.catalog,
            authorize,
            keys: setup.keys,
            tokens,
            envs: RwLock::new(envs),
            upstreams: RwLock::new(HashMap::new()),
            credentials: RwLock::new(HashMap::new()),
            clients,
            audit: tx,
            runtime: tokio::runtime::Handle::current(),
            audit_failing,
            metrics: Metrics::new(),
            refusals: Throttle::new(REFUSAL_WINDOW, REFUSALS_PER_WINDOW),
            token_limit: token_limiter(&setup.config),
            config: setup.config,
        };
        let gateway = Gateway {
            inner: Arc::new(inner),
        };
        let refresh_task = tokio::spawn(refresh_credentials(gateway.clone()));
        let summary_task = tokio::spawn(summarize_refusals(gateway.clone()));
        Ok(Running {
            gateway,
            audit_task,
            stopping,
            poll_task,
            refresh_task,
            summary_task,
        })
    }

    /// The HTTP routes: `/proxy/<upstream>/…`, `/healthz`, `/metrics`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .fallback(crate::proxy::handle)
            .with_state(self.clone())
    }

    /// Queues an audit entry (written in order by the audit writer, off the request path),
    /// waiting while the queue is full. Cancelling the wait (the client went away) does not lose
    /// the entry: it is handed to a task of its own.
    pub(crate) async fn audit(&self, record: AuditRecord) {
        let record = match self.inner.audit.try_send(record) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Closed(r)) => {
                self.writer_gone(r);
                return;
            }
            Err(mpsc::error::TrySendError::Full(r)) => r,
        };
        let mut waiting = Detached {
            gw: self,
            record: Some(record),
        };
        match self.inner.audit.reserve().await {
            Ok(permit) => {
                if let Some(r) = waiting.record.take() {
                    permit.send(r);
                }
            }
            Err(_) => {
                if let Some(r) = waiting.record.take() {
                    self.writer_gone(r);
                }
            }
        }
    }

    /// Queues an audit entry without waiting: from a `Drop`, where nothing can be awaited. When
    /// the queue is full, a task on the gateway's own runtime waits for room (it holds a sender,
    /// so the writer does not finish before it).
    pub(crate) fn audit_now(&self, record: AuditRecord) {
        match self.inner.audit.try_send(record) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(r)) => self.writer_gone(r),
            Err(mpsc::error::TrySendError::Full(r)) => {
                let tx = self.inner.audit.clone();
                let failing = self.inner.audit_failing.clone();
                drop(self.inner.runtime.spawn(async move {
                    if let Err(mpsc::error::SendError(r)) = tx.send(r).await {
                        failing.store(true, Ordering::SeqCst);
                        log_unwritten(vec![r], Unwritten::WriterGone);
                    }
                }));
            }
        }
    }

    /// The queue's reader is gone (the writer panicked, or gave up at a stop): nothing more can
    /// be audited, so nothing more is forwarded, and `record` goes to the log.
    fn writer_gone(&self, record: AuditRecord) {
        self.inner.audit_failing.store(true, Ordering::SeqCst);
        log_unwritten(vec![record], Unwritten::WriterGone);
    }
}

/// An audit entry waiting for room in the queue; queued without waiting if the wait is dropped.
struct Detached<'a> {
    gw: &'a Gateway,
    record: Option<AuditRecord>,
}

impl Drop for Detached<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.record.take() {
            self.gw.audit_now(r);
        }
    }
}

/// The window of [`Inner::refusals`].
const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// How many unauthenticated refusals per window get an audit entry each.
const REFUSALS_PER_WINDOW: u32 = 60;

/// Every window, appends one entry counting the refusals that were not written one by one (see
/// [`blastwall_core::audit::throttle`]), and forgets the rate of tokens idle since.
async fn summarize_refusals(gw: Gateway) {
    let mut every = tokio::time::interval(REFUSAL_WINDOW);
    every.tick().await;
    loop {
        every.tick().await;
        gw.audit_suppressed().await;
        if let Some(limit) = &gw.inner.token_limit {
            limit.retain_recent();
            limit.shrink_to_fit();
        }
    }
}

/// The per-token rate limiter (GCRA, from `governor`): one cell per token seen recently.
pub(crate) type TokenLimiter = governor::DefaultKeyedRateLimiter<TokenId>;

/// `None` when `token_rate` is 0 (no limit).
fn token_limiter(config: &GatewayConfig) -> Option<TokenLimiter> {
    let rate = NonZeroU32::new(config.token_rate)?;
    let burst = NonZeroU32::new(config.token_burst).unwrap_or(rate);
    Some(governor::RateLimiter::keyed(
        governor::Quota::per_second(rate).allow_burst(burst),
    ))
}

impl Gateway {
    /// Queues one entry per actor whose refusals were counted rather than written.
    async fn audit_suppressed(&self) {
        for s in self
            .inner
            .refusals
            .take_suppressed(std::time::Instant::now())
        {
            let detail = serde_json::json!({
                "decision": "deny",
                "count": s.count,
                "window_secs": REFUSAL_WINDOW.as_secs(),
                "note": "refusals past the per-window budget, counted instead of written one by one",
            });
            self.audit(AuditRecord {
                at: jiff::Timestamp::now().to_string(),
                actor: s.actor,
                action: "request.decide.suppressed".to_owned(),
                env: None,
                target: None,
                detail: detail.to_string(),
            })
            .await;
        }
    }
}

/// Drops opened credentials whose sealed record was replaced (`blastwall upstream add … --env E
/// --secret-stdin` again, from any process sharing the store) or removed, every
/// `revocation_poll`: the next request opens the stored one. Without this a rotated credential
/// took effect only at a restart. When the store cannot be read, the cache is left as it is
/// (token checks already fail closed when the store stays unreachable).
async fn refresh_credentials(gw: Gateway) {
    let every = gw.inner.config.revocation_poll;
    loop {
        tokio::time::sleep(every).await;
        let stored = match gw.inner.store.credential_list().await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list sealed credentials; keeping the opened ones");
                continue;
            }
        };
        let current = |upstream: &str, env: &EnvName, opened: &OpenedCredential| {
            stored.iter().any(|c| {
                c.upstream.as_str() == upstream && c.env == *env && opened.opened_from(&c.sealed)
            })
        };
        // Read first: the write lock is taken only when something changed.
        let stale = {
            let cache = gw.inner.credentials.read().await;
            cache.iter().any(|(upstream, by_env)| {
                by_env
                    .iter()
                    .any(|(env, opened)| !current(upstream, env, opened))
            })
        };
        if !stale {
            continue;
        }
        let mut cache = gw.inner.credentials.write().await;
        for (upstream, by_env) in cache.iter_mut() {
            by_env.retain(|env, opened| {
                let keep = current(upstream, env, opened);
                if !keep {
                    tracing::info!(upstream = %upstream, env = %env, "sealed credential replaced; the stored one is opened on the next request");
                }
                keep
            });
        }
    }
}

impl Running {
    /// Serves on `listener` until `shutdown` resolves, then drains: in-flight requests finish,
    /// queued audit entries are written and a checkpoint is signed.
    ///
    /// Connections are served by [`blastwall_serve::serve`] (HTTP/1.1, or HTTP/2 with prior
    /// knowledge): a client has `[gateway] client_timeout` to send its first byte and each
    /// request head (which also closes idle keep-alive connections), and at most
    /// `[gateway] max_connections` are open at once, so slow or idle clients cannot use up the
    /// gateway's file descriptors.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), GatewayError> {
        let config = &self.gateway.inner.config;
        let limits = blastwall_serve::Limits {
            client_timeout: config.client_timeout,
            max_connections: config.max_connections,
            // A request whose body was still arriving when the stop began may forward after
            // it: it gets its whole body time and its upstream's answer time, and is audited.
            drain: config
                .client_timeout
                .saturating_add(config.response_timeout),
        };
        // PostgreSQL connections opened on a worker would belong to that worker's runtime,
        // which stops with the server, before the last audit entries are written: a shared
        // PostgreSQL store is served from the main runtime. SQLite's connections run on
        // threads of their own.
        let threads = if self.gateway.inner.store.runs_on_own_threads() {
            blastwall_serve::Threads::PerCpu
        } else {
            blastwall_serve::Threads::Caller
        };
        let gateway = self.gateway.clone();
        let on_full = move || {
            gateway
                .inner
                .metrics
                .count("-", "-", "too_many_connections");
        };
        // The router holds the gateway's state, whose audit queue must close for the writer to
        // finish: `serve` drops it before it returns, and `on_full`'s clone goes with it.
        blastwall_serve::serve(
            listener,
            blastwall_serve::Plain,
            self.gateway.router(),
            limits,
            threads,
            on_full,
            shutdown,
        )
        .await;
        self.stop().await;
        Ok(())
    }

    /// Stops the background tasks, writing every queued audit entry first (or, if the store
    /// will not take them within four seconds of the stop, to the log).
    pub async fn stop(self) {
        self.stopping.send_replace(Some(Instant::now()));
        self.poll_task.abort();
        self.refresh_task.abort();
        self.summary_task.abort();
        // Bounded like the rest: last-use times are a convenience, the audit entries are not.
        if tokio::time::timeout(
            Duration::from_secs(2),
            self.gateway.inner.tokens.flush_touched(),
        )
        .await
        .is_err()
        {
            tracing::warn!("last-use times could not be written at stop");
        }
        // Bounded: a writer retrying a failing store with a full queue must not hold the stop.
        if tokio::time::timeout(Duration::from_secs(2), self.gateway.audit_suppressed())
            .await
            .is_err()
        {
            tracing::error!("the count of suppressed refusals could not be queued at stop");
        }
        let Running {
            gateway,
            audit_task,
            ..
        } = self;
        drop(gateway);
        // The writer ends once every sender (held by the gateway state) is gone, or once it has
        // written to the log what the store would not take.
        if tokio::time::timeout(AUDIT_STOP_WAIT, audit_task)
            .await
            .is_err()
        {
            tracing::error!(wait = ?AUDIT_STOP_WAIT, "audit writer did not finish in time");
        }
    }
}

/// Largest number of queued decisions written in one transaction.
const AUDIT_BATCH: usize = 512;

/// How long the audit writer lets decisions gather after the first one arrives (group commit):
/// a steady stream of requests then shares one transaction per window instead of paying a commit
/// each, and an entry reaches the store within about this long after its decision.
const AUDIT_WINDOW: Duration = Duration::from_millis(5);

/// The longest wait between two attempts to write a batch the store refused.
const AUDIT_RETRY_MAX: Duration = Duration::from_secs(2);

/// How long a writer goes on trying to write what it holds once the gateway is stopping before
/// it writes the entries to the log instead.
const AUDIT_STOP_GRACE: Duration = Duration::from_secs(4);

/// The longest one attempt to append a batch lasts once the gateway is stopping: on SQLite how
/// long it waits for another writer's lock (it then fails, and is retried), always; through the
/// async driver (PostgreSQL) an attempt is abandoned ([`attempt_abandoned`]). An attempt begun
/// just before the stop's grace ends must still end before the stop stops waiting.
const AUDIT_ATTEMPT_LIMIT: Duration = Duration::from_secs(5);

/// How long the stop waits for the audit writer: the grace, one last attempt, and a margin for
/// the steps of the stop before it.
const AUDIT_STOP_WAIT: Duration = Duration::from_secs(12);

/// Why entries are written to the log instead of the store.
#[derive(Clone, Copy, Debug)]
enum Unwritten {
    /// The store refused them until the grace was over.
    Refused,
    /// The store had not answered when the grace was over (the attempt was abandoned: it may
    /// or may not have been committed).
    Unanswered,
    /// Still queued behind those, never tried.
    Queued,
    /// The writer had stopped when they were to be queued.
    WriterGone,
}

/// Entries the store did not take when the gateway stopped: written to the log, one line each
/// (an entry holds no secret: tokens by id, bodies by digest), so that they outlive the process
/// rather than go with it; `blastwall log verify` does not see them, the operator does.
fn log_unwritten(records: Vec<AuditRecord>, why: Unwritten) {
    let n = records.len();
    if records.is_empty() {
        return;
    }
    let message = match why {
        Unwritten::Refused => {
            "audit entry not written: the store refused it until the gateway stopped"
        }
        Unwritten::Unanswered => {
            "audit entry not confirmed written: the store did not answer before the gateway stopped"
        }
        Unwritten::Queued => {
            "audit entry not written: it was queued behind entries the store had not taken when the gateway stopped"
        }
        Unwritten::WriterGone => "audit entry not written: the audit writer had stopped",
    };
    for r in records {
        tracing::error!(
            at = %r.at,
            actor = %r.actor,
            action = %r.action,
            env = r.env.as_deref().unwrap_or("-"),
            target = r.target.as_deref().unwrap_or("-"),
            detail = %r.detail,
            "{message}"
        );
    }
    tracing::error!(
        entries = n,
        "the gateway stopped with audit entries its store would not take; they are in this log, one line each"
    );
}

/// When a writer stops trying the store: [`AUDIT_STOP_GRACE`] after the stop began (`None`
/// while it has not).
fn stop_deadline(stopping: &watch::Receiver<Option<Instant>>) -> Option<Instant> {
    stopping.borrow().map(|at| at + AUDIT_STOP_GRACE)
}

/// How long to wait before the next attempt: `wait`, but never past the stop's deadline.
fn retry_pause(wait: Duration, deadline: Option<Instant>) -> Duration {
    deadline.map_or(wait, |d| {
        wait.min(d.saturating_duration_since(Instant::now()))
    })
}

/// Completes when an attempt begun at `started` is abandoned: never while the gateway is not
/// stopping (an abandoned attempt may have been committed, and would be appended twice); once
/// it is, [`AUDIT_ATTEMPT_LIMIT`] after it began, but not before the stop's deadline nor later
/// than one limit after it, so that every attempt ends before the stop stops waiting.
async fn attempt_abandoned(mut stopping: watch::Receiver<Option<Instant>>, started: Instant) {
    let at = match stopping.wait_for(Option::is_some).await {
        Ok(at) => *at,
        Err(_) => None,
    };
    let Some(at) = at else {
        return std::future::pending().await;
    };
    let deadline = at + AUDIT_STOP_GRACE;
    let cutoff = (started + AUDIT_ATTEMPT_LIMIT).clamp(deadline, deadline + AUDIT_ATTEMPT_LIMIT);
    tokio::time::sleep_until(cutoff.into()).await;
}

/// Closes the queue and takes everything still in it, in order, including what a sender that
/// had already reserved room puts there after the close (a sender that had not is refused, and
/// logs its entry itself).
async fn close_and_drain(rx: &mut mpsc::Receiver<AuditRecord>) -> Vec<AuditRecord> {
    rx.close();
    let mut all = Vec::new();
    while let Some(r) = rx.recv().await {
        all.push(r);
    }
    all
}

/// [`close_and_drain`] for the writer's own thread.
fn close_and_drain_blocking(rx: &mut mpsc::Receiver<AuditRecord>) -> Vec<AuditRecord> {
    rx.close();
    let mut all = Vec::new();
    while let Some(r) = rx.blocking_recv() {
        all.push(r);
    }
    all
}

/// Writes queued audit entries in order, a window's worth at a time in one transaction; signs a
/// checkpoint when the queue closes.
///
/// A batch the store refuses is retried until it is written, never dropped, and while it is not,
/// `failing` is set: the gateway then forwards nothing (503 `audit_unavailable`), since it could
/// not record what it forwarded. Once the gateway has been stopping for [`AUDIT_STOP_GRACE`]
/// and the store still refuses (or has not answered) the entries still held go to the log
/// instead ([`log_unwritten`]). A checkpoint that cannot be signed is logged and left to the
/// next one (signing it again would mean appending the batch again).
async fn audit_writer(
    auditor: Auditor,
    mut rx: mpsc::Receiver<AuditRecord>,
    failing: Arc<AtomicBool>,
    stopping: watch::Receiver<Option<Instant>>,
) {
    let mut open = FailClosed {
        failing: &failing,
        ended: false,
    };
    let mut batch = Vec::with_capacity(AUDIT_BATCH);
    while rx.recv_many(&mut batch, AUDIT_BATCH).await > 0 {
        if batch.len() < AUDIT_BATCH {
            // Sleep rather than wait on the queue, so the writer is not woken by every decision.
            tokio::time::sleep(AUDIT_WINDOW).await;
            while batch.len() < AUDIT_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
        }
        let mut wait = Duration::from_millis(50);
        let entries = loop {
            let attempt = tokio::select! {
                biased;
                r = auditor.store().audit_append_batch(batch.clone()) => r,
                () = attempt_abandoned(stopping.clone(), Instant::now()) => {
                    log_unwritten(std::mem::take(&mut batch), Unwritten::Unanswered);
                    log_unwritten(close_and_drain(&mut rx).await, Unwritten::Queued);
                    open.ended = true;
                    return;
                }
            };
            match attempt {
                Ok(entries) => break entries,
                Err(e) => {
                    if !failing.swap(true, Ordering::SeqCst) {
                        tracing::error!(error = %blastwall_core::error_chain(&e), entries = batch.len(), "audit append failed; forwarding nothing until it succeeds");
                    }
                    let deadline = stop_deadline(&stopping);
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        log_unwritten(std::mem::take(&mut batch), Unwritten::Refused);
                        log_unwritten(close_and_drain(&mut rx).await, Unwritten::Queued);
                        open.ended = true;
                        return;
                    }
                    tokio::time::sleep(retry_pause(wait, deadline)).await;
                    wait = (wait * 2).min(AUDIT_RETRY_MAX);
                }
            }
        };
        if failing.swap(false, Ordering::SeqCst) {
            tracing::warn!("audit log writable again; forwarding resumes");
        }
        // Signing checkpoints writes to the store too: bounded the same way at a stop, so a
        // store that hangs after taking the batch does not keep the queue from the log.
        let signed = async {
            for entry in &entries {
                if let Err(e) = auditor.record(entry).await {
                    tracing::error!(error = %e, seq = entry.seq, "audit checkpoint not signed; the next one covers this entry");
                }
            }
        };
        tokio::select! {
            biased;
            () = signed => {}
            () = attempt_abandoned(stopping.clone(), Instant::now()) => {
                tracing::error!("an audit checkpoint was not signed before the gateway stopped");
                log_unwritten(close_and_drain(&mut rx).await, Unwritten::Queued);
                open.ended = true;
                return;
            }
        }
        batch.clear();
    }
    open.ended = true;
    if let Err(e) = auditor.finish().await {
        tracing::error!(error = %e, "could not sign the closing audit checkpoint");
    }
}

/// Held by an audit writer while it runs: dropped before the writer ended normally (its queue
/// closed), that is when it panicked or was cancelled, it sets `failing` (nothing more can be
/// audited, so nothing more is forwarded) before the queue's reader goes.
struct FailClosed<'a> {
    failing: &'a AtomicBool,
    ended: bool,
}

impl Drop for FailClosed<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.failing.store(true, Ordering::SeqCst);
            tracing::error!("the audit writer stopped unexpectedly; forwarding nothing");
        }
    }
}

/// Starts [`audit_thread`] on a thread of its own; the task returned ends once it has, after
/// signing the closing checkpoint.
fn spawn_audit_thread(
    auditor: Auditor,
    log: SyncAuditLog,
    rx: mpsc::Receiver<AuditRecord>,
    failing: Arc<AtomicBool>,
    stopping: watch::Receiver<Option<Instant>>,
) -> Result<tokio::task::JoinHandle<()>, GatewayError> {
    let (done, finished) = tokio::sync::oneshot::channel::<bool>();
    let writer = auditor.clone();
    std::thread::Builder::new()
        .name("audit-writer".to_owned())
        .spawn(move || {
            let wrote_all = audit_thread(&writer, log, rx, &failing, &stopping);
            // Nobody listens once `stop` has given up waiting; nothing to do then.
            done.send(wrote_all).ok();
        })
        .map_err(GatewayError::AuditWriter)?;
    Ok(tokio::spawn(async move {
        match finished.await {
            // The store would not take the last entries (they are in the log): it will not
            // take a checkpoint either.
            Ok(false) => return,
            Ok(true) => {}
            // The thread ended without saying so: it panicked, and its guard has set `failing`.
            // The closing checkpoint is still worth signing over what it wrote.
            Err(_) => tracing::debug!("the audit writer thread panicked"),
        }
        if let Err(e) = auditor.finish().await {
            tracing::error!(error = %e, "could not sign the closing audit checkpoint");
        }
    }))
}

/// [`audit_writer`] for a store with a synchronous connection (SQLite), on a thread of its own:
/// the same window, batches, retries and `failing` flag, but a batch is one transaction run by
/// this thread (its checkpoints included) instead of a series of statements handed to the async
/// driver's thread and back. Ends when the queue closes (`true`), or when the stop's grace is
/// over with entries the store would not take, which go to the log (`false`).
fn audit_thread(
    auditor: &Auditor,
    mut log: SyncAuditLog,
    mut rx: mpsc::Receiver<AuditRecord>,
    failing: &AtomicBool,
    stopping: &watch::Receiver<Option<Instant>>,
) -> bool {
    let mut open = FailClosed {
        failing,
        ended: false,
    };
    let drain = |rx: &mut mpsc::Receiver<AuditRecord>, batch: &mut Vec<AuditRecord>| {
        while batch.len() < AUDIT_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
    };
    let mut batch = Vec::with_capacity(AUDIT_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        drain(&mut rx, &mut batch);
        if batch.len() < AUDIT_BATCH {
            // Sleep rather than wait on the queue, so the writer is not woken by every decision.
            std::thread::sleep(AUDIT_WINDOW);
            drain(&mut rx, &mut batch);
        }
        let mut wait = Duration::from_millis(50);
        // Each attempt ends within AUDIT_ATTEMPT_LIMIT (the connection's busy timeout).
        while let Err(e) = auditor.append_batch_sync(&mut log, &batch) {
            if !failing.swap(true, Ordering::SeqCst) {
                tracing::error!(error = %blastwall_core::error_chain(&e), entries = batch.len(), "audit append failed; forwarding nothing until it succeeds");
            }
            let deadline = stop_deadline(stopping);
            if deadline.is_some_and(|d| Instant::now() >= d) {
                log_unwritten(std::mem::take(&mut batch), Unwritten::Refused);
                log_unwritten(close_and_drain_blocking(&mut rx), Unwritten::Queued);
                open.ended = true;
                return false;
            }
            std::thread::sleep(retry_pause(wait, deadline));
            wait = (wait * 2).min(AUDIT_RETRY_MAX);
        }
        if failing.swap(false, Ordering::SeqCst) {
            tracing::warn!("audit log writable again; forwarding resumes");
        }
        batch.clear();
    }
    open.ended = true;
    true
}

async fn healthz(State(gw): State<Gateway>) -> Response {
    if gw.inner.audit_failing.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "audit log unwritable\n").into_response();
    }
    match gw.inner.store.env_list().await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check: store unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "store unreachable\n").into_response()
        }
    }
}

async fn metrics(State(gw): State<Gateway>) -> Response {
    let mut r = Response::new(Body::from(gw.inner.metrics.encode()));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_that_ends_abnormally_stops_forwarding() {
        let failing = AtomicBool::new(false);
        drop(FailClosed {
            failing: &failing,
            ended: false,
        });
        assert!(
            failing.load(Ordering::SeqCst),
            "a panic or a cancel fails closed"
        );

        let failing = AtomicBool::new(false);
        drop(FailClosed {
            failing: &failing,
            ended: true,
        });
        assert!(
            !failing.load(Ordering::SeqCst),
            "a writer whose queue closed ends cleanly"
        );
    }

    #[test]
    fn a_panicking_writer_thread_fails_closed() {
        let failing = Arc::new(AtomicBool::new(false));
        let f = failing.clone();
        let ended = std::thread::spawn(move || {
            let _open = FailClosed {
                failing: &f,
                ended: false,
            };
            panic!("a bug in the writer");
        })
        .join();
        assert!(ended.is_err());
        assert!(failing.load(Ordering::SeqCst));
    }
}
