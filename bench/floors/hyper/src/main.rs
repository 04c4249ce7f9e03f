//! Floor proxy on hyper 1.x directly (no axum, no hyper-util auto builder or legacy client):
//! `hyper::server::conn::http1` downstream, `hyper::client::conn::http1` upstream with a small
//! per-thread pool of keep-alive connections. Request and response bodies are streamed.
//!
//! Usage: floor-hyper [LISTEN_ADDR] [ct|mt]   (default 127.0.0.1:17175 ct)
//! "ct" = tokio current_thread runtime; "mt" = multi_thread runtime with 1 worker.

use floor_hyper::{BoxError, EXPECTED, PREFIX, Relay, UpBody, checkout};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

async fn handle(req: Request<Incoming>) -> Result<Response<Relay>, BoxError> {
    let authorized = req
        .headers()
        .get(AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == EXPECTED);
    if !authorized {
        let mut resp = Response::new(Relay::empty());
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(resp);
    }
    let (mut parts, body) = req.into_parts();
    if let Some(rest) = parts.uri.path_and_query().and_then(|p| p.as_str().strip_prefix(PREFIX)) {
        parts.uri = if rest.is_empty() { Uri::from_static("/") } else { rest.parse()? };
    }
    parts
        .headers
        .insert(AUTHORIZATION, HeaderValue::from_static("Bearer upstream-credential"));
    let mut sender = checkout().await?;
    let resp = sender.send_request(Request::from_parts(parts, UpBody::Left(body))).await?;
    let (head, inner) = resp.into_parts();
    Ok(Response::from_parts(
        head,
        Relay { inner: Some(inner), sender: Some(sender), done: false },
    ))
}

async fn serve(addr: String) -> std::io::Result<()> {
    let listener = TcpListener::bind(&addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .await;
        });
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:17175".into());
    let rt = match args.next().as_deref() {
        Some("mt") => tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_io().build()?,
        _ => tokio::runtime::Builder::new_current_thread().enable_io().build()?,
    };
    // Spawned, so that with "mt" the accept loop too runs on the single worker.
    rt.block_on(async { tokio::spawn(serve(addr)).await.expect("accept loop") })
}
