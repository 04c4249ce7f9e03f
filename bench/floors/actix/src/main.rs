//! Floor proxy on actix-web 4 (actix-http's HTTP/1 server, one worker), forwarding through the
//! same `hyper::client::conn::http1` per-thread pool as the hyper floor. The request body is
//! buffered (actix's payload is not `Send`), the response body is streamed.
//!
//! Usage: floor-actix [LISTEN_ADDR]   (default 127.0.0.1:17178)

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bytes::Bytes;
use floor_hyper::{EXPECTED, PREFIX, Relay, UpBody, checkout};
use http_body::Body;
use http_body_util::Full;

/// The upstream response body as actix's `MessageBody`.
struct Streamed(Relay);

impl MessageBody for Streamed {
    type Error = hyper::Error;

    fn size(&self) -> BodySize {
        match self.0.size_hint().exact() {
            Some(n) => BodySize::Sized(n),
            None => BodySize::Stream,
        }
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, hyper::Error>>> {
        let relay = &mut self.get_mut().0;
        loop {
            return match Pin::new(&mut *relay).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => Poll::Ready(Some(Ok(data))),
                    Err(_trailers) => continue,
                },
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

async fn handle(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let authorized = req
        .headers()
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == EXPECTED);
    if !authorized {
        return HttpResponse::Unauthorized().finish();
    }
    match forward(&req, body).await {
        Ok(resp) => resp,
        Err(_) => HttpResponse::BadGateway().finish(),
    }
}

async fn forward(req: &HttpRequest, body: Bytes) -> Result<HttpResponse, floor_hyper::BoxError> {
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let path = match pq.strip_prefix(PREFIX) {
        Some("") => "/",
        Some(rest) => rest,
        None => pq,
    };
    let mut up = hyper::Request::builder()
        .method(hyper::Method::from_bytes(req.method().as_str().as_bytes())?)
        .uri(path);
    for (k, v) in req.headers() {
        if k != "authorization" {
            up = up.header(k.as_str(), v.as_bytes());
        }
    }
    let up = up
        .header("authorization", "Bearer upstream-credential")
        .body(UpBody::Right(Full::new(body)))?;
    let mut sender = checkout().await?;
    let resp = sender.send_request(up).await?;
    let (head, inner) = resp.into_parts();
    let mut out = HttpResponse::build(StatusCode::from_u16(head.status.as_u16())?);
    for (k, v) in &head.headers {
        if !matches!(k.as_str(), "content-length" | "transfer-encoding" | "connection") {
            out.append_header((k.as_str(), v.as_bytes()));
        }
    }
    Ok(out.body(Streamed(Relay { inner: Some(inner), sender: Some(sender), done: false })))
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:17178".into());
    actix_web::rt::System::new().block_on(
        HttpServer::new(|| App::new().default_service(web::to(handle)))
            .workers(1)
            .bind(addr)?
            .run(),
    )
}
