//! Classification: which operations an HTTP request performs under a profile, and the strictest
//! class among them.
//!
//! REST requests are matched by method and path template on the normalized path
//! ([`crate::normalize`]); GraphQL requests by the root fields of every operation of every
//! document they carry. What cannot be read with certainty is refused ([`ClassifyError`]); what
//! the profile does not know is `<profile>:unknown`, destructive unless the method is GET, HEAD
//! or OPTIONS. Method-override headers are refused (see `docs/catalog.md`).
//!
//! GraphQL documents are read by a lexer-level reader that hands whatever it is unsure of to
//! apollo-parser, and each profile remembers its recent GraphQL answers ([`Engine`]).

mod graphql;
pub(crate) mod memo;
mod overrides;
mod rest;

use std::sync::Arc;

use blastwall_core::operation::{OperationClass, OperationName};

use crate::catalog::{Profile, Rules};
use crate::digest::RequestDigest;
use crate::error::{ClassifyError, bounded};
use crate::normalize::{NormalizedPath, normalize_path};

/// Headers that ask a server to treat a request as another method. Requests carrying one are
/// refused: the gateway cannot know whether the upstream honours it.
pub const METHOD_OVERRIDE_HEADERS: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Headers that some servers route by instead of the request line's path. Requests carrying one
/// are refused: the path classified would not be the path run.
pub const TARGET_OVERRIDE_HEADERS: &[&str] = &["x-original-url", "x-rewrite-url"];

/// What a request does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// Each operation once, in the order first seen, with its class for this request.
    pub ops: Vec<(OperationName, OperationClass)>,
    /// The strictest class among `ops`: this decides.
    pub strictest: OperationClass,
    /// The method, upper-cased: forward this one.
    pub method: String,
    /// The normalized path and query: forward this one, so that what was classified is what
    /// the upstream receives.
    pub target: String,
}

/// How [`classify_with`] reads GraphQL requests; every engine gives the same answers, at
/// different costs. REST requests are classified the same way under all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Engine {
    /// Answer a repeated request from the profile's memo of recent answers (keyed by a digest
    /// of the request); otherwise as [`Engine::Fast`], and remember the answer. What
    /// [`classify`] does.
    #[default]
    Memoized,
    /// The lexer-level reader, which hands every document it is not sure of to apollo-parser.
    Fast,
    /// apollo-parser alone: the reference the other engines are tested against.
    Reference,
}

impl Classification {
    /// The operation names alone.
    pub fn names(&self) -> impl Iterator<Item = &OperationName> {
        self.ops.iter().map(|(name, _)| name)
    }
}

/// Classifies a request under `profile`.
///
/// `target` is the path and query as the client sent them, relative to the upstream's base
/// (`/graphql/v2?x=1`); `headers` are name and value pairs (names in any case).
pub fn classify<'h>(
    profile: &Profile,
    method: &str,
    target: &str,
    headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
    body: &[u8],
) -> Result<Classification, ClassifyError> {
    classify_with(Engine::Memoized, profile, method, target, headers, body)
}

/// [`classify`] for a request to `upstream`, also answering the request's [`RequestDigest`]
/// (the gateway audits it): the memo is keyed by that digest, so a request is hashed once.
/// The digest is answered whether or not the request can be classified.
pub fn classify_request<'h>(
    profile: &Profile,
    upstream: &str,
    method: &str,
    target: &str,
    headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
    body: &[u8],
) -> (RequestDigest, Result<Classification, ClassifyError>) {
    let headers = read_headers(headers);
    let digest = RequestDigest::of(
        upstream,
        method,
        target,
        headers.content_types.iter().map(|v| ("content-type", *v)),
        body,
    );
    let answer = classify_read(
        Engine::Memoized,
        Some(&digest),
        profile,
        method,
        target,
        headers,
        body,
    );
    (digest, answer)
}

/// [`classify`] with a chosen [`Engine`], for benchmarks and for tests that compare engines.
pub fn classify_with<'h>(
    engine: Engine,
    profile: &Profile,
    method: &str,
    target: &str,
    headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
    body: &[u8],
) -> Result<Classification, ClassifyError> {
    classify_read(
        engine,
        None,
        profile,
        method,
        target,
        read_headers(headers),
        body,
    )
}

/// What classification reads of a request's headers: the first that makes it refuse the
/// request, and every `content-type` value.
struct Headers<'h> {
    refusal: Option<ClassifyError>,
    content_types: Vec<&'h [u8]>,
}

fn read_headers<'h>(headers: impl IntoIterator<Item = (&'h str, &'h [u8])>) -> Headers<'h> {
    let mut out = Headers {
        refusal: None,
        content_types: Vec::new(),
    };
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("content-type") {
            out.content_types.push(value);
        } else if out.refusal.is_none() {
            out.refusal = refusal(name, value);
        }
    }
    out
}

/// Why a request with this header is refused, if it is.
fn refusal(name: &str, value: &[u8]) -> Option<ClassifyError> {
    if let Some(h) = METHOD_OVERRIDE_HEADERS
        .iter()
        .find(|h| h.eq_ignore_ascii_case(name))
    {
        return Some(ClassifyError::MethodOverride {
            header: (*h).to_owned(),
        });
    }
    if let Some(h) = TARGET_OVERRIDE_HEADERS
        .iter()
        .find(|h| h.eq_ignore_ascii_case(name))
    {
        return Some(ClassifyError::TargetOverride {
            header: (*h).to_owned(),
        });
    }
    if name.eq_ignore_ascii_case("content-encoding") {
        let encoding = String::from_utf8_lossy(value);
        if !encoding.trim().eq_ignore_ascii_case("identity") {
            return Some(ClassifyError::ContentEncoding {
                encoding: bounded(&encoding),
            });
        }
    }
    None
}

/// The work of the `classify` functions, once the headers are read. `digest`, when given, is
/// [`RequestDigest::of`] this very request (method, target, headers and body as passed here),
/// and keys the memo.
fn classify_read(
    engine: Engine,
    digest: Option<&RequestDigest>,
    profile: &Profile,
    method: &str,
    target: &str,
    headers: Headers<'_>,
    body: &[u8],
) -> Result<Classification, ClassifyError> {
    if method.is_empty()
        || method.len() > 32
        || !method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        return Err(ClassifyError::BadMethod {
            method: bounded(method),
        });
    }
    let method = method.to_ascii_uppercase();
    if let Some(e) = headers.refusal {
        return Err(e);
    }
    let content_types = headers.content_types;
    let path = normalize_path(target, profile.path_case())?;
    let query = path.query.as_deref();
    let mut out = Collector::default();
    match &profile.rules {
        Rules::Rest(rules) => {
            overrides::refuse_method_parameter(query, &content_types, body, true)?;
            rest::classify(profile, rules, &method, &path, &mut out);
        }
        Rules::Graphql(rules) => {
            if rules.endpoints.iter().any(|e| e == &path.path) {
                // The GraphQL reader refuses a `_method` key in a JSON body itself.
                overrides::refuse_method_parameter(query, &content_types, body, false)?;
                let content_type = match content_types.as_slice() {
                    [] => None,
                    [one] => Some(*one),
                    _ => {
                        return Err(ClassifyError::GraphqlRequest {
                            detail: "more than one `content-type` header".into(),
                        });
                    }
                };
                let read = |engine| {
                    graphql::classify(profile, rules, &method, &path, content_type, body, engine)
                };
                if engine != Engine::Memoized {
                    return Ok(read(engine)?.finish(method, &path));
                }
                let target = path.target();
                // Without the request's own digest, a digest of what the answer depends on:
                // the upper-cased method, the normalized target, the one content type and the
                // body. Either key fixes every input of the answer below; the headers that make
                // a request refused are not in them, so they are checked above, on every
                // request, never answered from the memo.
                let key = match digest {
                    Some(d) => *d.as_bytes(),
                    None => *RequestDigest::memo_key(
                        &method,
                        &target,
                        content_type.map(|ct| ("content-type", ct)),
                        body,
                    )
                    .as_bytes(),
                };
                if let Some(answer) = profile.memo.get(&key) {
                    return (*answer).clone();
                }
                let answer = read(Engine::Fast).map(|ops| ops.finish_with_target(method, target));
                profile.memo.insert(key, Arc::new(answer.clone()));
                return answer;
            }
            overrides::refuse_method_parameter(query, &content_types, body, true)?;
            out.unknown(profile, &method);
        }
    }
    Ok(out.finish(method, &path))
}

/// Gathers operations without duplicates.
#[derive(Debug, Default)]
struct Collector {
    ops: Vec<(OperationName, OperationClass)>,
}

impl Collector {
    fn add(&mut self, name: &OperationName, class: OperationClass) {
        match self.ops.iter_mut().find(|(n, _)| n == name) {
            Some((_, c)) => *c = (*c).max(class),
            None => self.ops.push((name.clone(), class)),
        }
    }

    /// Adds `<profile>:unknown`: read for GET, HEAD and OPTIONS, destructive otherwise.
    fn unknown(&mut self, profile: &Profile, method: &str) {
        let class = if is_safe_method(method) {
            OperationClass::Read
        } else {
            OperationClass::Destructive
        };
        self.add(&OperationName::unknown(profile.name()), class);
    }

    fn finish(self, method: String, path: &NormalizedPath) -> Classification {
        self.finish_with_target(method, path.target())
    }

    fn finish_with_target(self, method: String, target: String) -> Classification {
        let strictest = self
            .ops
            .iter()
            .map(|(_, c)| *c)
            .max()
            .unwrap_or(OperationClass::Destructive);
        Classification {
            ops: self.ops,
            strictest,
            method,
            target,
        }
    }
}

fn is_safe_method(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    fn classify_simple(
        profile: &str,
        method: &str,
        target: &str,
    ) -> Result<Classification, ClassifyError> {
        let c = Catalog::builtin().unwrap();
        classify(c.profile(profile).unwrap(), method, target, [], b"")
    }

    #[test]
    fn methods_are_upper_cased() {
        let c = classify_simple("github", "delete", "/repos/a/b").unwrap();
        assert_eq!(c.method, "DELETE");
        assert_eq!(c.strictest, OperationClass::Destructive);
    }

    #[test]
    fn bad_methods_are_refused() {
        assert!(classify_simple("rest", "GE T", "/").is_err());
        assert!(classify_simple("rest", "", "/").is_err());
    }

    #[test]
    fn override_headers_are_refused_in_any_case() {
        let c = Catalog::builtin().unwrap();
        for h in [
            "X-HTTP-Method-Override",
            "x-http-method",
            "X-Method-Override",
        ] {
            let e = classify(
                c.profile("rest").unwrap(),
                "POST",
                "/",
                [(h, &b"GET"[..])],
                b"",
            );
            assert!(
                matches!(e, Err(ClassifyError::MethodOverride { .. })),
                "{h}"
            );
        }
    }

    #[test]
    fn the_request_memo_tells_requests_apart() {
        let c = Catalog::builtin().unwrap();
        let railway = c.profile("railway").unwrap();
        let body = br#"{"query":"mutation { volumeDelete(volumeId: \"v\") }"}"#;
        let json = [("content-type", &b"application/json"[..])];
        let graphql = [("content-type", &b"application/graphql"[..])];
        for _ in 0..2 {
            let (d1, first) =
                classify_request(railway, "railway", "POST", "/graphql/v2", json, body);
            assert_eq!(first.unwrap().strictest, OperationClass::Destructive);
            // The same body sent as a GraphQL document is not one: not the memo's answer.
            let (d2, second) =
                classify_request(railway, "railway", "POST", "/graphql/v2", graphql, body);
            assert_ne!(d1, d2);
            assert!(second.is_err());
            let (d3, _) = classify_request(railway, "other", "POST", "/graphql/v2", json, body);
            assert_ne!(d1, d3);
        }
        // Headers outside the digest that make a request refused are checked before the memo:
        // the same request, remembered, is still refused with one of them.
        for (name, value) in [
            ("X-HTTP-Method-Override", &b"GET"[..]),
            ("X-Original-URL", &b"/graphql/v2"[..]),
            ("Content-Encoding", &b"gzip"[..]),
        ] {
            let headers = [("content-type", &b"application/json"[..]), (name, value)];
            let (d, answer) =
                classify_request(railway, "railway", "POST", "/graphql/v2", headers, body);
            let (plain, _) =
                classify_request(railway, "railway", "POST", "/graphql/v2", json, body);
            assert_eq!(d, plain, "{name} is not in the digest");
            assert!(answer.is_err(), "{name}: answered from the memo");
        }
    }

    #[test]
    fn target_is_normalized() {
        let c = classify_simple("rest", "GET", "//a/./b/?q=1").unwrap();
        assert_eq!(c.target, "/a/b?q=1");
    }
}
