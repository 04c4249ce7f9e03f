//! The scope matrix behind `blastwall token test`: every operation of every upstream a token can
//! reach, decided by the same authorizer a live request goes through.
//!
//! Two things a live request meets before the authorizer are applied here too: a token that is
//! expired or revoked is refused whatever it asks (every row is `deny`), and `<profile>:unknown`
//! is read for GET, HEAD and OPTIONS and destructive for any other method, so it has a row for
//! each.

use std::path::Path;

use blastwall_core::Environment;
use blastwall_core::operation::OperationClass;
use blastwall_core::operation::OperationName;
use blastwall_core::record::{TokenRecord, TokenState, UpstreamRecord};
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
    /// The methods the row stands for, when the operation's class depends on the method
    /// (`<profile>:unknown`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub methods: Option<&'static str>,
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
    // What authentication answers a live request with this token, before any decision.
    let refused = match token.state(jiff::Timestamp::now()) {
        TokenState::Active => None,
        TokenState::Expired => Some(format!("the token expired at {}", token.expires_at)),
        TokenState::Revoked => Some("the token was revoked".to_owned()),
    };
    let mut rows = Vec::new();
    for up in upstreams {
        let Some(profile) = catalog.profile(&up.profile) else {
            continue;
        };
        for op in profile.operations() {
            let cases: &[(OperationClass, &str, Option<&'static str>)] =
                if op.name == OperationName::unknown(profile.name()) {
                    &[
                        (OperationClass::Read, "GET", Some("GET, HEAD, OPTIONS")),
                        (OperationClass::Destructive, "POST", Some("other methods")),
                    ]
                } else {
                    &[(op.class, "POST", None)]
                };
            for &(class, method, methods) in cases {
                let (decision, reason) = match &refused {
                    Some(why) => ("deny", Some(why.clone())),
                    None => {
                        let c = Classification {
                            ops: vec![(op.name.clone(), class)],
                            strictest: class,
                            method: method.to_owned(),
                            target: "/".to_owned(),
                        };
                        match authorize.decide(token, env, up, &c) {
                            Verdict::Allow => ("allow", None),
                            Verdict::Deny { reason, .. } => ("deny", Some(reason)),
                            Verdict::Hold { reason, .. } => ("hold", Some(reason)),
                        }
                    }
                };
                rows.push(MatrixRow {
                    upstream: up.name.to_string(),
                    operation: op.name.to_string(),
                    methods,
                    class,
                    decision,
                    reason,
                });
            }
        }
    }
    Ok(rows)
}
