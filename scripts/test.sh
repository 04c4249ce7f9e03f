#!/usr/bin/env bash
# Every check and every test, as CI runs them (README, "Tests").
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
cargo test --workspace --benches --no-run --locked
if [ -d fuzz ]; then
  (cd fuzz && cargo check --locked)
fi
