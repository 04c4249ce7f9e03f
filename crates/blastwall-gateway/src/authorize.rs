//! The decision step: the token's scope, the environment's guardrails and the operator's
//! policies, over every operation of the request; the strictest outcome wins.

use std::path::Path;

use blastwall_core::operation::OperationClass;
use blastwall_core::record::{TokenRecord, UpstreamRecord};
use blastwall_core::{Environment, Tier};
use blastwall_policy::{Catalog, Classification};

use crate::error::GatewayError;

/// What the gateway does with a classified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Forward it.
    Allow,
    /// Refuse it.
    Deny {
        operation: String,
        reason: String,
        hint: String,
    },
    /// Hold it for a human's approval.
    Hold {
        operation: String,
        reason: String,
        hint: String,
    },
}

/// The authorizer.
#[derive(Debug)]
pub(crate) struct Authorize {}

impl Authorize {
    pub(crate) fn new(
        _catalog: &Catalog,
        _policy_dir: Option<&Path>,
    ) -> Result<Self, GatewayError> {
        Ok(Self {})
    }

    /// Decides on every operation of the request; the first refusal (by strictness) wins.
    pub(crate) fn decide(
        &self,
        token: &TokenRecord,
        env: &Environment,
        _upstream: &UpstreamRecord,
        c: &Classification,
    ) -> Verdict {
        let scope = token
            .scope
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let mut ops: Vec<_> = c.ops.iter().collect();
        ops.sort_by_key(|op| std::cmp::Reverse(op.1));
        for (op, class) in ops {
            if !token.scope.iter().any(|p| p.matches(op)) {
                return Verdict::Deny {
                    operation: op.to_string(),
                    reason: format!("outside this token's scope ({scope})"),
                    hint: format!(
                        "this token may only do {scope}; ask {} for a token whose scope includes `{op}` if the task needs it",
                        token.owner
                    ),
                };
            }
            if env.tier == Tier::Prod && *class == OperationClass::Destructive {
                return Verdict::Hold {
                    operation: op.to_string(),
                    reason: format!("`{op}` is destructive and `{}` is a production environment", env.name),
                    hint: "a human approver must approve this exact request; approvals are not available on this gateway yet, so it is refused".to_owned(),
                };
            }
        }
        Verdict::Allow
    }
}
