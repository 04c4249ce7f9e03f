#!/usr/bin/env python3
"""Gateway benchmark: the same upstream called directly, through Blastwall, HAProxy and nginx.

The upstream is nginx returning a fixed JSON body. Each proxy does the simplest version of the
gateway's job: check the agent's bearer token, replace it with the upstream credential, forward
over keep-alive. Blastwall also classifies (REST for the GET, GraphQL for the POST) and decides.
wrk runs pinned to CPU 0, every server to CPU 1. Three runs of each case; medians reported.

Needs: wrk, nginx (nginx-light), haproxy, taskset; a release build of blastwall.
Usage: python3 bench/gateway.py [--duration 10] [--runs 3] [--out docs/benchmarks.md]
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release", "blastwall")
UPSTREAM_PORT, BW_PORT, HAPROXY_PORT, NGINX_PORT = 18080, 17070, 17071, 17072
CREDENTIAL = "upstream-credential-0123456789abcdef"
TICK = os.sysconf("SC_CLK_TCK")

WRK_LUA = r"""
wrk.method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
if body and #body > 0 then wrk.body = body end
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
if wrk.method == "POST" then wrk.headers["Content-Type"] = "application/json" end
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT %d %f %d %d %d\n", summary.requests, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99), errors))
end
"""


def graphql_body():
    pad = "x" * 900
    q = 'mutation { customDomainCreate(input: {domain: "app.example.com", note: "%s"}) { id domain } }' % pad
    return json.dumps({"query": q})


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except FileNotFoundError:
            pass
    return total


def tree_pids(root_pid):
    """The process and all its descendants (nginx and haproxy fork workers)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children = {}
    for line in out.split("\n"):
        parts = line.split()
        if len(parts) == 2:
            children.setdefault(int(parts[1]), []).append(int(parts[0]))
    pids, stack = [], [root_pid]
    while stack:
        p = stack.pop()
        pids.append(p)
        stack.extend(children.get(p, []))
    return pids


def run_wrk(url, token, method, body, conns, duration, lua):
    env = dict(os.environ, BENCH_TOKEN=token, BENCH_METHOD=method, BENCH_BODY=body or "")
    out = subprocess.run(
        ["taskset", "-c", "0", "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "-s", lua, url],
        capture_output=True, text=True, env=env, check=True,
    ).stdout
    for line in out.splitlines():
        if line.startswith("RESULT "):
            n, secs, p50, p99, errors = line.split()[1:]
            return int(n), float(secs), int(p50), int(p99), int(errors)
    raise RuntimeError("wrk printed no result:\n" + out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    for tool in ["wrk", "nginx", "haproxy", "taskset"]:
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            sys.exit(f"missing {tool}: apt-get install -y wrk nginx-light haproxy util-linux")
    sh(["cargo", "build", "--release", "--locked", "-q", "-p", "blastwall-cli"], cwd=ROOT)

    work = tempfile.mkdtemp(prefix="blastwall-bench-")
    procs = {}
    try:
        # The upstream: nginx with a fixed body, on CPU 1.
        up_conf = os.path.join(work, "upstream.conf")
        with open(up_conf, "w") as f:
            f.write(f"""
daemon off; worker_processes 1; pid {work}/upstream.pid; error_log {work}/upstream.err;
events {{ worker_connections 1024; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{UPSTREAM_PORT};
    location / {{ default_type application/json; return 200 '{{"data":{{"ok":true}}}}'; }} }} }}
""")
        procs["upstream"] = subprocess.Popen(["taskset", "-c", "1", "nginx", "-c", up_conf, "-p", work])
        wait_port(UPSTREAM_PORT)

        # Blastwall.
        bw_dir = os.path.join(work, "bw")
        os.makedirs(bw_dir)
        env = dict(os.environ, BLASTWALL_LOG="error")
        sh([BIN, "init"], cwd=bw_dir, env=env, stdout=subprocess.DEVNULL)
        with open(os.path.join(bw_dir, "blastwall.toml"), "a") as f:
            # The per-token rate limit stays on (its check is part of the cost measured), set
            # far above what one token sends here.
            f.write(f'\n[gateway]\nlisten = "127.0.0.1:{BW_PORT}"\n'
                    'token_rate = 1000000\ntoken_burst = 1000000\n')
        for name, profile in [("railway", "railway"), ("api", "rest")]:
            sh([BIN, "upstream", "add", name, "--profile", profile, "--base-url",
                f"http://127.0.0.1:{UPSTREAM_PORT}", "--env", "staging", "--secret-stdin"],
               cwd=bw_dir, env=env, input=CREDENTIAL.encode(), stdout=subprocess.DEVNULL)
        token = subprocess.run(
            [BIN, "token", "issue", "--env", "staging", "--owner", "bench@example.com", "--holder", "wrk",
             "--scope", "railway:domain.*,rest:request.read", "--ttl", "8h"],
            cwd=bw_dir, env=env, capture_output=True, text=True, check=True).stdout.strip()
        procs["blastwall"] = subprocess.Popen(["taskset", "-c", "1", BIN, "serve"], cwd=bw_dir, env=env)
        wait_port(BW_PORT)

        # HAProxy: check the bearer token, swap it for the credential, keep-alive to the upstream.
        ha_conf = os.path.join(work, "haproxy.cfg")
        with open(ha_conf, "w") as f:
            f.write(f"""
global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:{HAPROXY_PORT}
  http-request deny deny_status 401 unless {{ req.hdr(authorization) -m str "Bearer {token}" }}
  http-request set-header Authorization "Bearer {CREDENTIAL}"
  default_backend be
backend be
  server up 127.0.0.1:{UPSTREAM_PORT}
""")
        procs["haproxy"] = subprocess.Popen(["taskset", "-c", "1", "haproxy", "-f", ha_conf])
        # nginx as a proxy doing the same.
        ng_conf = os.path.join(work, "proxy.conf")
        with open(ng_conf, "w") as f:
            f.write(f"""
daemon off; worker_processes 1; pid {work}/proxy.pid; error_log {work}/proxy.err;
events {{ worker_connections 1024; }}
http {{ access_log off; keepalive_requests 1000000;
  upstream up {{ server 127.0.0.1:{UPSTREAM_PORT}; keepalive 64; }}
  server {{ listen 127.0.0.1:{NGINX_PORT};
    location / {{
      if ($http_authorization != "Bearer {token}") {{ return 401; }}
      proxy_set_header Authorization "Bearer {CREDENTIAL}";
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_pass http://up; }} }} }}
""")
        procs["nginx"] = subprocess.Popen(["taskset", "-c", "1", "nginx", "-c", ng_conf, "-p", work])
        wait_port(HAPROXY_PORT)
        wait_port(NGINX_PORT)

        lua = os.path.join(work, "bench.lua")
        with open(lua, "w") as f:
            f.write(WRK_LUA)
        body = graphql_body()
        targets = {
            "direct": (None, f"http://127.0.0.1:{UPSTREAM_PORT}"),
            "blastwall": ("blastwall", f"http://127.0.0.1:{BW_PORT}/proxy/{{up}}"),
            "haproxy": ("haproxy", f"http://127.0.0.1:{HAPROXY_PORT}"),
            "nginx": ("nginx", f"http://127.0.0.1:{NGINX_PORT}"),
        }
        cases = [("GET", 32), ("GET", 1), ("POST", 32), ("POST", 1)]
        results = {}
        for method, conns in cases:
            path = "/graphql/v2" if method == "POST" else "/v1/items/1"
            up = "railway" if method == "POST" else "api"
            for name, (proc, base) in targets.items():
                url = base.format(up=up) + path
                samples = []
                for _ in range(args.runs):
                    pids = tree_pids(procs[proc].pid) if proc else []
                    before = cpu_ticks(pids)
                    n, secs, p50, p99, errors = run_wrk(url, token, method, body if method == "POST" else "",
                                                        conns, args.duration, lua)
                    after = cpu_ticks(pids)
                    if errors:
                        raise RuntimeError(f"{name} {method} c{conns}: {errors} errors")
                    cpu_us = (after - before) / TICK * 1e6 / n if proc else 0.0
                    samples.append((n / secs, p50, p99, cpu_us))
                med = tuple(statistics.median(s[i] for s in samples) for i in range(4))
                results[(method, conns, name)] = med
                print(f"{method} c{conns} {name:10s} {med[0]:10.0f} req/s  p50 {med[1]:6.0f}us  p99 {med[2]:6.0f}us  cpu {med[3]:5.1f}us/req", flush=True)

        lines = report(results, cases, args)
        text = "\n".join(lines) + "\n"
        print(text)
        if args.out:
            write_section(args.out, text)
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


def report(results, cases, args):
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
    out = [
        "## Gateway",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores ({cpu}), wrk pinned to CPU 0, every server to CPU 1;",
        f"{args.runs} runs of {args.duration}s per case, medians. Reproduce: `python3 bench/gateway.py --duration {args.duration} --runs {args.runs} --out docs/benchmarks.md`.",
        "Upstream: nginx returning a fixed JSON body. Each proxy checks the bearer token, swaps it for the",
        "upstream credential and forwards over keep-alive; Blastwall also authenticates against its store",
        "(cached), classifies (REST path for the GET, a 1 KB GraphQL mutation for the POST), asks its",
        "authorizer, audits the decision and scrubs the response of the credential.",
        "",
        "| case | target | req/s | × direct | × HAProxy | p50 µs | p99 µs | added p50 µs | CPU µs/req |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, conns in cases:
        d = results[(method, conns, "direct")]
        h = results[(method, conns, "haproxy")]
        for name in ["direct", "blastwall", "haproxy", "nginx"]:
            r = results[(method, conns, name)]
            added = r[1] - d[1]
            out.append(
                f"| {method} c{conns} | {name} | {r[0]:.0f} | {r[0] / d[0]:.2f} | {r[0] / h[0]:.2f} | {r[1]:.0f} | {r[2]:.0f} | "
                f"{'' if name == 'direct' else f'{added:.0f}'} | {'' if name == 'direct' else f'{r[3]:.1f}'} |")
    out += ["", END_MARK]
    return out


# Ends the part of the `## Gateway` section this script writes: what follows it in the section
# (readings of the numbers, earlier runs) is kept when the results are replaced.
END_MARK = "<!-- end of bench/gateway.py's results; what follows is kept -->"


def write_section(path, text):
    """Replaces this script's results at the top of the `## Gateway` section of the benchmarks
    file (up to END_MARK), keeping the rest of that section and the other sections. Without the
    mark, the whole section is replaced."""
    old = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if not text.endswith("\n"):
        text += "\n"
    start = old.find("## Gateway")
    if start < 0:
        new = old.rstrip() + "\n\n" + text
    else:
        end = old.find("\n## ", start + 1)
        mark = old.find(END_MARK, start)
        if mark >= 0 and (end < 0 or mark < end):
            new = old[:start] + text + old[mark + len(END_MARK) + 1:]
        else:
            new = old[:start] + text + (old[end + 1:] if end >= 0 else "")
    with open(path, "w") as f:
        f.write(new)


if __name__ == "__main__":
    main()
