//! Refusals and failures, written for the agent that reads them.
//!
//! Every refusal is JSON with a stable `error` code, a `message`, a `hint` (what to do next) and
//! the `request_id`; decisions also carry the `operation` and the `reason`. Internal detail goes to
//! the log, never into the body.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Serialize;
use thiserror::Error;

/// A refusal or failure of a proxied request.
#[derive(Debug, Clone, Serialize)]
pub struct ApiError {
    /// HTTP status.
    #[serde(skip)]
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub error: &'static str,
    /// One sentence: what happened.
    pub message: String,
    /// What to do next.
    pub hint: String,
    /// The gateway's id for this request (in the audit log too).
    pub request_id: String,
    /// The operation(s) the request was classified as, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// Why a decision refused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Seconds to wait before retrying (a `Retry-After` header), for a rate limit.
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A refusal with a status, a code, a message and a hint.
    pub fn new(
        status: StatusCode,
        error: &'static str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error,
            message: message.into(),
            hint: hint.into(),
            request_id: String::new(),
            operation: None,
            reason: None,
            retry_after: None,
        }
    }

    /// Sets the request id.
    pub fn with_request_id(mut self, id: &str) -> Self {
        id.clone_into(&mut self.request_id);
        self
    }

    /// Sets the operation and reason.
    pub fn with_decision(mut self, operation: &str, reason: &str) -> Self {
        self.operation = Some(operation.to_owned());
        self.reason = Some(reason.to_owned());
        self
    }

    /// 500, never with internal detail in the body (fail closed: the request is not forwarded).
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the gateway could not decide on this request, so it was not forwarded",
            "retry; if it persists, ask the operator to check the gateway's log for this request id",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let retry_after = self.retry_after;
        let mut r = (status, Json(self)).into_response();
        r.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        if let Some(secs) = retry_after {
            r.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        r
    }
}

/// Starting the gateway failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The listen address could not be bound.
    #[error("cannot listen on `{addr}`: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] blastwall_store::StoreError),
    /// The catalog or policies are invalid.
    #[error(transparent)]
    Policy(#[from] blastwall_policy::PolicyError),
    /// A CA file could not be used.
    #[error("cannot use CA file `{path}` for upstream `{upstream}`: {why}")]
    CaFile {
        /// The upstream.
        upstream: String,
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// The TLS setup failed.
    #[error("cannot set up TLS to upstreams: {0}")]
    Tls(String),
    /// Serving failed.
    #[error("the server stopped: {0}")]
    Serve(std::io::Error),
    /// The audit writer's thread could not be started.
    #[error("cannot start the audit writer thread: {0}")]
    AuditWriter(std::io::Error),
}
