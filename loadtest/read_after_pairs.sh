#!/usr/bin/env bash
# Compares two builds on idle checkouts and reads right after them
# (loadtest/read_after_checkout.py), in alternating pairs: each run starts
# `cart up` of one build with the default spec (cluster.toml) on ports
# 9400+ in a temporary directory, warms up with 100 rounds, measures 300,
# prints each order node's mean /internal/read time and read waits from
# its /metrics, and stops the cluster.
#   loadtest/read_after_pairs.sh BASE/cart NEW/cart [PAIRS]   # default 2
set -euo pipefail
cd "$(dirname "$0")/.."
base="$1" new="$2" pairs="${3:-2}"
port=9400
run() {
  local label="$1" bin="$2" dir
  dir="$(mktemp -d)"
  sed -e "s|^data_dir = .*|data_dir = \"$dir/data\"|" -e "s|^base_port = .*|base_port = $port|" \
    cluster.toml >"$dir/spec.toml"
  "$bin" up --spec "$dir/spec.toml" --no-prometheus >"$dir/up.log" 2>&1 &
  local up=$!
  for _ in $(seq 60); do grep -q "Ctrl-C" "$dir/up.log" && break; sleep 1; done
  python3 loadtest/read_after_checkout.py --gateway "127.0.0.1:$port" --n 100 >/dev/null
  echo "== $label ($bin)"
  python3 loadtest/read_after_checkout.py --gateway "127.0.0.1:$port" --n 300
  for node in 0 1 2; do
    curl -s "127.0.0.1:$((port + 150 + node))/metrics" | python3 -c '
import re, sys
sums, counts = {}, {}
for line in sys.stdin:
    m = re.match(r"(\w+)_(sum|count)(\{.*\})? (\S+)", line)
    if m:
        (sums if m[2] == "sum" else counts)[m[1] + (m[3] or "")] = float(m[4])
for k in sorted(sums):
    if counts.get(k) and ("internal/read" in k or "read_wait" in k or "hurry_wait" in k):
        print(f"  order node {sys.argv[1]}: {sums[k] / counts[k] * 1000:6.2f} ms mean, {int(counts[k])}x {k}")
' "$((node + 1))"
  done
  kill -INT "$up"
  wait "$up" || true
  rm -rf "$dir"
}
for _ in $(seq "$pairs"); do
  run base "$base"
  run new "$new"
done
