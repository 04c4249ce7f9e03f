//! Forwarding to upstreams: the connection pools (rustls, the system's roots, optional CA files
//! per upstream), hop-by-hop header handling, and the scrubbed, streamed response.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::error::GatewayError;
use crate::pool::{Checkin, Pool};
use crate::scrub::Scrubber;

/// Connection pools: one default (system roots), one per upstream that has its own CA file.
#[derive(Debug)]
pub(crate) struct Clients {
    default: Pool,
    by_upstream: HashMap<String, Pool>,
}

impl Clients {
    pub(crate) fn new(
        connect_timeout: Duration,
        ca_files: &std::collections::BTreeMap<String, std::path::PathBuf>,
    ) -> Result<Self, GatewayError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs_or_empty();
        for cert in native {
            let _ = roots.add(cert);
        }
        let default = build(roots.clone(), connect_timeout)?;
        let mut by_upstream = HashMap::new();
        for (name, path) in ca_files {
            let mut r = roots.clone();
            for cert in read_pem(path).map_err(|why| GatewayError::CaFile {
                upstream: name.clone(),
                path: path.display().to_string(),
                why,
            })? {
                r.add(cert).map_err(|e| GatewayError::CaFile {
                    upstream: name.clone(),
                    path: path.display().to_string(),
                    why: e.to_string(),
                })?;
            }
            by_upstream.insert(name.clone(), build(r, connect_timeout)?);
        }
        Ok(Self {
            default,
            by_upstream,
        })
    }

    pub(crate) fn for_upstream(&self, name: &str) -> &Pool {
        self.by_upstream.get(name).unwrap_or(&self.default)
    }
}

fn rustls_native_certs_or_empty() -> Vec<rustls::pki_types::CertificateDer<'static>> {
    let loaded = rustls_native_certs::load_native_certs();
    for e in &loaded.errors {
        tracing::warn!(error = %e, "could not load a system root certificate");
    }
    loaded.certs
}

fn read_pem(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    let data = std::fs::read(path).map_err(|e| e.to_string())?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut data.as_slice()).collect();
    let certs = certs.map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate in the file".into());
    }
    Ok(certs)
}

fn build(roots: rustls::RootCertStore, connect_timeout: Duration) -> Result<Pool, GatewayError> {
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| GatewayError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    // HTTP/1.1 only (ALPN too): the pool speaks HTTP/1.1 to upstreams.
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Pool::new(https))
}

/// Headers that belong to one connection and are never forwarded (RFC 9110 §7.6.1), plus the
/// ones the gateway sets itself.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Request headers that carry a credential to some provider (Railway's project and team tokens,
/// GitLab's private token, common API-key headers). The agent's are never forwarded: the
/// request must run with the injected credential and no other, whichever one the upstream would
/// prefer.
const AGENT_CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "api-key",
    "apikey",
    "x-auth-token",
    "x-access-token",
    "private-token",
    "job-token",
    "project-access-token",
    "team-access-token",
    "x-amz-security-token",
];

/// Response headers the agent never gets: a session cookie from the upstream would let it call
/// the upstream without the gateway.
const UPSTREAM_SESSION_HEADERS: &[&str] = &["set-cookie", "set-cookie2"];

/// The request headers for the upstream, edited in place: drops hop-by-hop headers (and those
/// the `Connection` header names), the agent's credentials and `Host`, and asks for an unencoded
/// body so the response can be scrubbed.
pub(crate) fn upstream_request_headers(mut headers: HeaderMap) -> HeaderMap {
    let named = connection_named(&headers);
    let dropped: Vec<http::HeaderName> = headers
        .keys()
        .filter(|name| {
            let n = name.as_str();
            HOP_BY_HOP.contains(&n)
                || named.iter().any(|c| c == n)
                || AGENT_CREDENTIAL_HEADERS.contains(&n)
                || n == "host"
                || n == "content-length"
                || n == "accept-encoding"
                || n.starts_with("x-blastwall-")
        })
        .cloned()
        .collect();
    for name in &dropped {
        headers.remove(name);
    }
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    headers
}

/// The response headers for the agent, edited in place: drops hop-by-hop headers and the
/// upstream's cookies, and scrubs every value (a value is copied only when it holds a secret).
pub(crate) fn agent_response_headers(mut headers: HeaderMap, scrubber: &Scrubber) -> HeaderMap {
    let named = connection_named(&headers);
    let dropped: Vec<http::HeaderName> = headers
        .keys()
        .filter(|name| {
            let n = name.as_str();
            HOP_BY_HOP.contains(&n)
                || named.iter().any(|c| c == n)
                || UPSTREAM_SESSION_HEADERS.contains(&n)
        })
        .cloned()
        .collect();
    for name in &dropped {
        headers.remove(name);
    }
    for value in headers.values_mut() {
        if let Some(clean) = scrubber.scrub_all(value.as_bytes()) {
            // Masking keeps a valid value valid; should it not, the value goes whole.
            *value =
                HeaderValue::from_bytes(&clean).unwrap_or_else(|_| HeaderValue::from_static("***"));
        }
    }
    headers
}

/// The response's content coding when it is one the scrubber cannot read through (anything
/// but `identity`): the gateway asked for `identity`, and an upstream that encodes anyway could
/// hide an echo of the credential from the scrubber.
pub(crate) fn encoded_response(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("unreadable").split(','))
        .map(str::trim)
        .find(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
        .map(|c| c.chars().take(40).collect())
}

fn connection_named(h: &HeaderMap) -> Vec<String> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The upstream's body, streamed through the scrubber, with an idle time limit per chunk. The
/// connection goes back to its pool once the body has been read to its end, and only then.
pub(crate) fn scrubbed_body(
    body: hyper::body::Incoming,
    checkin: Checkin,
    scrubber: Scrubber,
    idle: Duration,
) -> Body {
    use http_body::Body as _;
    if body.is_end_stream() {
        checkin.release();
        return Body::from_stream(ScrubStream {
            inner: Box::pin(futures_util::stream::empty::<Result<Frame, std::io::Error>>()),
            scrubber,
            done: false,
        });
    }
    let frames = futures_util::stream::unfold(Some((body, checkin)), move |state| async move {
        let (mut body, checkin) = state?;
        loop {
            match tokio::time::timeout(idle, body.frame()).await {
                Err(_) => {
                    let e =
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "upstream body stalled");
                    return Some((Err(e), None));
                }
                Ok(None) => {
                    checkin.release();
                    return Some((Ok(Frame::End), None));
                }
                Ok(Some(Err(e))) => return Some((Err(std::io::Error::other(e)), None)),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        // The last chunk of a body of known length: the connection is free now,
                        // whether or not the agent's side polls again.
                        if body.is_end_stream() {
                            checkin.release();
                            return Some((Ok(Frame::Data(data)), None));
                        }
                        return Some((Ok(Frame::Data(data)), Some((body, checkin))));
                    }
                    // Trailers are not passed on.
                }
            }
        }
    });
    Body::from_stream(ScrubStream {
        inner: Box::pin(frames),
        scrubber,
        done: false,
    })
}

enum Frame {
    Data(Bytes),
    End,
}

struct ScrubStream<S> {
    inner: std::pin::Pin<Box<S>>,
    scrubber: Scrubber,
    done: bool,
}

impl<S> futures_util::Stream for ScrubStream<S>
where
    S: futures_util::Stream<Item = Result<Frame, std::io::Error>>,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match self.inner.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) | Poll::Ready(Some(Ok(Frame::End))) => {
                    self.done = true;
                    let rest = self.scrubber.finish();
                    if !rest.is_empty() {
                        return Poll::Ready(Some(Ok(rest)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(Frame::Data(d)))) => {
                    let out = self.scrubber.push(&d);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_agents_credentials_and_hop_by_hop_headers_stay_behind() {
        let out = upstream_request_headers(map(&[
            ("host", "gateway"),
            ("authorization", "Bearer bwt_agent"),
            ("authorization", "Basic second"),
            ("cookie", "session=1"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("content-length", "3"),
            ("accept-encoding", "gzip"),
            ("x-blastwall-approval", "x"),
            ("content-type", "application/json"),
            ("x-request", "a"),
            ("x-request", "b"),
        ]));
        // Fields of different names may change places (RFC 9110 §5.3); values of one name not.
        let mut names: Vec<&str> = out.keys().map(http::HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept-encoding", "content-type", "x-request"]);
        let values: Vec<&[u8]> = out
            .get_all("x-request")
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        assert_eq!(values, [b"a".as_slice(), b"b"]);
        assert_eq!(out["accept-encoding"], "identity");
    }

    #[test]
    fn response_headers_are_scrubbed_and_hop_by_hop_ones_dropped() {
        let scrubber = Scrubber::new(std::sync::Arc::new(crate::scrub::Needles::new(&[
            b"s3cret",
        ])));
        let out = agent_response_headers(
            map(&[
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "1"),
                ("transfer-encoding", "chunked"),
                ("x-echo", "Bearer s3cret"),
                ("x-echo", "plain"),
                ("content-length", "2"),
            ]),
            &scrubber,
        );
        let mut names: Vec<&str> = out.keys().map(http::HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-length", "x-echo"]);
        let echoes: Vec<&[u8]> = out
            .get_all("x-echo")
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        assert_eq!(echoes, [b"Bearer ******".as_slice(), b"plain"]);
    }
}
