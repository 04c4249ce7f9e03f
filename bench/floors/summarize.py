"""Summarize run.sh's results.tsv: medians per target and per-round ratios to HAProxy."""
import csv
import sys
from collections import defaultdict
from statistics import median

rows = list(csv.DictReader(open(sys.argv[1] if len(sys.argv) > 1 else "run/results.tsv"), delimiter="\t"))
by = defaultdict(list)  # (method, target) -> rows
ref = {}  # (method, round) -> haproxy row
for r in rows:
    by[(r["method"], r["target"])].append(r)
    if r["target"] == "haproxy":
        ref[(r["method"], r["round"])] = r

order = list(dict.fromkeys(r["target"] for r in rows))
order.sort(key=lambda t: t != "haproxy")
for method in ("POST", "GET"):
    print(f"\n{method} c32 (medians over {len({r['round'] for r in rows})} rounds; ratios are per round, then median)")
    print(f"{'target':<12}{'req/s':>10}{'cpu us/req':>12}{'rps/HA':>9}{'cpu/HA':>9}  per-round cpu us/req")
    for t in order:
        rs = by.get((method, t), [])
        if not rs:
            continue
        rps = median(float(r["rps"]) for r in rs)
        cpu = median(float(r["cpu_us"]) for r in rs)
        rr = [float(r["rps"]) / float(ref[(method, r["round"])]["rps"]) for r in rs if (method, r["round"]) in ref]
        cr = [float(r["cpu_us"]) / float(ref[(method, r["round"])]["cpu_us"]) for r in rs if (method, r["round"]) in ref]
        bad = sum(int(r["non2xx"] or 0) for r in rs)
        print(f"{t:<12}{rps:>10.0f}{cpu:>12.2f}{median(rr):>9.2f}{median(cr):>9.2f}  "
              + " ".join(r["cpu_us"] for r in rs) + (f"  NON-2XX {bad}" if bad else ""))
print("\nload1 during runs:", " ".join(r["load1"] for r in rows[:: max(1, len(rows) // 12)]))
