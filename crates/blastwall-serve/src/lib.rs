//! Serving HTTP to clients that may be slow or hostile, for both of Blastwall's servers (the
//! gateway and the backup vault): one accept loop with a cap on open connections, time limits on
//! a client's first byte, its handshake and every request head, and a graceful drain at shutdown.
//!
//! What a connection carries (plain TCP, or TLS after a handshake) is the caller's
//! [`Handshake`]; what its requests do is the caller's router. Bodies are the router's business:
//! a handler that reads one must bound the time it waits for it (the gateway buffers with a
//! deadline, the vault streams with an idle limit).
//!
//! Connections are served on the caller's runtime or on worker threads, one per CPU this
//! process may run on, each with a single-threaded runtime ([`Threads`]); the accept loop stays
//! on the caller's runtime.
//!
//! Without these limits (`axum::serve` sets none), a client that opens connections and sends
//! nothing, or half a request head, holds a file descriptor and a task each for as long as it
//! likes, and enough of them stop the server (slowloris).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// The limits a server puts on its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How long a client may take to send its first byte, to finish its handshake, and to send
    /// each request head (which also closes keep-alive connections idle that long); for HTTP/2,
    /// how often it is pinged and how long it has to answer. A connection of either protocol
    /// with no request in flight and none begun for between one and two of these is closed
    /// (HTTP/2 pings alone would keep an idle connection open for ever; nothing is closed
    /// while output waits for the client), and so is one whose client takes less than a
    /// kilobyte of waiting output in as long (hyper has no time limit on writes).
    pub client_timeout: Duration,
    /// Most connections open at once; one past it is closed as soon as it is accepted.
    pub max_connections: usize,
    /// At shutdown, how long requests in flight get to finish before their connections are
    /// closed.
    pub drain: Duration,
}

/// Where connections are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// On worker threads, one per CPU this process may run on, each with a single-threaded
    /// runtime (a tenth to a fifth less CPU per request for the gateway than tokio's
    /// work-stealing runtime). Handlers must not block, and must not open connections that
    /// outlive the server (a socket belongs to the runtime that opened it, and the workers stop
    /// with the server).
    PerCpu,
    /// On the caller's runtime.
    Caller,
}

/// Turns an accepted TCP connection into the stream HTTP is served on.
pub trait Handshake: Clone + Send + Sync + 'static {
    /// The stream HTTP is served on.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Prepares `tcp`, whose first byte `first` has arrived (peeked, still unread). `None` means
    /// the connection was dealt with here (refused or failed) and is closed. It runs within the
    /// client's time limit and is abandoned when the server stops.
    fn handshake(&self, tcp: TcpStream, first: u8)
    -> impl Future<Output = Option<Self::Io>> + Send;
}

/// Plain HTTP: the TCP connection as it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct Plain;

impl Handshake for Plain {
    type Io = TcpStream;

    async fn handshake(&self, tcp: TcpStream, _first: u8) -> Option<TcpStream> {
        Some(tcp)
    }
}

/// How a server's connections ended at shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every request in flight finished.
    Clean,
    /// Some connections were still busy after [`Limits::drain`] and were closed.
    Cut,
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains.
///
/// Each connection is served by hyper (HTTP/1.1, or HTTP/2 with prior knowledge or ALPN) after
/// `handshake`. `on_full` is called for each connection refused because
/// [`Limits::max_connections`] are open (for a metric). The router is dropped before the drain
/// ends, so state it holds (a queue whose consumer waits for it to close) is released once the
/// last connection is.
pub async fn serve<H: Handshake>(
    listener: TcpListener,
    handshake: H,
    app: Router,
    limits: Limits,
    threads: Threads,
    on_full: impl Fn() + Send,
    shutdown: impl Future<Output = ()> + Send,
) -> Drained {
    let tasks = tokio_util::task::TaskTracker::new();
    // hyper runs each HTTP/2 stream as a task of its own: tracked too, so a drain waits for them.
    let mut builder = hyper_util::server::conn::auto::Builder::new(Spawner(tasks.clone()));
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.client_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.client_timeout)
        .keep_alive_timeout(limits.client_timeout);
    let workers = match threads {
        Threads::PerCpu => Workers::start(),
        Threads::Caller => None,
    };
    let mut next_worker = 0usize;
    let permits = Arc::new(tokio::sync::Semaphore::new(
        limits
            .max_connections
            .min(tokio::sync::Semaphore::MAX_PERMITS),
    ));
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let (cut_tx, cut_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            on_full();
            tracing::warn!(
                max = limits.max_connections,
                "connection refused: too many open"
            );
            drop(stream);
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let activity = Arc::new(Activity::default());
        let service = Tracked {
            inner: TowerToHyperService::new(app.clone()),
            activity: activity.clone(),
        };
        let (builder, handshake) = (builder.clone(), handshake.clone());
        let mut closing = closing_rx.clone();
        let mut cut = cut_rx.clone();
        // A worker's runtime takes the connection over from the accepting one's reactor.
        let (stream, worker) = match &workers {
            Some(w) => match stream.into_std() {
                Ok(std) => {
                    next_worker = next_worker.wrapping_add(1);
                    (Conn::Moving(std), w.pick(next_worker))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "could not hand a connection to a worker");
                    continue;
                }
            },
            None => (Conn::Here(stream), None),
        };
        let task = tasks.track_future(async move {
            let stream = match stream {
                Conn::Here(s) => s,
                Conn::Moving(std) => match TcpStream::from_std(std) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(error = %e, "a worker could not take a connection");
                        return;
                    }
                },
            };
            // hyper reads the first bytes to tell HTTP/1 from HTTP/2 with no time limit of its
            // own (its head timer starts after), and a handshake has none either: a client that
            // sends nothing, or half a handshake, is closed here, and at once when the server
            // stops (the task holds the router's state).
            let opened = tokio::select! {
                io = tokio::time::timeout(limits.client_timeout, open(stream, &handshake)) => {
                    io.ok().flatten()
                }
                _ = closing.changed() => None,
            };
            if let Some(io) = opened {
                let io = Metered {
                    inner: io,
                    activity: activity.clone(),
                };
                let conn = builder.serve_connection(TokioIo::new(io), service);
                let mut conn = std::pin::pin!(conn);
                let limit = limits.client_timeout;
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + limit, limit);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut seen = activity.snapshot();
                // Idle or stopping: no new requests, those in flight finish, then it closes.
                let mut winding_down = false;
                loop {
                    tokio::select! {
                        ended = conn.as_mut() => {
                            if let Err(e) = ended {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                            break;
                        }
                        _ = tick.tick() => {
                            let now = activity.snapshot();
                            if now.stalled_since(&seen, winding_down) {
                                // Output waits for the client and it took almost none of it
                                // for a whole limit (an HTTP/2 window kept shut, a socket
                                // never read): hyper has no time limit on writes, and a
                                // graceful close would wait for it.
                                tracing::debug!("connection closed: the client takes no response");
                                break;
                            }
                            if !winding_down && now.idle_since(&seen) {
                                conn.as_mut().graceful_shutdown();
                                winding_down = true;
                            }
                            seen = now;
                        }
                        _ = closing.changed(), if !winding_down => {
                            conn.as_mut().graceful_shutdown();
                            winding_down = true;
                        }
                        _ = cut.changed() => break,
                    }
                }
            }
            drop(permit);
        });
        match worker {
            Some(handle) => drop(handle.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
    }
    drop(listener);
    // Connections that have not sent their first byte, or not finished their handshake, end
    // now; the others take no new request and close once those in flight are answered.
    let _ = closing_tx.send(true);
    drop(app);
    tasks.close();
    // In-flight requests finish; connections still busy past the limit are dropped.
    let drained = if tokio::time::timeout(limits.drain, tasks.wait())
        .await
        .is_ok()
    {
        Drained::Clean
    } else {
        tracing::warn!("connections still open at shutdown were closed");
        // Connections served on the caller's runtime end here (a worker's end with it).
        let _ = cut_tx.send(true);
        if tokio::time::timeout(CUT_WAIT, tasks.wait()).await.is_err() {
            tracing::warn!("requests of closed connections were still running");
        }
        Drained::Cut
    };
    if let Some(w) = workers {
        w.stop().await;
    }
    drained
}

/// After a drain runs out, how long the closed connections' tasks get to end.
const CUT_WAIT: Duration = Duration::from_secs(1);

/// hyper's executor for HTTP/2 streams: tokio's, with every task tracked.
#[derive(Clone)]
struct Spawner(tokio_util::task::TaskTracker);

impl<F> hyper::rt::Executor<F> for Spawner
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        drop(tokio::spawn(self.0.track_future(fut)));
    }
}

/// What a connection is doing: requests in flight (a request counts until its response body
/// has been sent or dropped), how many it has begun, how many responses wait for the client to
/// take what they hold, how often hyper asked a response for more, the bytes written to the
/// client, and whether the last write or flush found the client's side full (hyper then holds
/// output it could not send).
#[derive(Debug, Default)]
struct Activity {
    in_flight: AtomicUsize,
    begun: AtomicU64,
    waiting_on_client: AtomicUsize,
    progress: AtomicU64,
    written: AtomicU64,
    blocked: AtomicBool,
}

/// [`Activity`] at one moment (taken between two polls of the connection, which runs in the
/// same task: hyper has then written, or tried to write, all it holds).
#[derive(Clone, Copy, Debug)]
struct Snapshot {
    in_flight: usize,
    begun: u64,
    waiting_on_client: usize,
    progress: u64,
    written: u64,
    blocked: bool,
}

/// The least output a client must take per client timeout while output waits for it: less
/// counts as taking none (HTTP/2 pings alone move a few bytes).
const MIN_TAKEN: u64 = 1024;

impl Activity {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            begun: self.begun.load(Ordering::Relaxed),
            waiting_on_client: self.waiting_on_client.load(Ordering::Relaxed),
            progress: self.progress.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            blocked: self.blocked.load(Ordering::Relaxed),
        }
    }
}

impl Snapshot {
    /// No request in flight now or at `before`, none begun in between, and no output held back
    /// (a close now loses nothing the client was sent).
    fn idle_since(&self, before: &Snapshot) -> bool {
        self.in_flight == 0 && before.in_flight == 0 && self.begun == before.begun && !self.blocked
    }

    /// Output has waited for the client since `before`, and it took less than [`MIN_TAKEN`] of
    /// it: a response whose next frame hyper has not asked for (an HTTP/2 window kept shut),
    /// output hyper could not write (a socket never read), or, `winding_down` with nothing in
    /// flight, the rest of a stream the client does not take (an HTTP/2 window kept at a byte).
    fn stalled_since(&self, before: &Snapshot, winding_down: bool) -> bool {
        if self.written.saturating_sub(before.written) >= MIN_TAKEN {
            return false;
        }
        let body_waits = self.waiting_on_client > 0
            && before.waiting_on_client > 0
            && self.progress == before.progress;
        let writes_wait = self.blocked && before.blocked;
        let leftover = winding_down && self.in_flight == 0 && before.in_flight == 0;
        body_waits || writes_wait || leftover
    }
}

pin_project_lite::pin_project! {
    /// The connection's stream, counting what is written to the client and noting when the
    /// client's side is full.
    struct Metered<I> {
        #[pin]
        inner: I,
        activity: Arc<Activity>,
    }
}

impl<I> Metered<I> {
    fn note(activity: &Activity, polled: &Poll<std::io::Result<usize>>) {
        match polled {
            Poll::Ready(Ok(n)) => {
                activity.written.fetch_add(*n as u64, Ordering::Relaxed);
                activity.blocked.store(false, Ordering::Relaxed);
            }
            Poll::Pending => activity.blocked.store(true, Ordering::Relaxed),
            Poll::Ready(Err(_)) => {}
        }
    }
}

impl<I: AsyncRead> AsyncRead for Metered<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<I: AsyncWrite> AsyncWrite for Metered<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        Self::note(this.activity, &polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        Self::note(this.activity, &polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let polled = this.inner.poll_flush(cx);
        match polled {
            Poll::Ready(Ok(())) => this.activity.blocked.store(false, Ordering::Relaxed),
            Poll::Pending => this.activity.blocked.store(true, Ordering::Relaxed),
            Poll::Ready(Err(_)) => {}
        }
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// One request in flight on a connection.
struct Active(Arc<Activity>);

impl Active {
    fn begin(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.begun.fetch_add(1, Ordering::Relaxed);
        Self(activity.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's service, counting its requests in flight into its [`Activity`].
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B, R> hyper::service::Service<R> for Tracked<S>
where
    S: hyper::service::Service<R, Response = http::Response<B>>,
    B: http_body::Body,
{
    type Response = http::Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, req: R) -> Self::Future {
        TrackedFuture {
            active: Some(Active::begin(&self.activity)),
            inner: self.inner.call(req),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request being answered; its response body carries the request's [`Active`] on.
    struct TrackedFuture<F> {
        active: Option<Active>,
        #[pin]
        inner: F,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: http_body::Body,
{
    type Output = Result<http::Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(resp)) => {
                let active = this.active.take();
                Poll::Ready(Ok(resp.map(|inner| {
                    let mut body = TrackedBody {
                        inner,
                        active,
                        waiting: false,
                    };
                    // Its head goes out now; its first bytes wait for the client.
                    let unfinished = !http_body::Body::is_end_stream(&body.inner);
                    body.set_waiting(unfinished);
                    body
                })))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body; the request is in flight until it is dropped. Between handing hyper a
    /// frame (or the head) and hyper asking for the next, it waits for the client.
    struct TrackedBody<B> {
        #[pin]
        inner: B,
        active: Option<Active>,
        waiting: bool,
    }

    impl<B> PinnedDrop for TrackedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            update_waiting(this.waiting, this.active.as_ref(), false);
        }
    }
}

impl<B> TrackedBody<B> {
    fn set_waiting(&mut self, waiting: bool) {
        update_waiting(&mut self.waiting, self.active.as_ref(), waiting);
    }
}

/// Moves one response in or out of its connection's count of those waiting for the client.
fn update_waiting(flag: &mut bool, active: Option<&Active>, waiting: bool) {
    if *flag == waiting {
        return;
    }
    *flag = waiting;
    if let Some(a) = active {
        if waiting {
            a.0.waiting_on_client.fetch_add(1, Ordering::Relaxed);
        } else {
            a.0.waiting_on_client.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<B: http_body::Body> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if let Some(a) = this.active.as_ref() {
            a.0.progress.fetch_add(1, Ordering::Relaxed);
        }
        let polled = this.inner.poll_frame(cx);
        // A frame handed over waits for the client; a body with nothing ready waits for its
        // source (an upstream), which is not the client's doing.
        let waiting = matches!(polled, Poll::Ready(Some(Ok(_))));
        update_waiting(this.waiting, this.active.as_ref(), waiting);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A connection on its way to the task that serves it.
enum Conn {
    /// Registered with the accepting runtime, which serves it.
    Here(TcpStream),
    /// Taken off the accepting runtime's reactor, for a worker's.
    Moving(std::net::TcpStream),
}

/// One thread per CPU this process may run on, each with a single-threaded runtime that serves
/// the connections handed to it. A connection's requests then run on one thread, with no
/// work-stealing scheduler between them: on this machine the same gateway spent about a tenth
/// less CPU per request than on tokio's multi-thread runtime with as many workers
/// (docs/benchmarks.md, "Gateway").
struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    stopped: Vec<tokio::sync::oneshot::Receiver<()>>,
}

impl Workers {
    /// Starts one worker per usable CPU; `None` when not one could start (the caller's runtime
    /// serves then). A worker that cannot start is logged and left out.
    fn start() -> Option<Self> {
        let n = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let mut workers = Self {
            handles: Vec::with_capacity(n),
            stops: Vec::with_capacity(n),
            stopped: Vec::with_capacity(n),
        };
        for i in 0..n {
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            let (handle_tx, handle_rx) = std::sync::mpsc::channel();
            // The runtime is built and dropped on its own thread: a runtime may not be dropped
            // from inside another one.
            let spawned = std::thread::Builder::new()
                .name(format!("serve-{i}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = handle_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = handle_tx.send(Ok(rt.handle().clone()));
                    rt.block_on(async {
                        let _ = stop_rx.await;
                    });
                    // Tasks still there (connections cut at the drain's end, upstream
                    // connections of a pool) are dropped here, before the caller goes on.
                    drop(rt);
                    let _ = done_tx.send(());
                });
            let started = spawned
                .map_err(|e| e.to_string())
                .and_then(|_| match handle_rx.recv() {
                    Ok(Ok(h)) => Ok(h),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("the worker thread ended at start".to_owned()),
                });
            match started {
                Ok(handle) => {
                    workers.handles.push(handle);
                    workers.stops.push(stop_tx);
                    workers.stopped.push(done_rx);
                }
                Err(e) => {
                    tracing::warn!(worker = i, error = %e, "a connection worker could not start")
                }
            }
        }
        (!workers.handles.is_empty()).then_some(workers)
    }

    fn pick(&self, n: usize) -> Option<&tokio::runtime::Handle> {
        self.handles.get(n % self.handles.len().max(1))
    }

    /// Stops every worker and waits until each has dropped its tasks.
    async fn stop(self) {
        drop(self.handles);
        for stop in self.stops {
            let _ = stop.send(());
        }
        for done in self.stopped {
            let _ = done.await;
        }
    }
}

/// Waits for the connection's first byte, then runs the handshake.
async fn open<H: Handshake>(stream: TcpStream, handshake: &H) -> Option<H::Io> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) => handshake.handshake(stream, first[0]).await,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Instant;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;

    use super::*;

    struct Server {
        addr: SocketAddr,
        stop: oneshot::Sender<()>,
        done: tokio::task::JoinHandle<Drained>,
        refused: Arc<std::sync::atomic::AtomicUsize>,
    }

    async fn start<H: Handshake>(handshake: H, limits: Limits) -> Server {
        start_on(handshake, limits, Threads::PerCpu).await
    }

    async fn start_on<H: Handshake>(handshake: H, limits: Limits, threads: Threads) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/", get(|| async { "hello\n" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(1_500)).await;
                    "late\n"
                }),
            )
            .route("/big", get(|| async { vec![b'x'; 8 << 20] }))
            .route(
                "/stream",
                get(|| async { axum::body::Body::new(Frames(STREAM_FRAMES)) }),
            );
        let (stop, stopped) = oneshot::channel::<()>();
        let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = refused.clone();
        let done = tokio::spawn(serve(
            listener,
            handshake,
            app,
            limits,
            threads,
            move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            },
            async {
                let _ = stopped.await;
            },
        ));
        Server {
            addr,
            stop,
            done,
            refused,
        }
    }

    fn limits(client_timeout_ms: u64, max_connections: usize) -> Limits {
        Limits {
            client_timeout: Duration::from_millis(client_timeout_ms),
            max_connections,
            drain: Duration::from_secs(5),
        }
    }

    /// Reads until the peer closes, or resets (a close with our bytes unread); 10 s without
    /// either fails the test.
    async fn read_to_close(tcp: &mut TcpStream) -> Vec<u8> {
        let mut seen = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut seen));
        match read.await.unwrap() {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }
        seen
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";

    /// `/stream`: this many frames of [`STREAM_FRAME`] bytes, each ready at once.
    const STREAM_FRAMES: usize = 4;
    const STREAM_FRAME: usize = 256 * 1024;

    struct Frames(usize);

    impl http_body::Body for Frames {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
            if self.0 == 0 {
                return Poll::Ready(None);
            }
            self.0 -= 1;
            Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from(
                vec![b'x'; STREAM_FRAME],
            )))))
        }
    }

    #[tokio::test]
    async fn a_request_is_served() {
        let s = start(Plain, limits(2_000, 4)).await;
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = String::from_utf8(read_to_close(&mut tcp).await).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("hello\n"), "{answer}");
        s.stop.send(()).unwrap();
        assert_eq!(s.done.await.unwrap(), Drained::Clean);
    }

    #[tokio::test]
    async fn a_request_is_served_on_the_callers_runtime() {
        let s = start_on(Plain, limits(2_000, 4), Threads::Caller).await;
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = String::from_utf8(read_to_close(&mut tcp).await).unwrap();
        assert!(answer.ends_with("hello\n"), "{answer}");
        // A silent client on the caller's runtime does not hold the stop either.
        let _silent = TcpStream::connect(s.addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.stop.send(()).unwrap();
        assert_eq!(s.done.await.unwrap(), Drained::Clean);
    }

    /// An HTTP/2 client that answers pings but sends no request is closed after one to two
    /// limits; a request slower than that is not cut short.
    #[tokio::test]
    async fn an_idle_http2_connection_is_closed() {
        use http_body_util::{BodyExt, Empty};
        use hyper::body::Bytes;

        let s = start(Plain, limits(400, 4)).await;
        let tcp = TcpStream::connect(s.addr).await.unwrap();
        let (mut h2, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(tcp),
        )
        .await
        .unwrap();
        let conn = tokio::spawn(conn);
        let get = |path: &str| {
            http::Request::get(format!("http://x{path}"))
                .body(Empty::<Bytes>::new())
                .unwrap()
        };
        let answer = h2.send_request(get("/slow")).await.unwrap();
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"late\n");
        let answer = h2.send_request(get("/")).await.unwrap();
        assert_eq!(answer.status(), 200);
        let idle_since = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("the idle connection stays open")
            .unwrap()
            .unwrap();
        let took = idle_since.elapsed();
        assert!(took >= Duration::from_millis(350), "{took:?}");
        assert!(took < Duration::from_millis(1_500), "{took:?}");
        s.stop.send(()).unwrap();
        assert_eq!(s.done.await.unwrap(), Drained::Clean);
    }

    /// Whether the one place of a server capped at one connection is free again: a plain request
    /// is answered (the place is freed on the worker a moment after the close is seen).
    async fn place_frees(addr: SocketAddr) -> bool {
        for _ in 0..50 {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            let _ = tcp
                .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await;
            if String::from_utf8_lossy(&read_to_close(&mut tcp).await).ends_with("hello\n") {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// An HTTP/2 client that keeps its window shut (at zero, or at one byte) takes the response
    /// head but never its body: the connection is closed after one to two limits rather than
    /// held for ever (no request needed a credential), and its place is free again.
    #[tokio::test]
    async fn a_client_that_takes_no_response_body_is_closed() {
        for window in [0, 1] {
            let s = start(Plain, limits(400, 1)).await;
            let tcp = TcpStream::connect(s.addr).await.unwrap();
            let (h2, conn) = h2::client::Builder::new()
                .initial_window_size(window)
                .handshake::<_, bytes::Bytes>(tcp)
                .await
                .unwrap();
            let conn = tokio::spawn(conn);
            let mut h2 = h2.ready().await.unwrap();
            let req = http::Request::get(format!("http://{}/", s.addr))
                .body(())
                .unwrap();
            let (answer, _) = h2.send_request(req, true).unwrap();
            let answer = answer.await.unwrap();
            assert_eq!(answer.status(), 200);
            let stalled_since = Instant::now();
            let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
            assert!(
                ended.is_ok(),
                "window {window}: the stalled connection stays open"
            );
            let took = stalled_since.elapsed();
            assert!(
                took < Duration::from_millis(2_000),
                "window {window}: {took:?}"
            );
            drop(answer);
            assert!(
                place_frees(s.addr).await,
                "window {window}: the place stays taken"
            );
            s.stop.send(()).unwrap();
            assert_eq!(s.done.await.unwrap(), Drained::Clean);
        }
    }

    /// An HTTP/1.1 client that asks for a large response and reads none of it holds hyper's
    /// output (the body itself is already handed over): closed after one to two limits.
    #[tokio::test]
    async fn a_client_that_reads_nothing_of_a_large_response_is_closed() {
        let s = start(Plain, limits(400, 1)).await;
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let mut tcp = sock.connect(s.addr).await.unwrap();
        tcp.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert!(place_frees(s.addr).await, "the place stays taken");
        drop(tcp);
        s.stop.send(()).unwrap();
        assert_eq!(s.done.await.unwrap(), Drained::Clean);
    }

    /// A client reading a large response slowly (but more than a kilobyte per limit) gets all
    /// of it: neither the idle close nor the stall check cuts it short.
    #[tokio::test]
    async fn a_slow_reader_gets_the_whole_response() {
        let s = start(Plain, limits(300, 4)).await;
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(16 * 1024).unwrap();
        let mut tcp = sock.connect(s.addr).await.unwrap();
        // Kept alive, as clients do: the idle check then runs while the tail is still queued.
        tcp.write_all(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        while !got.ends_with(b"\r\n0\r\n\r\n") {
            match tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => panic!("after {} bytes: {e}", got.len()),
                Err(_) => panic!("no data for 10 s after {} bytes", got.len()),
            }
            // About 250 KB/s: the last of it stays in hyper's buffer across several checks.
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        let head = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let body = &got[head..];
        // Chunked: the frames' bytes, framed; count the payload.
        let payload = body.iter().filter(|&&b| b == b'x').count();
        assert_eq!(
            payload,
            STREAM_FRAMES * STREAM_FRAME,
            "the response was cut short"
        );
        s.stop.send(()).unwrap();
        assert_eq!(s.done.await.unwrap(), Drained::Clean);
    }

    /// A connection is idle only after a whole limit without a request: one that ends just
    /// before a check does not make it look idle.
    #[tokio::test]
    async fn a_request_just_after_a_long_one_is_served() {
        use http_body_util::{BodyExt, Empty};
        use hyper::body::Bytes;

        let s = start(Plain, limits(400, 4)).await;
        let tcp = TcpStream::connect(s.addr).await.unwrap();
        let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        let get = |path: &str| {
            http::Request::get(path)
                .header("host", "x")
                .body(Empty::<Bytes>::new())
                .unwrap()
        };
        for pause in [0, 150, 300] {
            let a = h1.send_request(get("/slow")).await.unwrap();
            let _ = a.into_body().collect().await.unwrap();
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let b = h1.send_request(get("/")).await;
            assert!(b.is_ok(), "{pause} ms after a long request: {b:?}");
        }
        drop(h1);
        let _ = conn.await;
        s.stop.send(()).unwrap();
        assert_eq!(s.done.await.unwrap(), Drained::Clean);
    }

    /// A drain that runs out closes the connections still busy on the caller's runtime too, and
    /// the router's state is released (the gateway's audit writer waits for that).
    #[tokio::test]
    async fn a_drain_that_runs_out_closes_connections_on_the_callers_runtime() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(());
        let app = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late\n"
                }),
            )
            .layer(axum::Extension(state.clone()));
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(serve(
            listener,
            Plain,
            app,
            Limits {
                client_timeout: Duration::from_secs(5),
                max_connections: 4,
                drain: Duration::from_millis(300),
            },
            Threads::Caller,
            || {},
            async {
                let _ = stopped.await;
            },
        ));
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.send(()).unwrap();
        let started = Instant::now();
        assert_eq!(done.await.unwrap(), Drained::Cut);
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(read_to_close(&mut tcp).await, b"");
        assert_eq!(
            Arc::strong_count(&state),
            1,
            "the router's state is still held"
        );
    }

    #[tokio::test]
    async fn a_client_that_sends_nothing_is_closed_after_the_limit() {
        let s = start(Plain, limits(300, 4)).await;
        let started = Instant::now();
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        assert_eq!(read_to_close(&mut tcp).await, b"");
        assert!(started.elapsed() >= Duration::from_millis(250));
        s.stop.send(()).unwrap();
        assert_eq!(s.done.await.unwrap(), Drained::Clean);
    }

    #[tokio::test]
    async fn half_a_request_head_is_closed_after_the_limit() {
        let s = start(Plain, limits(300, 4)).await;
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        let answer = String::from_utf8(read_to_close(&mut tcp).await).unwrap();
        // hyper answers 408 before it closes.
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
        // A keep-alive connection idle past the limit after a request is closed too.
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        tcp.write_all(GET).await.unwrap();
        let answer = String::from_utf8(read_to_close(&mut tcp).await).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        s.stop.send(()).unwrap();
        assert_eq!(s.done.await.unwrap(), Drained::Clean);
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_closed_at_once_and_counted() {
        let s = start(Plain, limits(5_000, 2)).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut tcp = TcpStream::connect(s.addr).await.unwrap();
            // Served, so the connection is surely accepted and holds its place.
            tcp.write_all(GET).await.unwrap();
            let mut buf = [0u8; 12];
            tcp.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"HTTP/1.1 200");
            held.push(tcp);
        }
        let started = Instant::now();
        let mut third = TcpStream::connect(s.addr).await.unwrap();
        let _ = third.write_all(GET).await;
        let mut seen = Vec::new();
        // Closed without an answer (a reset is as good as an end of stream here).
        let _ = tokio::time::timeout(Duration::from_secs(10), third.read_to_end(&mut seen))
            .await
            .unwrap();
        assert!(seen.is_empty());
        assert!(started.elapsed() < Duration::from_secs(4));
        assert_eq!(s.refused.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A place freed is a place taken again.
        drop(held.pop());
        let mut again = None;
        for _ in 0..50 {
            let mut tcp = TcpStream::connect(s.addr).await.unwrap();
            tcp.write_all(GET).await.unwrap();
            let mut buf = [0u8; 12];
            if tcp.read_exact(&mut buf).await.is_ok() {
                again = Some(buf);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(again.as_ref().map(|b| &b[..]), Some(&b"HTTP/1.1 200"[..]));
        s.stop.send(()).unwrap();
        assert_eq!(s.done.await.unwrap(), Drained::Clean);
    }

    #[tokio::test]
    async fn a_stop_does_not_wait_for_a_silent_client() {
        let s = start(Plain, limits(60_000, 4)).await;
        let _silent = TcpStream::connect(s.addr).await.unwrap();
        // An idle keep-alive connection after a request is closed by the drain too.
        let mut idle = TcpStream::connect(s.addr).await.unwrap();
        idle.write_all(GET).await.unwrap();
        let mut buf = [0u8; 12];
        idle.read_exact(&mut buf).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        s.stop.send(()).unwrap();
        assert_eq!(s.done.await.unwrap(), Drained::Clean);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    /// A handshake that never finishes.
    #[derive(Clone)]
    struct Stuck;

    impl Handshake for Stuck {
        type Io = TcpStream;

        async fn handshake(&self, _tcp: TcpStream, _first: u8) -> Option<TcpStream> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_handshake_is_bounded_by_the_limit_and_by_the_stop() {
        let s = start(Stuck, limits(300, 4)).await;
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        tcp.write_all(b"\x16").await.unwrap();
        assert_eq!(read_to_close(&mut tcp).await, b"");
        let mut stuck = TcpStream::connect(s.addr).await.unwrap();
        stuck.write_all(b"\x16").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        s.stop.send(()).unwrap();
        assert_eq!(s.done.await.unwrap(), Drained::Clean);
        assert!(started.elapsed() < Duration::from_millis(250));
    }

    /// A handshake that refuses every connection.
    #[derive(Clone)]
    struct Refuse;

    impl Handshake for Refuse {
        type Io = TcpStream;

        async fn handshake(&self, mut tcp: TcpStream, first: u8) -> Option<TcpStream> {
            // Read what was sent first, so the close is not a reset that loses the answer.
            let mut request = [0u8; 64];
            let _ = tcp.read(&mut request).await;
            let _ = tcp.write_all(&[b'n', b'o', b' ', first]).await;
            let _ = tcp.shutdown().await;
            None
        }
    }

    #[tokio::test]
    async fn a_refused_handshake_closes_the_connection() {
        let s = start(Refuse, limits(2_000, 4)).await;
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        tcp.write_all(GET).await.unwrap();
        assert_eq!(read_to_close(&mut tcp).await, b"no G");
        s.stop.send(()).unwrap();
        assert_eq!(s.done.await.unwrap(), Drained::Clean);
    }
}
