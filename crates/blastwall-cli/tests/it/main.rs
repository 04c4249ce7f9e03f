//! Integration tests: the real `blastwall` binary, each test in its own temporary folder, on
//! SQLite and on a throwaway PostgreSQL cluster.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub,
    reason = "test code: a failed unwrap is a failed test"
)]
mod backup;
mod errors;
mod gateway;
mod help;
mod s3;
mod scan;
mod session;
mod support;
mod tamper;
