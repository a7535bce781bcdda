#!/usr/bin/env bash
# Runs every corecell fuzz target (or the ones named) for SECONDS each, on the stable
# toolchain (`-s none`: no sanitizer, so no nightly), and fails if any target finds a crash,
# a timeout or an out-of-memory input; the file holding that input is named in the output.
#
#   fuzz/run.sh [SECONDS] [TARGET...]      (default: 20 seconds, every target)
#
# The committed corpus (corpus/<target>/) is read, not written: new interesting inputs go to
# target/run/corpus/<target>/ and findings to target/run/artifacts/<target>/ (both ignored
# by git, findings cleared when their target runs again; see README.md to keep some).
# Limits: FUZZ_MAX_LEN bytes per input (65536), FUZZ_RSS_MB of memory (2048), FUZZ_TIMEOUT
# seconds per input (10).
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TERM_COLOR=never

seconds="${1:-20}"
if [ "$#" -gt 0 ]; then shift; fi
max_len="${FUZZ_MAX_LEN:-65536}"
rss_mb="${FUZZ_RSS_MB:-2048}"
timeout="${FUZZ_TIMEOUT:-10}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: installing it from crates.io"
    cargo install --locked cargo-fuzz
fi
cargo fuzz --version

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

start=$(date +%s)
cargo fuzz build -s none
echo "built in $(($(date +%s) - start)) s"

failed=()
for target in "${targets[@]}"; do
    new="target/run/corpus/$target"
    findings="target/run/artifacts/$target"
    log="target/run/$target.log"
    # Findings of an earlier run are stale: this run judges only its own.
    rm -rf "$findings"
    mkdir -p "$new" "$findings" "corpus/$target"
    rc=0
    cargo fuzz run -s none "$target" "$new" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb="$rss_mb" \
        -timeout="$timeout" -artifact_prefix="$findings/" -print_final_stats=1 \
        >"$log" 2>&1 || rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    found=$(find "$findings" -type f | sort)
    if [ "$rc" -ne 0 ] || [ -n "$found" ]; then
        echo "FAIL $target (exit $rc); its log: fuzz/$log"
        grep -A4 "panicked at" "$log" | head -12 || true
        grep -E "ERROR: libFuzzer|Test unit written to" "$log" | head -4 || true
        for f in $found; do echo "  finding: fuzz/$f"; done
        failed+=("$target")
    else
        echo "ok   $target: ${runs:-?} runs in ${seconds} s (${speed:-?} exec/s)"
    fi
done

echo "fuzzed ${#targets[@]} targets in $(($(date +%s) - start)) s (build included)"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzzing found crashes in: ${failed[*]}"
    echo "reproduce: cd fuzz && cargo fuzz run -s none <target> <finding file>"
    exit 1
fi
