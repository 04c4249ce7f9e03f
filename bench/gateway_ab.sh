#!/usr/bin/env bash
# Paired CPU cost of two (or more) gateway builds on the same store, upstream and load:
#
#   bash bench/gateway_ab.sh ROUNDS GET|POST BINARY...
#
# Starts nginx (a fixed JSON body on 127.0.0.1:18080) and, in turn, each `blastwall` BINARY as
# `blastwall serve` on one store (pinned to CPU 1, as the upstream), and loads it with wrk pinned
# to CPU 0 (32 connections, 2 s warm-up, then 6 s): a REST GET or a 1 KB GraphQL POST that the
# token may make. Each row: req/s and the gateway's CPU µs per request (from /proc/PID/stat).
# Rounds alternate the binaries, so the machine's drift hits both alike; compare medians.
# Needs nginx, wrk, python3 and taskset. Work files go to $WORK (default /tmp/bw-gateway-ab).
set -euo pipefail
ROUNDS=${1:?rounds}; METHOD=${2:?GET or POST}; shift 2
[ $# -ge 1 ] || { echo "usage: $0 ROUNDS GET|POST BINARY..." >&2; exit 2; }
BINARIES=("$@")
W=${WORK:-/tmp/bw-gateway-ab}
rm -rf "$W"; mkdir -p "$W/bw"
cleanup() { [ -f "$W/pid" ] && kill "$(cat "$W/pid")" 2>/dev/null; [ -f "$W/up.pid" ] && kill "$(cat "$W/up.pid")" 2>/dev/null; true; }
trap cleanup EXIT
cat > "$W/up.conf" <<EOC
daemon off; worker_processes 1; pid $W/up.pid; error_log $W/up.err;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:18080;
    location / { default_type application/json; return 200 '{"data":{"ok":true}}'; } } }
EOC
taskset -c 1 nginx -c "$W/up.conf" -p "$W" &
cat > "$W/bench.lua" <<'EOL'
wrk.method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
if body and #body > 0 then wrk.body = body end
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
if wrk.method == "POST" then wrk.headers["Content-Type"] = "application/json" end
EOL
python3 - "$W/body.json" <<'EOP'
import json, sys
note = "x" * 900
q = 'mutation { customDomainCreate(input: {domain: "app.example.com", note: "%s"}) { id } }' % note
open(sys.argv[1], "w").write(json.dumps({"query": q}))
EOP
export BLASTWALL_LOG=error
BW=${BINARIES[0]}
(cd "$W/bw" && "$BW" init >/dev/null && printf '\n[gateway]\nlisten = "127.0.0.1:17070"\n' >> blastwall.toml)
for p in "railway railway" "api rest"; do set -- $p
  (cd "$W/bw" && echo -n upstream-credential-0123456789abcdef | "$BW" upstream add "$1" --profile "$2" \
     --base-url http://127.0.0.1:18080 --env staging --secret-stdin >/dev/null)
done
TOKEN=$(cd "$W/bw" && "$BW" token issue --env staging --owner bench@example.com --holder wrk \
  --scope 'railway:domain.*,rest:request.read' --ttl 8h 2>/dev/null)
export BENCH_TOKEN=$TOKEN BENCH_METHOD=$METHOD
if [ "$METHOD" = POST ]; then
  BENCH_BODY=$(cat "$W/body.json"); URL=http://127.0.0.1:17070/proxy/railway/graphql/v2
else
  BENCH_BODY=; URL=http://127.0.0.1:17070/proxy/api/v1/items/1
fi
export BENCH_BODY
load() {  # SECONDS → "req/s cpu_us_per_req"
  local pid t0 t1 out n rps
  pid=$(cat "$W/pid")
  t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
  out=$(taskset -c 0 wrk -t1 -c32 -d"$1"s -s "$W/bench.lua" "$URL")
  t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
  n=$(echo "$out" | awk '/requests in/{print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  echo "$rps $(python3 -c "print(round(($t1-$t0)/$(getconf CLK_TCK)*1e6/$n,1))")"
}
for r in $(seq "$ROUNDS"); do
  for b in "${BINARIES[@]}"; do
    if [ -f "$W/pid" ]; then
      old=$(cat "$W/pid"); kill "$old" 2>/dev/null || true
      while kill -0 "$old" 2>/dev/null; do sleep 0.1; done
    fi
    # A build with the per-token rate limit gets it far above this load (its check measured);
    # an older build would refuse the unknown key, so it gets the file without it.
    cfg=blastwall.toml
    if (cd "$W/bw" && "$b" config show 2>/dev/null | grep -q '^gateway.token_rate'); then
      [ -f "$W/bw/limited.toml" ] || { cp "$W/bw/blastwall.toml" "$W/bw/limited.toml"
        printf 'token_rate = 1000000\ntoken_burst = 1000000\n' >> "$W/bw/limited.toml"; }
      cfg=limited.toml
    fi
    (cd "$W/bw" && BLASTWALL_CONFIG=$cfg exec taskset -c 1 "$b" serve > "$W/serve.log" 2>&1) &
    echo $! > "$W/pid"
    for _ in $(seq 50); do curl -fs http://127.0.0.1:17070/healthz >/dev/null 2>&1 && break; sleep 0.1; done
    load 2 >/dev/null
    echo "round $r $METHOD $b $(load 6)"
  done
done
