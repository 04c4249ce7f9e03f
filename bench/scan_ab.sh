#!/usr/bin/env bash
# Paired scanner runs: `cat` of the corpus and each given blastwall binary, interleaved, in three
# cases (no wall file, small.wall, production.wall), then the median elapsed and CPU seconds of
# each and the ratio to `cat`'s median. Run it on a corpus that `bench/scan.py --workdir DIR`
# left (DIR/corpus, DIR/small.wall, DIR/production.wall).
#
#   bash bench/scan_ab.sh [-w DIR] RUNS BINARY...
#
# Interleaving puts before and after in the same minutes of a noisy machine; compare CPU
# seconds when `cat`'s own time moves between runs.
set -euo pipefail
work=/tmp/bw-scan-work
if [ "${1:-}" = -w ]; then work=$2; shift 2; fi
if [ $# -lt 2 ]; then
  echo "usage: bash bench/scan_ab.sh [-w DIR] RUNS BINARY..." >&2
  exit 2
fi
runs=$1; shift
bins=()
for b in "$@"; do bins+=("$(realpath "$b")"); done
command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
for f in corpus small.wall production.wall; do
  [ -e "$work/$f" ] || { echo "$work/$f is missing: run bench/scan.py --workdir $work first" >&2; exit 2; }
done
cd "$work/corpus"
uptime >&2
for _ in $(seq "$runs"); do
  /usr/bin/time -f "cat - %e %U %S" sh -c 'find . -type f -print0 | xargs -0 cat >/dev/null' 2>&1 | tail -1
  for b in "${bins[@]}"; do
    for w in none small.wall production.wall; do
      args=(scan --allow-incomplete --format json)
      [ "$w" = none ] || args+=(--wall "$work/$w")
      # Exit status 1 means findings (there are planted secrets): not a failure here.
      { /usr/bin/time -f "$b $w %e %U %S" "$b" "${args[@]}" . 2>&1 >/dev/null || true; } | tail -1
    done
  done
done | python3 -c '
import statistics as st, sys
runs = {}
for line in sys.stdin:
    p = line.split()
    if len(p) != 5:
        continue
    runs.setdefault((p[0], p[1]), []).append((float(p[2]), float(p[3]) + float(p[4])))
cat = st.median(e for e, _ in runs[("cat", "-")])
for (tool, case), v in sorted(runs.items()):
    e = st.median(x for x, _ in v)
    c = st.median(y for _, y in v)
    print(f"{tool} {case}: elapsed {e:.2f} s, cpu {c:.2f} s, x cat {cat / e:.2f} (n={len(v)})")
'
uptime >&2
