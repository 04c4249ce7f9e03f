//! What the hyper and actix floors share: the fixed credentials and a small per-thread pool of
//! `hyper::client::conn::http1` upstream connections, with a response body that hands its
//! connection back to the pool once fully read.

use std::cell::RefCell;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use http_body_util::{Either, Full};
use tokio::net::TcpStream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Upstream request body: streamed (hyper floor) or buffered (actix floor).
pub type UpBody = Either<Incoming, Full<Bytes>>;
pub type Sender = SendRequest<UpBody>;

pub const EXPECTED: &[u8] = b"Bearer floor-token-0123456789abcdef";
pub const PREFIX: &str = "/proxy/railway";
pub const UPSTREAM: &str = "127.0.0.1:18080";
pub const POOL_MAX: usize = 256;

thread_local! {
    /// Idle upstream connections of this thread (LIFO).
    static POOL: RefCell<Vec<Sender>> = const { RefCell::new(Vec::new()) };
}

pub fn checkin(s: Sender) {
    if !s.is_closed() {
        POOL.with_borrow_mut(|p| {
            if p.len() < POOL_MAX {
                p.push(s);
            }
        });
    }
}

pub async fn checkout() -> Result<Sender, BoxError> {
    while let Some(mut s) = POOL.with_borrow_mut(Vec::pop) {
        if s.ready().await.is_ok() {
            return Ok(s);
        }
    }
    let stream = TcpStream::connect(UPSTREAM).await?;
    stream.set_nodelay(true)?;
    let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(s)
}

/// The upstream response body, handing its connection back to the pool once fully read.
pub struct Relay {
    pub inner: Option<Incoming>,
    pub sender: Option<Sender>,
    pub done: bool,
}

impl Relay {
    pub fn empty() -> Self {
        Relay { inner: None, sender: None, done: true }
    }
}

impl Body for Relay {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let r = Pin::new(inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) {
            this.done = true;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or(SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(s) = self.sender.take()
            && (self.done || self.inner.as_ref().is_some_and(Body::is_end_stream))
        {
            checkin(s);
        }
    }
}

