//! Blastwall's policy: the operation catalog (provider profiles kept as data in `catalog/*.toml`
//! and embedded at build time), the classification of HTTP requests into operations, and the
//! authorization of those operations.
//!
//! This crate does no network I/O, and the only state it keeps between requests are bounded
//! memos of answers (GraphQL classifications per profile, verdicts per authorizer) that never
//! change an answer: the gateway calls it with the parts of a request and acts on the answer;
//! the CLI uses the catalog to check scopes.

pub mod authz;
pub mod catalog;
pub mod classify;
pub mod digest;
pub mod error;
pub mod normalize;

pub use authz::{Authorizer, DecideInput, Verdict};
pub use catalog::{
    Catalog, CredentialTemplate, OperationDef, PathCase, Profile, ProfileKind, Sample, SampleExpect,
};
pub use classify::{Classification, Engine, classify, classify_request, classify_with};
pub use digest::RequestDigest;
pub use error::{ClassifyError, PolicyError};
pub use normalize::{NormalizedPath, normalize_path};
