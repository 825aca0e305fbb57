#!/usr/bin/env bash
# Regenerates the figures of docs/loadtest.md on this machine: release
# build, 100- and 1000-user stress runs, the consistency scenario (healthy
# and with the order leader killed), an open-loop knee search, the cluster
# with no load (its idle CPU), open-loop runs at a fixed 5/s (the idle
# checkout), 100/s and 300/s (the CPU figures), a 5-minute 1000-user run
# for the memory figures, and the comparison table and plots (also
# copied into docs/loadtest.md between its markers). Every run starts its
# own default cluster (3 nodes and 2 coordinators per service) in a
# temporary directory.
# With WDM_TEMPLATE set to a clone of the course's unreplicated template
# (Flask + Redis), it is run natively (loadtest/wdm-template.sh) at 100 and
# 1000 users as the baseline, in the same session.
#   loadtest/measure.sh            # everything (about 20 minutes)
#   SECONDS_PER_RUN=30 loadtest/measure.sh
#   WDM_TEMPLATE=~/wdm-project-template loadtest/measure.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/loadtest
secs="${SECONDS_PER_RUN:-60}"
mkdir -p "$out"
cargo build --release -p cart-loadtest -p cart-cluster
load=target/release/cart-load

echo "load average before: $(cat /proc/loadavg)"
$load stress --temp-cluster --users 100 --ramp 100 --think-ms 1000 --duration "$secs" \
  --label "100 users" --out "$out/stress-100.json"
$load stress --temp-cluster --users 1000 --ramp 100 --think-ms 1000 --duration "$secs" \
  --label "1000 users" --out "$out/stress-1000.json"
baseline=()
if [ -n "${WDM_TEMPLATE:-}" ]; then
  for users in 100 1000; do
    loadtest/wdm-template.sh "$WDM_TEMPLATE" 8090 -- \
      $load stress --gateway http://127.0.0.1:8090 --users "$users" --ramp 100 --think-ms 1000 \
      --duration "$secs" --label "WDM template, $users users" --out "$out/template-$users.json"
    baseline+=("$out/template-$users.json")
  done
else
  echo "WDM_TEMPLATE unset: the template's baseline runs are skipped (docs/loadtest.md)"
fi
$load consistency --temp-cluster --label "consistency" --out "$out/consistency.json"
$load consistency --temp-cluster --kill order-leader@0.5 --restart-after 5 \
  --label "consistency, order leader killed" --out "$out/consistency-leader-killed.json"
$load open-loop --temp-cluster --start-rate 100 --step-rate 100 --max-rate 5000 --step-secs 10 \
  --label "open loop" --out "$out/open-loop.json" || true
# No load at all: what the cluster burns on probes, heartbeats and event
# pulls (the report's cpu.steps[0].cores).
$load open-loop --temp-cluster --rates 0 --step-secs "$secs" \
  --label "no load" --out "$out/idle.json"
# The idle checkout: 5 a second, so each meets an otherwise idle cluster.
$load open-loop --temp-cluster --rates 5 --step-secs "$secs" \
  --label "open loop 5/s (idle)" --out "$out/open-loop-5.json"
# CPU per first-time checkout and cores at one fixed rate each (one step:
# the report's cpu.steps[0] is its middle half).
$load open-loop --temp-cluster --rates 100 --step-secs "$secs" \
  --label "open loop 100/s" --out "$out/open-loop-100.json"
$load open-loop --temp-cluster --rates 300 --step-secs "$secs" \
  --label "open loop 300/s" --out "$out/open-loop-300.json"
# Memory: every process's RSS after the 100k batch_inits and 5 minutes of load.
$load stress --temp-cluster --users 1000 --ramp 100 --think-ms 1000 --duration 300 \
  --label "1000 users, 5 min" --out "$out/stress-1000-5min.json"
$load compare "$out/stress-100.json" "$out/stress-1000.json" "${baseline[@]}" \
  "$out/open-loop-5.json" "$out/open-loop-100.json" "$out/open-loop-300.json" --out-dir "$out"
echo "load average after: $(cat /proc/loadavg)"

# The table in docs/loadtest.md is the generated one, between its markers.
awk -v table="$out/comparison.md" '
  /<!-- comparison:start/ { print; while ((getline line < table) > 0) print line; skip = 1; next }
  /<!-- comparison:end/ { skip = 0 }
  !skip { print }
' docs/loadtest.md > docs/loadtest.md.new && mv docs/loadtest.md.new docs/loadtest.md
