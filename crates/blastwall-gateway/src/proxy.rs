//! The request path: authenticate, wall, classify, authorize, forward (DESIGN.md, "Request path").

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use blastwall_core::EnvName;
use blastwall_core::audit::AuditRecord;
use blastwall_core::config::GatewayConfig;
use blastwall_core::record::{TokenRecord, UpstreamRecord};
use blastwall_policy::{Classification, RequestDigest};
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::Full;
use tracing::Instrument;

use crate::authorize::Verdict;
use crate::error::ApiError;
use crate::forward::{
    agent_response_headers, encoded_response, scrubbed_body, upstream_request_headers,
};
use crate::inject::OpenedCredential;
use crate::scrub::Scrubber;
use crate::server::Gateway;

/// Handles every request that is not `/healthz` or `/metrics`.
pub(crate) async fn handle(State(gw): State<Gateway>, req: Request<Body>) -> Response {
    let request_id = new_request_id();
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        env = tracing::field::Empty,
        upstream = tracing::field::Empty,
        token_id = tracing::field::Empty,
        operation = tracing::field::Empty,
    );
    let started = Instant::now();
    match proxy(&gw, req, &request_id, started).instrument(span).await {
        Ok(r) => r,
        Err(e) => e.with_request_id(&request_id).into_response(),
    }
}

/// What the audit entry of a request says.
struct Outcome<'a> {
    token: Option<&'a TokenRecord>,
    upstream: &'a str,
    operations: Vec<String>,
    class: &'static str,
    decision: &'static str,
    reason: Option<String>,
    digest: Option<String>,
    status: u16,
}

async fn proxy(
    gw: &Gateway,
    req: Request<Body>,
    request_id: &str,
    started: Instant,
) -> Result<Response, ApiError> {
    let inner = &gw.inner;
    if inner
        .audit_failing
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        // Not audited: the log is what cannot be written.
        inner.metrics.count("-", "-", "audit_unavailable");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            "the gateway cannot write its audit log, so it forwards nothing until it can",
            "retry in a few seconds; the operator should check the gateway's store (disk space, permissions, database health)",
        ));
    }
    let (parts, body) = req.into_parts();
    let Some((upstream_name, target)) = split_proxy_path(&parts.uri) else {
        inner.metrics.count("-", "-", "not_found");
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this gateway serves /proxy/<upstream>/<path>, /healthz and /metrics",
            "send the request to /proxy/<upstream>/<path>, e.g. /proxy/railway/graphql/v2",
        ));
    };
    let span = tracing::Span::current();
    span.record("upstream", upstream_name.as_str());

    // 1. authenticate
    let auth = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let token = match inner.tokens.authenticate(auth).await {
        Ok(t) => t,
        Err(e) => {
            // Anyone can send these at the gateway's full rate: past a per-minute budget they
            // are counted, and the count written once a minute, so they cannot fill the disk
            // (and stop the gateway, which forwards nothing it cannot audit).
            if inner.refusals.admit("anonymous", started) {
                gw.audit(record(
                    request_id,
                    &Outcome {
                        token: None,
                        upstream: &upstream_name,
                        operations: vec![],
                        class: "-",
                        decision: "deny",
                        reason: Some(e.error.to_owned()),
                        digest: None,
                        status: e.status.as_u16(),
                    },
                    started,
                ))
                .await;
            }
            // Not labelled by the upstream named in the path: anyone can send any name, and
            // each would be a new series kept for the life of the process.
            inner.metrics.count("-", "-", "unauthenticated");
            return Err(e);
        }
    };
    span.record("token_id", token.id.as_str());
    span.record("env", token.env.as_str());

    let refuse_as = |decision: &'static str,
                     e: ApiError,
                     ops: Vec<String>,
                     class: &'static str,
                     digest: Option<String>| {
        let rec = record(
            request_id,
            &Outcome {
                token: Some(&token),
                upstream: &upstream_name,
                operations: ops,
                class,
                decision,
                reason: Some(e.reason.clone().unwrap_or_else(|| e.error.to_owned())),
                digest,
                status: e.status.as_u16(),
            },
            started,
        );
        (e, rec)
    };
    let refuse = |e: ApiError, ops: Vec<String>, class: &'static str, digest: Option<String>| {
        refuse_as("deny", e, ops, class, digest)
    };

    // Each token's rate: a holder in a loop (an agent retrying a refusal) must not grow the
    // audit log at the gateway's full rate, fill its disk and so stop it for every environment
    // it serves. Past the budget its refusals are counted like unauthenticated ones.
    if let Some(limit) = &inner.token_limit
        && let Err(not_until) = limit.check_key(&token.id)
    {
        use governor::clock::Clock as _;
        let wait = not_until.wait_time_from(limit.clock().now());
        let e = rate_limited(&inner.config, wait);
        inner.metrics.count("-", "-", e.error);
        let (e, rec) = refuse(e, vec![], "-", None);
        if inner.refusals.admit(&rec.actor, started) {
            gw.audit(rec).await;
        }
        return Err(e);
    }

    // 2. the wall: the token's own environment, and only it.
    // Refusals before a decision are counted by their error code: `decision` is then e.g.
    // `environment_sealed` or `body_too_large`, a fixed set of words.
    let upstream = match lookup_upstream(gw, &upstream_name).await {
        Ok(u) => u,
        Err(e) => {
            // Not labelled by the name in the path: anyone holding a token can make one up.
            inner.metrics.count("-", "-", e.error);
            let (e, rec) = refuse(e, vec![], "-", None);
            gw.audit(rec).await;
            return Err(e);
        }
    };
    let environment = match lookup_env(gw, &token.env).await {
        Ok(e) => e,
        Err(e) => {
            inner.metrics.count(&upstream_name, "-", e.error);
            let (e, rec) = refuse(e, vec![], "-", None);
            gw.audit(rec).await;
            return Err(e);
        }
    };
    let credential = match credential_for(gw, &upstream, &token.env).await {
        Ok(c) => c,
        Err(e) => {
            inner.metrics.count(&upstream_name, "-", e.error);
            let (e, rec) = refuse(e, vec![], "-", None);
            gw.audit(rec).await;
            return Err(e);
        }
    };

    // 3. classify (the body is buffered up to the limit)
    let limit = inner.config.max_body_bytes;
    let body = match tokio::time::timeout(inner.config.client_timeout, to_bytes(body, limit)).await
    {
        Ok(Ok(b)) => b,
        Err(_) => {
            let e = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {}",
                    blastwall_core::format_duration(inner.config.client_timeout)
                ),
                "send the whole body at once; the operator can raise `[gateway] client_timeout`",
            );
            inner.metrics.count(&upstream_name, "-", e.error);
            let (e, rec) = refuse(e, vec![], "-", None);
            gw.audit(rec).await;
            return Err(e);
        }
        Ok(Err(_)) => {
            let e = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is over this gateway's limit of {limit} bytes"),
                "send a smaller request; the operator can raise `[gateway] max_body_bytes`",
            );
            inner.metrics.count(&upstream_name, "-", e.error);
            let (e, rec) = refuse(e, vec![], "-", None);
            gw.audit(rec).await;
            return Err(e);
        }
    };
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()));
    let Some(profile) = inner.catalog.profile(&upstream.profile) else {
        tracing::error!(profile = %upstream.profile, "upstream names a profile missing from the catalog");
        let digest = RequestDigest::of(
            &upstream_name,
            parts.method.as_str(),
            &target,
            headers,
            &body,
        );
        inner.metrics.count(&upstream_name, "-", "internal");
        let (e, rec) = refuse(ApiError::internal(), vec![], "-", Some(digest.to_hex()));
        gw.audit(rec).await;
        return Err(e);
    };
    // One digest of the request: the audit entry's, and the classification memo's key.
    let (digest, classified) = blastwall_policy::classify_request(
        profile,
        &upstream_name,
        parts.method.as_str(),
        &target,
        headers,
        &body,
    );
    let digest = digest.to_hex();
    let classification = match classified {
        Ok(c) => c,
        Err(err) => {
            // The classifier's errors end with their own `hint: …`: it goes in `hint`, once.
            let text = err.to_string();
            let (what, hint) = match text.split_once("\nhint: ") {
                Some((what, hint)) => (what.to_owned(), hint.to_owned()),
                None => (
                    text.clone(),
                    "send a well-formed request the upstream's profile can classify".to_owned(),
                ),
            };
            let e = ApiError::new(
                StatusCode::BAD_REQUEST,
                "unparseable_request",
                format!(
                    "the gateway cannot tell what this request does, so it was not forwarded: {what}"
                ),
                hint,
            );
            let (e, rec) = refuse(e, vec![], "-", Some(digest));
            gw.audit(rec).await;
            inner.metrics.count(&upstream_name, "-", "unparseable");
            return Err(e);
        }
    };
    let ops: Vec<String> = classification
        .names()
        .map(|n| n.as_str().to_owned())
        .collect();
    let class = classification.strictest.as_str();
    span.record("operation", tracing::field::display(Joined(&ops)));

    // 4. authorize
    let verdict = inner
        .authorize
        .decide(&token, &environment, &upstream, &classification);
    inner
        .metrics
        .decision_seconds
        .observe(started.elapsed().as_secs_f64());
    match verdict {
        Verdict::Allow => {}
        Verdict::Deny {
            operation,
            reason,
            hint,
        } => {
            let e = ApiError::new(
                StatusCode::FORBIDDEN,
                "denied",
                format!("`{operation}` was refused: {reason}"),
                hint,
            )
            .with_decision(&operation, &reason);
            let (e, rec) = refuse(e, ops, class, Some(digest));
            gw.audit(rec).await;
            inner.metrics.count(&upstream_name, class, "deny");
            return Err(e);
        }
        Verdict::Hold {
            operation,
            reason,
            hint,
        } => {
            let e = ApiError::new(
                StatusCode::FORBIDDEN,
                "approval_required",
                format!("`{operation}` needs a human's approval: {reason}"),
                hint,
            )
            .with_decision(&operation, &reason);
            let (e, rec) = refuse_as("hold", e, ops, class, Some(digest));
            gw.audit(rec).await;
            inner.metrics.count(&upstream_name, class, "hold");
            return Err(e);
        }
    }

    // 5. forward with the sealed credential, never the agent's. From here the request may be
    // carried out upstream, so it is audited even if the client goes away before the answer
    // (hyper then drops this future): `Forwarding`'s drop writes it.
    let mut forwarding = Forwarding {
        gw,
        request_id,
        started,
        outcome: Outcome {
            token: Some(&token),
            upstream: &upstream_name,
            operations: ops,
            class,
            decision: "allow",
            reason: None,
            digest: Some(digest),
            status: 0,
        },
        armed: true,
    };
    let response = forward(
        gw,
        &upstream,
        &classification,
        parts.headers,
        body,
        &credential,
    )
    .await;
    forwarding.outcome.status = match &response {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.status.as_u16(),
    };
    forwarding.armed = false;
    // `audit` queues the entry even if this wait is cancelled.
    gw.audit(record(request_id, &forwarding.outcome, started))
        .await;
    inner.metrics.count(&upstream_name, class, "allow");
    response
}

/// The status written for a request whose client went away before the upstream answered
/// (nginx's "client closed request").
const CLIENT_CLOSED: u16 = 499;

/// A request on its way upstream: if it is dropped before its answer is audited (the client
/// closed the connection or reset the stream), its entry is written from here, with status
/// [`CLIENT_CLOSED`].
struct Forwarding<'a> {
    gw: &'a Gateway,
    request_id: &'a str,
    started: Instant,
    outcome: Outcome<'a>,
    armed: bool,
}

impl Drop for Forwarding<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.outcome.status = CLIENT_CLOSED;
        self.outcome.reason = Some(
            "the client went away before the upstream answered; the request was forwarded and may have been carried out"
                .to_owned(),
        );
        self.gw
            .audit_now(record(self.request_id, &self.outcome, self.started));
        self.gw
            .inner
            .metrics
            .count(self.outcome.upstream, self.outcome.class, "allow");
    }
}

async fn forward(
    gw: &Gateway,
    upstream: &UpstreamRecord,
    c: &Classification,
    incoming: http::HeaderMap,
    body: Bytes,
    credential: &OpenedCredential,
) -> Result<Response, ApiError> {
    let inner = &gw.inner;
    let profile = inner
        .catalog
        .profile(&upstream.profile)
        .ok_or_else(ApiError::internal)?;
    let injection = credential
        .injection(&upstream.profile, profile.credential())
        .ok_or_else(|| {
            // (`upstream add` refuses such a credential; one sealed before it did, or by hand.)
            tracing::error!(upstream = %upstream.name, "the credential cannot be sent as a header");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "credential_unusable",
                format!(
                    "the `{}` credential cannot be sent in a request header",
                    upstream.name
                ),
                format!(
                    "ask the operator to seal it again as plain text (`blastwall upstream add {} --env … --secret-stdin`)",
                    upstream.name
                ),
            )
        })?;

    let uri: Uri = format!("{}{}", upstream.base_url, c.target)
        .parse()
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "unparseable_request",
                "the request path cannot be forwarded",
                "check the path for characters that are not allowed in a URL",
            )
        })?;
    let method = http::Method::from_bytes(c.method.as_bytes()).map_err(|_| ApiError::internal())?;
    let mut req = http::Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(body))
        .map_err(|_| ApiError::internal())?;
    *req.headers_mut() = upstream_request_headers(incoming);
    req.headers_mut()
        .insert(injection.name.clone(), injection.value.clone());

    let client = inner.clients.for_upstream(upstream.name.as_str());
    let t0 = Instant::now();
    let (resp, checkin) =
        match tokio::time::timeout(inner.config.response_timeout, client.send(req)).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    format!(
                        "`{}` did not answer within {}",
                        upstream.name,
                        blastwall_core::format_duration(inner.config.response_timeout)
                    ),
                    "retry later; the request may or may not have been carried out upstream",
                ));
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "upstream request failed");
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unreachable",
                    format!("cannot reach `{}`", upstream.name),
                    "retry later; the operator should check the upstream's base URL and network",
                ));
            }
            Ok(Ok(r)) => r,
        };
    inner
        .metrics
        .upstream_seconds
        .get_or_create(&crate::metrics::LatencyLabels {
            upstream: upstream.name.as_str().to_owned(),
        })
        .observe(t0.elapsed().as_secs_f64());
    let (parts, body) = resp.into_parts();
    if let Some(coding) = encoded_response(&parts.headers)
        && !http_body::Body::is_end_stream(&body)
    {
        // The connection is not reused: dropping `checkin` unreleased closes it.
        tracing::warn!(upstream = %upstream.name, coding = %coding, "upstream sent an encoded response although asked for identity");
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_encoded_response",
            format!(
                "`{}` answered with a `{coding}`-encoded body although the gateway asked for none; the gateway cannot check an encoded body for its credential, so it is not passed on",
                upstream.name
            ),
            "retry; if it persists, the operator should check the upstream (it must honour `Accept-Encoding: identity`)",
        ));
    }
    let scrubber = Scrubber::new(injection.needles.clone());
    let headers = agent_response_headers(parts.headers, &scrubber);
    let mut out = Response::new(scrubbed_body(
        body,
        checkin,
        scrubber,
        inner.config.response_timeout,
    ));
    *out.status_mut() = parts.status;
    *out.headers_mut() = headers;
    Ok(out)
}

/// `/proxy/<upstream><target>` → (upstream, target); the target keeps its raw bytes (the policy
/// normalizes it, and what is forwarded is the normalized form).
fn split_proxy_path(uri: &Uri) -> Option<(String, String)> {
    let path = uri.path();
    let rest = path.strip_prefix("/proxy/")?;
    let (name, tail) = match rest.find('/') {
        Some(i) => (rest.get(..i)?, rest.get(i..)?),
        None => (rest, "/"),
    };
    EnvName::new(name).ok()?;
    let target = match uri.query() {
        Some(q) => format!("{tail}?{q}"),
        None => tail.to_owned(),
    };
    Some((name.to_owned(), target))
}

async fn lookup_upstream(gw: &Gateway, name: &str) -> Result<Arc<UpstreamRecord>, ApiError> {
    if let Some(u) = gw.inner.upstreams.read().await.get(name) {
        return Ok(u.clone());
    }
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_upstream",
            format!("this gateway has no upstream `{name}`"),
            "use one of the upstreams your operator configured (`blastwall upstream list`)",
        )
    };
    let key = EnvName::new(name).map_err(|_| not_found())?;
    let found = gw
        .inner
        .store
        .upstream_get(&key)
        .await
        .map_err(store_down)?;
    let up = Arc::new(found.ok_or_else(not_found)?);
    gw.inner
        .upstreams
        .write()
        .await
        .insert(name.to_owned(), up.clone());
    Ok(up)
}

async fn lookup_env(
    gw: &Gateway,
    name: &EnvName,
) -> Result<Arc<blastwall_core::Environment>, ApiError> {
    if let Some(e) = gw.inner.envs.read().await.get(name) {
        return Ok(e.clone());
    }
    let found = gw.inner.store.env_get(name).await.map_err(store_down)?;
    let e = Arc::new(found.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unknown_environment",
            format!("this token's environment `{name}` does not exist"),
            "ask the token's owner for a new token",
        )
    })?);
    gw.inner.envs.write().await.insert(name.clone(), e.clone());
    Ok(e)
}

/// The upstream's credential for the token's environment: the wall. Only the token's own
/// environment is ever looked at; an environment whose key this process lacks is sealed.
async fn credential_for(
    gw: &Gateway,
    upstream: &UpstreamRecord,
    env: &EnvName,
) -> Result<Arc<OpenedCredential>, ApiError> {
    if let Some(c) = gw
        .inner
        .credentials
        .read()
        .await
        .get(upstream.name.as_str())
        .and_then(|by_env| by_env.get(env))
    {
        return Ok(c.clone());
    }
    let Some(identity) = gw.inner.keys.get(env) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "environment_sealed",
            format!(
                "environment `{env}` is sealed on this gateway: it does not hold that environment's key"
            ),
            "send the request to the gateway that serves this token's environment",
        ));
    };
    let sealed = gw
        .inner
        .store
        .credential_get(&upstream.name, env)
        .await
        .map_err(store_down)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_credential",
                format!("upstream `{}` has no credential for environment `{env}`", upstream.name),
                format!("ask the operator to run `blastwall upstream add {} --env {env} --secret-stdin`", upstream.name),
            )
        })?;
    let opened = identity.unseal(&sealed.sealed).map_err(|e| {
        tracing::error!(error = %e, "a sealed credential does not open with this environment's key");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "credential_unusable",
            format!("the `{}` credential for `{env}` cannot be opened on this gateway", upstream.name),
            "ask the operator to re-seal it (`blastwall upstream check`)",
        )
    })?;
    let opened = Arc::new(OpenedCredential::new(opened, &sealed.sealed));
    gw.inner
        .credentials
        .write()
        .await
        .entry(upstream.name.as_str().to_owned())
        .or_default()
        .insert(env.clone(), opened.clone());
    Ok(opened)
}

/// 429 for a token over `[gateway] token_rate`, with how long to wait.
fn rate_limited(config: &GatewayConfig, wait: std::time::Duration) -> ApiError {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "this token made more than {} requests a second (bursts of up to {}), so this one was not forwarded",
            config.token_rate, config.token_burst
        ),
        format!(
            "wait {} s (the `Retry-After` header) and send fewer requests; the operator can raise `[gateway] token_rate`",
            secs.max(1)
        ),
    );
    e.retry_after = Some(secs.max(1));
    e
}

fn store_down(e: blastwall_store::StoreError) -> ApiError {
    tracing::error!(error = %e, "store lookup failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unreachable",
        "the gateway cannot reach its store",
        "retry in a few seconds; the operator should check the gateway's store",
    )
}

/// A request id: unique within the process and unpredictable across processes, without a
/// system call per request (a per-process random key, a counter, and a bijective mix).
fn new_request_id() -> String {
    static KEY: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let key = *KEY.get_or_init(|| {
        let mut b = [0u8; 8];
        if getrandom::fill(&mut b).is_err() {
            // Ids need not be secret; the clock still tells processes apart.
            return jiff::Timestamp::now().as_nanosecond() as u64;
        }
        u64::from_le_bytes(b)
    });
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("req_{:016x}", splitmix64(key.wrapping_add(n)))
}

/// Operation names joined with commas, written straight into a span field (no joined copy).
struct Joined<'a>(&'a [String]);

impl std::fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, op) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(op)?;
        }
        Ok(())
    }
}

/// SplitMix64's finalizer: a bijection on `u64`, so distinct counters give distinct ids.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `detail` of a `request.decide` audit entry, serialized straight to JSON (field order is
/// the order of the text).
#[derive(serde::Serialize)]
struct Detail<'a> {
    request_id: &'a str,
    holder: Option<&'a str>,
    owner: Option<&'a str>,
    operations: &'a [String],
    class: &'a str,
    decision: &'a str,
    reason: Option<&'a str>,
    request_digest: Option<&'a str>,
    status: u16,
    latency_us: u64,
}

fn record(request_id: &str, o: &Outcome<'_>, started: Instant) -> AuditRecord {
    let detail = Detail {
        request_id,
        holder: o.token.map(|t| t.holder.as_str()),
        owner: o.token.map(|t| t.owner.as_str()),
        operations: &o.operations,
        class: o.class,
        decision: o.decision,
        reason: o.reason.as_deref(),
        request_digest: o.digest.as_deref(),
        status: o.status,
        latency_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
    };
    AuditRecord {
        at: jiff::Timestamp::now().to_string(),
        actor: o
            .token
            .map_or_else(|| "anonymous".to_owned(), |t| format!("token:{}", t.id)),
        action: "request.decide".to_owned(),
        env: o.token.map(|t| t.env.to_string()),
        target: Some(o.upstream.to_owned()),
        // Serializing plain strings and numbers cannot fail; an empty object would still be
        // hashed and stored, never a panic.
        detail: serde_json::to_string(&detail).unwrap_or_else(|_| "{}".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_differ() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|i| i.len() == 20 && i.starts_with("req_")));
    }

    #[test]
    fn operations_join_with_commas() {
        let ops = ["a:x.read".to_owned(), "a:y.write".to_owned()];
        assert_eq!(Joined(&ops).to_string(), "a:x.read,a:y.write");
        assert_eq!(Joined(&ops[..1]).to_string(), "a:x.read");
        assert_eq!(Joined(&[]).to_string(), "");
    }

    #[test]
    fn proxy_paths() {
        let u: Uri = "/proxy/railway/graphql/v2?x=1".parse().unwrap();
        assert_eq!(
            split_proxy_path(&u),
            Some(("railway".into(), "/graphql/v2?x=1".into()))
        );
        let u: Uri = "/proxy/railway".parse().unwrap();
        assert_eq!(split_proxy_path(&u), Some(("railway".into(), "/".into())));
        for bad in [
            "/proxy/",
            "/proxy/Rail%77ay/x",
            "/other/railway/x",
            "/proxy//x",
        ] {
            let u: Uri = bad.parse().unwrap();
            assert_eq!(split_proxy_path(&u), None, "{bad}");
        }
    }
}
