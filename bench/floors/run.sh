#!/usr/bin/env bash
# Build the floor proxies and measure them against HAProxy, in interleaved rounds.
#
#   bash run.sh [ROUNDS]   (default 3; env SKIP_BUILD=1 reuses the binaries, APPEND=1 adds rounds,
#                           ONLY="haproxy hyper-ct" measures only those targets)
#
# Upstream: Debian nginx on 127.0.0.1:18080 (the port Blastwall's examples/floor.rs hardcodes).
# Load: wrk pinned to CPU 0; every server pinned to CPU 1. CPU per request = utime+stime delta of
# the server process (all threads) over the 6 s measured run / requests completed.
# Results: run/results.tsv (one row per run) and the summary printed by summarize.py.
set -euo pipefail
cd "$(dirname "$0")"
HERE=$PWD
ROUNDS=${1:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HERE/target}
TOKEN=floor-token-0123456789abcdef
W=$HERE/run
REL=$CARGO_TARGET_DIR/release

if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release
  # The baseline: Blastwall's own floor example, built from the main workspace.
  (cd ../.. && cargo build --release --example floor -p blastwall-gateway)
fi

for p in 18080 17073 17171 17174 17175 17176 17177 17178; do
  if ss -ltn "sport = :$p" | grep -q LISTEN; then echo "port $p busy; stop whatever holds it" >&2; exit 1; fi
done

mkdir -p "$W"; : > "$W/pids"
PIDS=()
# SIGINT: pingora's fast shutdown (on SIGTERM it drains for a grace period); the others just stop.
cleanup() {
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

cat > "$W/up.conf" <<EOC
daemon off; master_process off; worker_processes 1; pid $W/up.pid; error_log $W/up.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:18080;
    location / { default_type application/json; return 200 '{"data":{"ok":true}}'; } } }
EOC
cat > "$W/ha.cfg" <<EOC
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:17171
  http-request deny deny_status 401 unless { req.hdr(authorization) -m str "Bearer $TOKEN" }
  http-request set-header Authorization "Bearer upstream-credential"
  default_backend be
backend be
  server up 127.0.0.1:18080
EOC
# Run HAProxy under another name so that someone's `pkill haproxy` elsewhere does not stop it.
ln -sf "$(command -v haproxy)" "$W/sf-haproxy"

start() { # name port cmd...
  local name=$1 port=$2; shift 2
  taskset -c 1 "$@" > "$W/$name.log" 2>&1 &
  PIDS+=($!); echo "$name $port $!" >> "$W/pids"
}
start nginx 18080 nginx -c "$W/up.conf" -p "$W"
start haproxy 17171 "$W/sf-haproxy" -db -f "$W/ha.cfg"
start axum 17073 "$REL/examples/floor"   # Blastwall's examples/floor.rs
start pingora 17174 "$REL/floor-pingora" 127.0.0.1:17174 steal
start pingora-ns 17177 "$REL/floor-pingora" 127.0.0.1:17177 nosteal
start hyper-ct 17175 "$REL/floor-hyper" 127.0.0.1:17175 ct
start hyper-mt 17176 "$REL/floor-hyper" 127.0.0.1:17176 mt
start actix 17178 "$REL/floor-actix" 127.0.0.1:17178
sleep 1.5

# Sanity: each proxy answers 200 with the token and 401 without (axum's floor does not check).
while read -r name port pid; do
  [ "$name" = nginx ] && continue
  ok=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/proxy/railway/x")
  bad=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer nope" "http://127.0.0.1:$port/proxy/railway/x")
  echo "check $name: token->$ok, bad token->$bad"
done < "$W/pids"

export BENCH_TOKEN=$TOKEN
bench() { # name port pid method -> one tsv row
  local name=$1 port=$2 pid=$3 method=$4 url out t0 t1
  export BENCH_METHOD=$method
  if [ "$method" = POST ]; then BENCH_BODY=$(cat body.json); url=http://127.0.0.1:$port/proxy/railway/graphql/v2
  else BENCH_BODY=; url=http://127.0.0.1:$port/proxy/railway/v1/items/1; fi
  export BENCH_BODY
  taskset -c 0 wrk -t1 -c32 -d2s -s bench.lua "$url" > /dev/null
  t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
  out=$(taskset -c 0 wrk -t1 -c32 -d6s -s bench.lua "$url")
  t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
  local n rps lat non2xx
  n=$(awk '/requests in/{print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
  lat=$(awk '/Latency/{print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/{print $NF}' <<<"$out"); non2xx=${non2xx:-0}
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$ROUND" "$name" "$method" "$rps" "$n" \
    "$(python3 -c "print(round(($t1-$t0)/100*1e6/$n,2))")" "$lat" "$non2xx" "$(cut -d' ' -f1 /proc/loadavg)"
}

# CPU busy (in cores, of 2) over 2 s while nothing of ours is loaded: someone else compiling?
foreign_busy() {
  python3 - <<'PY'
import time
def s():
    f = [int(x) for x in open('/proc/stat').readline().split()[1:]]
    return sum(f), f[3] + f[4]
a = s(); time.sleep(2); b = s()
print(round(2 * (1 - (b[1] - a[1]) / (b[0] - a[0])), 2))
PY
}

# ONLY="haproxy axum": measure just these (all servers still run).
TARGETS=$(awk -v only="${ONLY:-}" '$1 != "nginx" && (only == "" || index(" " only " ", " " $1 " "))' "$W/pids")
NT=$(wc -l <<<"$TARGETS")
RES=$W/results.tsv
# APPEND=1: add rounds to the existing results instead of starting over.
FIRST=1
if [ -n "${APPEND:-}" ] && [ -s "$RES" ]; then FIRST=$(( $(tail -n1 "$RES" | cut -f1) + 1 ))
else printf 'round\ttarget\tmethod\trps\treqs\tcpu_us\tlat\tnon2xx\tload1\n' > "$RES"; fi
for ((ROUND=FIRST; ROUND<FIRST+ROUNDS; ROUND++)); do
  for try in 1 2 3 4 5; do
    busy=$(foreign_busy)
    echo "round $ROUND: $(uptime | sed 's/.*load/load/'), foreign busy $busy cores"
    python3 -c "import sys; sys.exit(0 if $busy < 0.3 else 1)" && break
    echo "  machine busy; waiting 60 s"; sleep 60
  done
  # rotate the order from round to round so that no target always runs first
  for ((i=0; i<NT; i++)); do
    line=$(sed -n "$(( (i + ROUND - 1) % NT + 1 ))p" <<<"$TARGETS")
    read -r name port pid <<<"$line"
    kill -0 "$pid" || { echo "$name died" >&2; exit 1; }
    for m in POST GET; do bench "$name" "$port" "$pid" "$m" | tee -a "$RES"; done
  done
done
python3 summarize.py "$RES"
