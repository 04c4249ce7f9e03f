//! The floor of the gateway's stack: an axum + hyper-util proxy with none of Blastwall's work (no
//! authentication, classification, decision, audit or scrubbing), forwarding
//! `/proxy/railway/<path>` to `127.0.0.1:18080/<path>` with a fixed credential. It measures what
//! the HTTP stack alone costs per request, for docs/benchmarks.md ("Gateway"):
//!
//! ```sh
//! cargo build --release --example floor -p blastwall-gateway
//! taskset -c 1 target/release/examples/floor    # listens on 127.0.0.1:17073
//! ```
//!
//! then load it like the other proxies of `bench/gateway.py` (same upstream on port 18080).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a measuring tool on loopback, not a server"
)]

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type Upstream = Client<HttpConnector, Full<Bytes>>;

async fn handle(State(client): State<Upstream>, req: Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let path = parts
        .uri
        .path()
        .strip_prefix("/proxy/railway")
        .unwrap_or("/")
        .to_owned();
    let uri: http::Uri = format!("http://127.0.0.1:18080{path}").parse().unwrap();
    let mut out = Request::builder()
        .method(parts.method)
        .uri(uri)
        .body(Full::new(body))
        .unwrap();
    *out.headers_mut() = parts.headers;
    out.headers_mut().remove(http::header::HOST);
    out.headers_mut().insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_static("Bearer upstream-credential"),
    );
    let resp = client.request(out).await.unwrap();
    let (p, b) = resp.into_parts();
    Response::from_parts(p, Body::new(b.map_err(axum::Error::new)))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client: Upstream = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let app = axum::Router::new().fallback(handle).with_state(client);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:17073")
            .await
            .unwrap();
        axum::serve(listener, app).await.unwrap();
    });
}
