//! The decision step: the gateway's adapter over the Cedar authorizer of `blastwall-policy`
//! (the token's scope as `permit` policies, the environment's guardrails and the operator's
//! policies as `forbid`), turning its verdict into what the reply to the agent says.

use std::path::Path;

use blastwall_core::Environment;
use blastwall_core::record::{TokenRecord, UpstreamRecord};
use blastwall_policy::{Authorizer, Catalog, Classification, DecideInput};

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

/// The authorizer, validated at start-up (a bad policy stops the gateway, not a request).
#[derive(Debug)]
pub(crate) struct Authorize {
    cedar: Authorizer,
}

impl Authorize {
    pub(crate) fn new(catalog: &Catalog, policy_dir: Option<&Path>) -> Result<Self, GatewayError> {
        Ok(Self {
            cedar: Authorizer::new(catalog, policy_dir)?,
        })
    }

    /// Decides on every operation of the request; the strictest outcome wins.
    pub(crate) fn decide(
        &self,
        token: &TokenRecord,
        env: &Environment,
        upstream: &UpstreamRecord,
        c: &Classification,
    ) -> Verdict {
        let input = DecideInput {
            token_id: token.id.as_str(),
            scope: &token.scope,
            environment: env.name.as_str(),
            tier: env.tier,
            upstream: upstream.name.as_str(),
            owner: token.owner.as_str(),
            holder: token.holder.as_str(),
            // Approvals (issue: approval gates) are not served by this gateway yet.
            approved: false,
        };
        match self.cedar.decide(&input, &c.ops) {
            blastwall_policy::Verdict::Allow => Verdict::Allow,
            blastwall_policy::Verdict::Deny {
                operation,
                reason,
                hint,
            } => Verdict::Deny {
                operation: operation.to_string(),
                reason,
                // Name the human to ask: the agent can act on that.
                hint: hint.replace(
                    "the token's owner",
                    &format!("the token's owner ({})", token.owner),
                ),
            },
            blastwall_policy::Verdict::Hold { operations } => {
                let names: Vec<String> = operations.iter().map(ToString::to_string).collect();
                Verdict::Hold {
                    operation: names.first().cloned().unwrap_or_default(),
                    reason: format!(
                        "{} is destructive and `{}` is a production environment",
                        names.join(", "),
                        env.name
                    ),
                    hint: "a human approver must approve this exact request; approvals are not \
                           available on this gateway yet, so it is refused"
                        .to_owned(),
                }
            }
        }
    }
}
