#!/usr/bin/env bash
# The README's Quick start: build blastwall, then in a temporary folder set up a staging and a
# production environment, seal a different provider credential for each, issue a scoped staging
# token for an agent, revoke it, and verify the audit chain. Uses the embedded default (SQLite).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q -p blastwall-cli
bw="$PWD/target/release/blastwall"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

step blastwall init
"$bw" init
step blastwall env list
"$bw" env list
step "blastwall upstream add railway --profile railway --base-url https://backboard.railway.com --env production --secret-stdin"
printf 'prod-railway-token-%s' "$RANDOM$RANDOM" | "$bw" upstream add railway --profile railway \
  --base-url https://backboard.railway.com --env production --secret-stdin
step "blastwall upstream add railway --env staging --secret-stdin"
printf 'staging-railway-token-%s' "$RANDOM$RANDOM" | "$bw" upstream add railway --env staging --secret-stdin
step blastwall upstream list
"$bw" upstream list
step "blastwall token issue --env staging --owner jer@pocketos.com --holder cursor-agent --scope 'railway:domain.*' --ttl 8h"
token=$("$bw" token issue --env staging --owner jer@pocketos.com --holder cursor-agent \
  --scope 'railway:domain.*' --ttl 8h)
echo "${token:0:16}… (the agent gets this; the store keeps only its digest)"
step "blastwall token issue --env staging … --ttl 9h   # refused: over the staging maximum"
"$bw" token issue --env staging --owner jer@pocketos.com --holder cursor-agent \
  --scope 'railway:domain.*' --ttl 9h || echo "(refused, exit $?)"
step "mv data/keys/production.key ..   # a staging host must not hold the production key"
mv data/keys/production.key ../production.key.$$
"$bw" env list
"$bw" upstream check railway --env production || echo "(production is sealed here, exit $?)"
mv ../production.key.$$ data/keys/production.key
step blastwall token list
"$bw" token list
id=$("$bw" token list --json | sed -n 's/.*"id": "\(tok_[0-9a-f]*\)".*/\1/p' | head -1)
step "blastwall token revoke $id"
"$bw" token revoke "$id"
step blastwall log tail
"$bw" log tail
step blastwall log verify
"$bw" log verify
