//! A stand-in for Railway's GraphQL API, built into the binary for `blastwall demo` only.
//!
//! It answers `customDomainCreate` and `volumeDelete` (which really removes the volume from its
//! in-memory state, so the demo can show the volume survived), and records the `Authorization`
//! header of every request it receives, so the demo can show which credential arrived.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use serde_json::{Value, json};

/// What the stand-in saw and holds.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// Every `Authorization` header value received, in order.
    pub(crate) authorizations: Vec<String>,
    /// The volumes that exist.
    pub(crate) volumes: BTreeSet<String>,
}

pub(crate) type Shared = Arc<Mutex<Seen>>;

/// The router: `POST /graphql/v2`.
pub(crate) fn router(state: Shared) -> Router {
    Router::new()
        .route("/graphql/v2", post(graphql))
        .with_state(state)
}

async fn graphql(
    State(state): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let query = body
        .get("query")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let Ok(mut seen) = state.lock() else {
        return Json(json!({"errors": [{"message": "stand-in state poisoned"}]}));
    };
    seen.authorizations.push(
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(none)")
            .to_owned(),
    );
    if query.contains("volumeDelete") {
        // What the real API did in April 2026: the volume and the backups in it are gone.
        seen.volumes.clear();
        return Json(json!({"data": {"volumeDelete": true}}));
    }
    if query.contains("customDomainCreate") {
        return Json(
            json!({"data": {"customDomainCreate": {"id": "cd_demo_1", "domain": "app.pocketos.example"}}}),
        );
    }
    Json(
        json!({"data": null, "errors": [{"message": "the demo stand-in only knows customDomainCreate and volumeDelete"}]}),
    )
}
