#!/usr/bin/env bash
# Profile one criterion benchmark with perf and draw a flamegraph with inferno.
#
# Usage: perf/flamegraph.sh <bench> <filter> [seconds]
#   perf/flamegraph.sh crypto bls/verify_certificate/22
#   perf/flamegraph.sh wire frame/decode_proposal_1000 10
#   FOCUS=verify_certificate perf/flamegraph.sh crypto bls/verify_certificate/22
#
# Output in target/flamegraph/: <name>.perf.data, <name>.folded, <name>.svg.
# FOCUS=<regex> keeps only the stacks that match it (drops the benchmark's setup code,
# which criterion runs before the timed loop, from the picture).
#
# Works without hardware performance counters (VMs): it samples the cpu-clock software event.
# Needs perf (Debian: apt-get install linux-perf) and inferno (cargo install inferno).
set -euo pipefail

bench=${1:?usage: perf/flamegraph.sh <bench> <filter> [seconds]}
filter=${2:?usage: perf/flamegraph.sh <bench> <filter> [seconds]}
seconds=${3:-10}

cd "$(dirname "$0")/.."
for tool in perf inferno-collapse-perf inferno-flamegraph jq; do
    command -v "$tool" >/dev/null || { echo "missing: $tool (see perf/README.md)" >&2; exit 1; }
done

# Build the bench binary (bench profile: release + debug = 1) and find its path.
exe=$(cargo bench --bench "$bench" --no-run --message-format=json \
    | jq -r 'select(.reason == "compiler-artifact" and .target.kind == ["bench"]) | .executable' \
    | tail -n 1)
[ -x "$exe" ] || { echo "no executable for bench '$bench'" >&2; exit 1; }

out=target/flamegraph
mkdir -p "$out"
name="$bench-${filter//[^A-Za-z0-9_.-]/_}"

# --profile-time: criterion runs the matching benchmarks for that long, without analysis.
# dwarf,32768: blst's pairing code keeps large buffers on the stack; the default 8 KiB stack
# copy is too small to unwind through it (stacks end in [unknown]).
perf record -F 999 --call-graph dwarf,32768 -e cpu-clock -o "$out/$name.perf.data" -- \
    "$exe" --bench --profile-time "$seconds" "$filter"

perf script -i "$out/$name.perf.data" 2>/dev/null | inferno-collapse-perf > "$out/$name.folded"
if [ -n "${FOCUS:-}" ]; then
    grep -E -- "$FOCUS" "$out/$name.folded" > "$out/$name.focus.folded" || true
    folded="$out/$name.focus.folded"
else
    folded="$out/$name.folded"
fi
inferno-flamegraph --title "$bench $filter" < "$folded" > "$out/$name.svg"
echo "wrote $out/$name.svg"
