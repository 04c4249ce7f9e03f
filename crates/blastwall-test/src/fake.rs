//! A fake upstream API that speaks real HTTP on loopback and records what it received.
//!
//! Routes (any method):
//! - `/echo…` answers with the `Authorization` header it received, in the body (split across
//!   several chunks) and in an `x-echo` header, as a careless upstream might;
//! - `/echo64` answers with base64 of a JSON object quoting the `Authorization` header;
//! - `/redirect` answers 302 to `http://127.0.0.1:9/stolen`;
//! - `/slow` waits 30 s before answering;
//! - `/big` streams 4 MiB;
//! - `/stream` sends [`FIRST_CHUNK`] at once and `second\n` two seconds later; `/stall` waits 30 s
//!   instead, mid-body;
//! - `/gzip` answers with a gzip-encoded echo of the `Authorization` header, whatever the request
//!   asked for (an upstream that ignores `Accept-Encoding: identity`);
//! - `/cookie` sets a session cookie;
//! - anything else answers `{"data": {"ok": true}}`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Seen {
    /// The `Authorization` header, if any.
    pub fn authorization(&self) -> Option<String> {
        self.headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// The first chunk of `/stream` and `/stall`: 256 bytes, longer than what a gateway holds back
/// to find a credential split across chunks.
pub const FIRST_CHUNK: &[u8; 256] = b"first chunk ...................................................................................................................................................................................................................................................\n";

/// A running fake upstream; stops when dropped.
#[derive(Debug)]
pub struct FakeUpstream {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
    tls: bool,
}

impl FakeUpstream {
    /// Starts on `127.0.0.1:0` (call inside a tokio runtime).
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().fallback(handle).with_state(seen.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            seen,
            task,
            tls: false,
        })
    }

    /// Starts with TLS on `127.0.0.1:0`, with a fresh self-signed certificate for `localhost`
    /// and `127.0.0.1`; returns the upstream and the certificate (PEM) to trust.
    pub async fn start_tls() -> anyhow::Result<(Self, String)> {
        let rcgen::CertifiedKey { cert, signing_key } = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])?;
        let cert_pem = cert.pem();
        let key = rustls::pki_types::PrivateKeyDer::try_from(signing_key.serialize_der())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().fallback(handle).with_state(seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    break;
                };
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        Ok((
            Self {
                addr,
                seen,
                task,
                tls: true,
            },
            cert_pem,
        ))
    }

    /// `http://127.0.0.1:PORT` (`https://localhost:PORT` with TLS).
    pub fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(seen): State<Arc<Mutex<Vec<Seen>>>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = to_bytes(body, 64 * 1024 * 1024).await.unwrap_or_default();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let auth = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if let Ok(mut s) = seen.lock() {
        s.push(Seen {
            method: parts.method.to_string(),
            target: target.clone(),
            headers: parts.headers.clone(),
            body,
        });
    }
    let path = parts.uri.path();
    let mut r = if path == "/echo64" {
        use base64::Engine as _;
        let text = format!("{{\"headers\":{{\"authorization\":\"{auth}\"}}}}");
        Response::new(Body::from(
            base64::engine::general_purpose::STANDARD.encode(text),
        ))
    } else if path.starts_with("/echo") {
        let text = format!("you sent: {auth} (end)");
        let bytes = text.into_bytes();
        let mid = bytes.len() / 2;
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::copy_from_slice(bytes.get(..mid).unwrap_or_default())),
            Ok(Bytes::copy_from_slice(bytes.get(mid..).unwrap_or_default())),
        ];
        let mut r = Response::new(Body::from_stream(futures_util::stream::iter(chunks)));
        if let Ok(v) = http::HeaderValue::from_str(&auth) {
            r.headers_mut().insert("x-echo", v);
        }
        r
    } else if path == "/redirect" {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::FOUND;
        r.headers_mut().insert(
            "location",
            http::HeaderValue::from_static("http://127.0.0.1:9/stolen"),
        );
        r
    } else if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Response::new(Body::from("late"))
    } else if path == "/gzip" {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let _ = gz.write_all(format!("you sent: {auth} (end)").as_bytes());
        let mut r = Response::new(Body::from(gz.finish().unwrap_or_default()));
        r.headers_mut()
            .insert("content-encoding", http::HeaderValue::from_static("gzip"));
        r
    } else if path == "/cookie" {
        let mut r = Response::new(Body::from("{}"));
        r.headers_mut().insert(
            "set-cookie",
            http::HeaderValue::from_static("session=upstream-session-42; HttpOnly"),
        );
        r
    } else if path == "/stream" || path == "/stall" {
        // A first chunk at once, then the rest two seconds later (`/stream`: long enough that a
        // busy test machine does not blur "at once" and "later") or not for 30 s (`/stall`):
        // what reaches the agent before the upstream is done.
        let pause = if path == "/stream" { 2 } else { 30 };
        let chunks = futures_util::stream::unfold(0u8, move |n| async move {
            match n {
                0 => Some((
                    Ok::<_, std::io::Error>(Bytes::from(FIRST_CHUNK.to_vec())),
                    1,
                )),
                1 => {
                    tokio::time::sleep(Duration::from_secs(pause)).await;
                    Some((Ok(Bytes::from_static(b"second\n")), 2))
                }
                _ => None,
            }
        });
        Response::new(Body::from_stream(chunks))
    } else if path == "/big" {
        Response::new(Body::from(vec![b'x'; 4 * 1024 * 1024]))
    } else {
        let mut r = Response::new(Body::from(r#"{"data":{"ok":true}}"#));
        r.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        r
    };
    r.headers_mut()
        .insert("x-fake-upstream", http::HeaderValue::from_static("1"));
    r
}
