//! Blastwall's gateway: the HTTP server agents talk to. It authenticates the agent's token, picks
//! the sealed credential of the token's own environment (the wall), classifies the request into
//! operations, asks the policy for a decision, and forwards allowed requests with the real
//! credential injected, streaming the response back scrubbed of that credential. It also serves
//! `/healthz` and `/metrics`.
//!
//! Classification and authorization belong to `blastwall-policy`; state to `blastwall-store`.

mod auth;
mod authorize;
pub mod error;
mod forward;
mod inject;
mod matrix;
mod metrics;
mod pool;
mod proxy;
mod scrub;
mod server;

pub use error::{ApiError, GatewayError};
pub use matrix::{MatrixRow, scope_matrix};
pub use server::{Gateway, GatewaySetup, Running};
