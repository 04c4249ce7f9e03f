//! Upstream connections: HTTP/1.1 over TCP or rustls, kept alive and reused.
//!
//! A lean replacement for hyper-util's pooled legacy client, which costs a task spawn, a pool key
//! built and hashed, and a lazy connector per request. Here each request takes an idle
//! connection of its origin (or opens one), sends on it with hyper's `client::conn::http1`, and
//! the connection goes back to the pool only once its response body has been read to the end
//! ([`Checkin`]): a connection whose response was cut short, failed or timed out is dropped,
//! never reused. A request that an idle connection could not even start sending (the upstream
//! closed it meanwhile) is sent again on a fresh one, as hyper-util does; a request that may have
//! reached the upstream is never sent twice. Idle connections are dropped after
//! [`IDLE_TIMEOUT`], and at most [`MAX_IDLE`] are kept per origin. Redirects are answers like any
//! other: nothing here follows them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service;

/// How long an idle connection is kept (the legacy client's setting, kept).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Idle connections kept per origin; more are closed when they come back.
pub(crate) const MAX_IDLE: usize = 256;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// The URI has no scheme or host, or its host cannot be a `Host` header.
    #[error("the upstream URL has no usable scheme and host")]
    BadUri,
    /// No connection could be opened (refused, DNS, TLS handshake, connect timeout).
    #[error("cannot connect: {0}")]
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The connection failed while sending the request or reading the response head.
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

/// The connection pool of one TLS configuration.
#[derive(Clone, Debug)]
pub(crate) struct Pool {
    connector: HttpsConnector<HttpConnector>,
    idle: Arc<Mutex<Vec<Origin>>>,
}

/// The idle connections of one scheme and authority (a handful of upstreams: a list is enough).
#[derive(Debug)]
struct Origin {
    scheme: Scheme,
    authority: Authority,
    idle: Vec<Idle>,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

/// A connection lent to one request: hand it back with [`Checkin::release`] once the response
/// body has been read to its end. Dropped otherwise, it closes the connection.
#[derive(Debug)]
pub(crate) struct Checkin {
    pool: Pool,
    scheme: Scheme,
    authority: Authority,
    sender: SendRequest<Full<Bytes>>,
}

impl Pool {
    /// A pool opening connections with `connector` (which must offer only HTTP/1.1 in ALPN).
    pub(crate) fn new(connector: HttpsConnector<HttpConnector>) -> Self {
        Self {
            connector,
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Sends `req` (whose URI is absolute) to its origin, with `Host` set from the URI and the
    /// request line in origin form. The caller bounds the time this takes.
    pub(crate) async fn send(
        &self,
        mut req: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Checkin), SendError> {
        let uri = req.uri().clone();
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(SendError::BadUri);
        };
        let host = host_header(scheme, authority).ok_or(SendError::BadUri)?;
        req.headers_mut().insert(http::header::HOST, host);
        *req.uri_mut() = origin_form(&uri);
        loop {
            let Some(mut sender) = self.checkout(scheme, authority) else {
                break;
            };
            // A connection just handed back may still be finishing its previous exchange.
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, self.checkin(scheme, authority, sender))),
                Err(mut e) => match e.take_message() {
                    // Not a byte was sent: the upstream closed the idle connection. Try the
                    // next one.
                    Some(unsent) => {
                        tracing::debug!(error = %e.error(), "idle upstream connection was closed; retrying");
                        req = unsent;
                    }
                    None => return Err(SendError::Http(e.into_error())),
                },
            }
        }
        let mut sender = self.connect(&uri).await?;
        let resp = sender.send_request(req).await?;
        Ok((resp, self.checkin(scheme, authority, sender)))
    }

    fn checkin(
        &self,
        scheme: &Scheme,
        authority: &Authority,
        sender: SendRequest<Full<Bytes>>,
    ) -> Checkin {
        Checkin {
            pool: self.clone(),
            scheme: scheme.clone(),
            authority: authority.clone(),
            sender,
        }
    }

    /// The most recently used idle connection of the origin that is still open, if any.
    fn checkout(&self, scheme: &Scheme, authority: &Authority) -> Option<SendRequest<Full<Bytes>>> {
        let mut origins = self.idle.lock().ok()?;
        let origin = origins
            .iter_mut()
            .find(|o| o.scheme == *scheme && o.authority == *authority)?;
        while let Some(idle) = origin.idle.pop() {
            if !idle.sender.is_closed() && idle.since.elapsed() < IDLE_TIMEOUT {
                return Some(idle.sender);
            }
        }
        None
    }

    async fn connect(&self, uri: &Uri) -> Result<SendRequest<Full<Bytes>>, SendError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let io = connector
            .call(uri.clone())
            .await
            .map_err(SendError::Connect)?;
        let (sender, conn) = http1::Builder::new().handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    /// How many idle connections are kept (for tests).
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .map(|o| o.iter().map(|o| o.idle.len()).sum())
            .unwrap_or_default()
    }
}

impl Checkin {
    /// The response body was read to its end: the connection may carry another request.
    pub(crate) fn release(self) {
        let Checkin {
            pool,
            scheme,
            authority,
            sender,
        } = self;
        if sender.is_closed() {
            return;
        }
        let Ok(mut origins) = pool.idle.lock() else {
            return;
        };
        let now = Instant::now();
        let idle = Idle { sender, since: now };
        match origins
            .iter_mut()
            .find(|o| o.scheme == scheme && o.authority == authority)
        {
            Some(origin) => {
                origin.idle.retain(|i| {
                    !i.sender.is_closed() && now.duration_since(i.since) < IDLE_TIMEOUT
                });
                if origin.idle.len() < MAX_IDLE {
                    origin.idle.push(idle);
                }
            }
            None => origins.push(Origin {
                scheme,
                authority,
                idle: vec![idle],
            }),
        }
    }
}

/// `Host` for an origin: the host, and the port unless it is the scheme's default (what
/// hyper-util's client sends).
fn host_header(scheme: &Scheme, authority: &Authority) -> Option<HeaderValue> {
    let host = authority.host();
    let default = match scheme.as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    };
    match authority.port_u16() {
        Some(port) if Some(port) != default => {
            HeaderValue::from_str(&format!("{host}:{port}")).ok()
        }
        _ => HeaderValue::from_str(host).ok(),
    }
}

/// The request line's form of `uri`: its path and query only (RFC 9112 §3.2.1).
fn origin_form(uri: &Uri) -> Uri {
    let pq = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::from(pq)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    fn pool() -> Pool {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(2)));
        Pool::new(
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .wrap_connector(http),
        )
    }

    /// How a fake upstream ends each exchange.
    #[derive(Clone, Copy)]
    enum After {
        /// Keeps the connection open.
        KeepAlive,
        /// Answers `Connection: close` and closes.
        Close,
        /// Answers with keep-alive, then closes at once anyway (an idle timeout upstream).
        Drop,
    }

    /// A fake upstream answering each request with `body`; counts connections; returns the
    /// request heads it saw.
    async fn upstream(
        after: After,
        body: &'static str,
    ) -> (String, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (a, h) = (accepted.clone(), heads.clone());
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                a.fetch_add(1, Ordering::SeqCst);
                let h = h.clone();
                tokio::spawn(async move {
                    loop {
                        let Some(head) = read_head(&mut s).await else {
                            return;
                        };
                        h.lock().unwrap().push(head);
                        let conn = if matches!(after, After::Close) {
                            "close"
                        } else {
                            "keep-alive"
                        };
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: {conn}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                        if !matches!(after, After::KeepAlive) {
                            let _ = s.shutdown().await;
                            return;
                        }
                    }
                });
            }
        });
        (base, accepted, heads)
    }

    async fn read_head(s: &mut TcpStream) -> Option<String> {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            buf.push(byte[0]);
        }
        Some(String::from_utf8(buf).unwrap())
    }

    fn get(uri: &str) -> Request<Full<Bytes>> {
        Request::get(uri).body(Full::new(Bytes::new())).unwrap()
    }

    /// Sends, reads the whole body and hands the connection back.
    async fn call(pool: &Pool, uri: &str) -> String {
        let (resp, checkin) = pool.send(get(uri)).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        checkin.release();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_kept_alive_connection_is_reused() {
        let (base, accepted, heads) = upstream(After::KeepAlive, "ok").await;
        let pool = pool();
        for _ in 0..5 {
            assert_eq!(call(&pool, &format!("{base}/a/b?c=1")).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
        let heads = heads.lock().unwrap();
        let port = base.rsplit(':').next().unwrap();
        assert!(
            heads[0].starts_with("GET /a/b?c=1 HTTP/1.1\r\n"),
            "{}",
            heads[0]
        );
        assert!(
            heads[0]
                .to_ascii_lowercase()
                .contains(&format!("host: 127.0.0.1:{port}\r\n")),
            "{}",
            heads[0]
        );
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_not_reused() {
        for after in [After::Close, After::Drop] {
            let (base, accepted, _) = upstream(after, "ok").await;
            let pool = pool();
            for i in 1..=3 {
                assert_eq!(call(&pool, &format!("{base}/")).await, "ok");
                // The upstream closes after answering; the next request must not fail.
                tokio::time::sleep(Duration::from_millis(100)).await;
                assert_eq!(accepted.load(Ordering::SeqCst), i);
            }
        }
    }

    #[tokio::test]
    async fn an_upstream_closing_right_after_its_answer_fails_no_request() {
        // No pause: the close may be seen when the connection is handed back, when it is
        // checked out, or only when the next request is sent on it; in every case the request
        // goes out once, on a new connection.
        let (base, accepted, heads) = upstream(After::Drop, "ok").await;
        let pool = pool();
        for i in 1..=20 {
            assert_eq!(call(&pool, &format!("{base}/")).await, "ok");
            assert_eq!(heads.lock().unwrap().len(), i);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 20);
    }

    #[tokio::test]
    async fn a_response_not_read_to_its_end_closes_its_connection() {
        let (base, accepted, _) = upstream(After::KeepAlive, "a body").await;
        let pool = pool();
        let (resp, checkin) = pool.send(get(&format!("{base}/"))).await.unwrap();
        drop(checkin);
        drop(resp);
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(call(&pool, &format!("{base}/")).await, "a body");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn concurrent_requests_use_separate_connections() {
        let (base, accepted, _) = upstream(After::KeepAlive, "ok").await;
        let pool = pool();
        let (a, b) = tokio::join!(pool.send(get(&base)), pool.send(get(&base)));
        let ((ra, ca), (rb, cb)) = (a.unwrap(), b.unwrap());
        for (r, c) in [(ra, ca), (rb, cb)] {
            r.into_body().collect().await.unwrap();
            c.release();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(pool.idle_count(), 2);
    }

    #[tokio::test]
    async fn unreachable_upstreams_and_bad_uris_are_errors() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let pool = pool();
        let err = pool
            .send(get(&format!("http://{addr}/")))
            .await
            .unwrap_err();
        assert!(matches!(err, SendError::Connect(_)), "{err}");
        let err = pool.send(get("/relative")).await.unwrap_err();
        assert!(matches!(err, SendError::BadUri), "{err}");
    }

    #[test]
    fn host_headers_omit_default_ports() {
        let h = |s: &str, a: &str| {
            host_header(&s.parse().unwrap(), &a.parse().unwrap())
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(h("http", "example.com:80"), "example.com");
        assert_eq!(h("https", "example.com:443"), "example.com");
        assert_eq!(h("https", "example.com"), "example.com");
        assert_eq!(h("https", "example.com:8443"), "example.com:8443");
        assert_eq!(h("http", "[::1]:8080"), "[::1]:8080");
    }
}
