//! Integration tests of the wall scanner: a generated tree with planted secrets and decoys,
//! the hang cases, inputs other than files, and the output formats.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]

mod allow;
mod fixture;
mod hang;
mod inputs;
mod links;
mod output;
mod support;
mod windows;
