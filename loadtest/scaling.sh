#!/usr/bin/env bash
# 1 shard vs 3 shards per service on this machine (docs/scaling.md): the
# same open-loop first-time checkouts against the default cluster
# (cluster.toml) and against it with 3 shards per service, then the CPU per
# checkout, its spread over the node processes, and the latency.
#
#   cargo build --release -p cart-cluster -p cart-loadtest
#   loadtest/scaling.sh [OUT_DIR]          # default target/scaling
#
# RATES (default 100,300) and STEP_SECS (default 30) change the steps;
# BIN (default target/release) is the directory of the built binaries, e.g.
# a copy of an earlier commit's to measure it against this one.
# Each run starts its own cluster on the spec's ports (8000...) in a
# temporary data directory, removed afterwards; nothing else may hold those
# ports.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/target/scaling}
rates=${RATES:-100,300}
step=${STEP_SECS:-30}
load=${BIN:-$root/target/release}/cart-load
[ -x "$load" ] || { echo "build first: cargo build --release -p cart-cluster -p cart-loadtest" >&2; exit 1; }
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for shards in 1 3; do
    spec=$tmp/cluster-$shards.toml
    sed -e "s#^data_dir = .*#data_dir = \"$tmp/data-$shards\"#" \
        -e "s/^nodes = \([0-9]*\)$/nodes = \1\nshards = $shards/" \
        "$root/cluster.toml" > "$spec"
    "$load" open-loop --cluster "$spec" --rates "$rates" --step-secs "$step" \
        --keep-going --seed 7 --label "$shards shard(s)" --out "$out/shards-$shards.json"
done
python3 "$root/loadtest/scaling_table.py" "$out/shards-1.json" "$out/shards-3.json" | tee "$out/scaling.md"
