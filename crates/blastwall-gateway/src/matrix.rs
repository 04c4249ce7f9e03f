//! The scope matrix behind `blastwall token test`: every operation of every upstream a token can
//! reach, decided by the same authorizer a live request goes through.

use std::path::Path;

use blastwall_core::Environment;
use blastwall_core::operation::OperationClass;
use blastwall_core::record::{TokenRecord, UpstreamRecord};
use blastwall_policy::{Catalog, Classification};
use serde::Serialize;

use crate::authorize::{Authorize, Verdict};
use crate::error::GatewayError;

/// One operation's outcome for a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatrixRow {
    /// The upstream.
    pub upstream: String,
    /// The operation.
    pub operation: String,
    /// Its class.
    pub class: OperationClass,
    /// `allow`, `hold` or `deny`.
    pub decision: &'static str,
    /// Why, when not allowed.
    pub reason: Option<String>,
}

/// Decides every operation of every given upstream's profile for `token`, as a request that does
/// exactly that operation would be decided.
pub fn scope_matrix(
    catalog: &Catalog,
    policy_dir: Option<&Path>,
    token: &TokenRecord,
    env: &Environment,
    upstreams: &[UpstreamRecord],
) -> Result<Vec<MatrixRow>, GatewayError> {
    let authorize = Authorize::new(catalog, policy_dir)?;
    let mut rows = Vec::new();
    for up in upstreams {
        let Some(profile) = catalog.profile(&up.profile) else {
            continue;
        };
        for op in profile.operations() {
            let c = Classification {
                ops: vec![(op.name.clone(), op.class)],
                strictest: op.class,
                method: "POST".to_owned(),
                target: "/".to_owned(),
            };
            let (decision, reason) = match authorize.decide(token, env, up, &c) {
                Verdict::Allow => ("allow", None),
                Verdict::Deny { reason, .. } => ("deny", Some(reason)),
                Verdict::Hold { reason, .. } => ("hold", Some(reason)),
            };
            rows.push(MatrixRow {
                upstream: up.name.to_string(),
                operation: op.name.to_string(),
                class: op.class,
                decision,
                reason,
            });
        }
    }
    Ok(rows)
}
