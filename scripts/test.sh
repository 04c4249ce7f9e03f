#!/usr/bin/env bash
# Every check and every test, as CI runs them (README, "Tests").
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# moto's S3 server for the S3 Object Lock tests (tests/it/s3.rs): a venv of its own, made once.
# A missing moto fails those tests; it is never a skip.
moto="${BLASTWALL_TEST_MOTO:-$HOME/.cache/blastwall/moto-venv/bin/moto_server}"
if [ ! -x "$moto" ]; then
  venv="$(dirname "$(dirname "$moto")")"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet 'moto[server]==5.2.5'
fi
export BLASTWALL_TEST_MOTO="$moto"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
cargo test --workspace --benches --no-run --locked
if [ -d fuzz ]; then
  (cd fuzz && cargo check --locked)
fi
