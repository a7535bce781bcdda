#!/usr/bin/env bash
# Profile corecell nodes with perf and draw one flamegraph per node with inferno, plus a
# per-thread (per-shard) summary of the hottest functions.
#
# Usage:
#   perf/flamegraph.sh [options] [-- <corecell testnet args>...]
#       Runs `corecell testnet` (release build; built if missing), waits until its nodes are up
#       and meshed, lets the load run for --warmup seconds, then records every node process
#       for --record-seconds. Arguments after `--` go to `corecell testnet` unchanged.
#   perf/flamegraph.sh --pid PID [options]
#       Attaches to one running node (any `corecell node` process) for --record-seconds.
#   perf/flamegraph.sh --bench NAME --filter REGEX [options]
#       Profiles one criterion benchmark binary (`cargo bench --bench NAME`) running the
#       benchmarks matching REGEX for --record-seconds (criterion's --profile-time).
#       FOCUS=<regex> keeps only the stacks that match it (drops the setup code).
#
# Options:
#   --record-seconds N   how long to record (default 10)
#   --warmup N           testnet mode: seconds between "nodes up and meshed" (the load starts
#                        then) and the start of recording (default 3)
#   --freq HZ            samples per second per running thread (default 499)
#   --event EV           perf event (default cpu-clock, a software timer that works on VMs
#                        without a PMU; on bare metal `cycles` is more precise)
#   --stack-bytes N      user stack bytes copied per sample for DWARF unwinding (default 32768;
#                        see "Stack size" in perf/README.md for the size/overhead trade-off)
#   --mmap-pages N       perf ring buffer pages per CPU (default 256 = 1 MiB)
#   --top N              functions per thread in the summary (default 12)
#   --out DIR            output folder (default <target>/flamegraph/<mode>-<date>)
#   --binary PATH        corecell binary (default <target>/release/corecell)
#   --build              run `cargo build --release` even if the binary exists
#   --keep-net           testnet mode: keep the generated network folder (node logs, data);
#                        it is also kept when the run fails (not after Ctrl-C)
#   -h, --help           this text
#
# Examples:
#   perf/flamegraph.sh --record-seconds 5 -- --duration 15 --rate 3000 --block-period-ms 250 --base-port 49000
#   perf/flamegraph.sh --pid "$(pgrep -f cn0/config.toml)" --record-seconds 10
#   perf/flamegraph.sh --bench crypto --filter 'bls/verify_certificate/22' --record-seconds 5
#
# Output (in --out): <node>.perf.data, <node>.folded, <node>.svg, <node>.top.txt (the
# hottest functions of each thread: the executor threads are named after their shards, e.g.
# `net+exec-1`, `consensus+store`), summary.txt (all nodes), testnet.log.
#
# Everything is bounded: waits poll with deadlines and every external step runs under
# `timeout`. On exit, error or Ctrl-C the testnet is stopped (SIGINT, which makes it stop its
# nodes with SIGTERM; SIGKILL after a grace period) and running perf recorders are stopped.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "flamegraph: error: $*" >&2; exit 1; }
say() { echo "flamegraph: $*" >&2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$repo/target}

mode=testnet
pid=
bench=
filter=
record_seconds=10
warmup=3
freq=499
event=cpu-clock
stack_bytes=32768
mmap_pages=256
top=12
out=
binary=
force_build=0
keep_net=0
testnet_args=()

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
need_value() { [[ $# -ge 2 ]] || die "$1 needs a value"; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --pid) need_value "$@"; mode=pid; pid=$2; shift 2 ;;
        --bench) need_value "$@"; mode=bench; bench=$2; shift 2 ;;
        --filter) need_value "$@"; filter=$2; shift 2 ;;
        --record-seconds) need_value "$@"; record_seconds=$2; shift 2 ;;
        --warmup) need_value "$@"; warmup=$2; shift 2 ;;
        --freq) need_value "$@"; freq=$2; shift 2 ;;
        --event) need_value "$@"; event=$2; shift 2 ;;
        --stack-bytes) need_value "$@"; stack_bytes=$2; shift 2 ;;
        --mmap-pages) need_value "$@"; mmap_pages=$2; shift 2 ;;
        --top) need_value "$@"; top=$2; shift 2 ;;
        --out) need_value "$@"; out=$2; shift 2 ;;
        --binary) need_value "$@"; binary=$2; shift 2 ;;
        --build) force_build=1; shift ;;
        --keep-net) keep_net=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; testnet_args=("$@"); break ;;
        *) die "unknown option: $1 (testnet arguments go after --; see --help)" ;;
    esac
done

for v in record_seconds warmup freq stack_bytes mmap_pages top; do
    is_uint "${!v}" || die "--${v//_/-} must be a whole number, not '${!v}'"
done
[[ $record_seconds -ge 1 ]] || die "--record-seconds must be at least 1"
# perf takes at most 65528 bytes of user stack per sample, a multiple of 8.
if (( stack_bytes < 1024 || stack_bytes > 65528 || stack_bytes % 8 != 0 )); then
    die "--stack-bytes must be a multiple of 8 between 1024 and 65528"
fi
case $mode in
    pid) is_uint "$pid" || die "--pid must be a process id, not '$pid'"
         [[ ${#testnet_args[@]} -eq 0 ]] || die "--pid takes no testnet arguments" ;;
    bench) [[ -n $filter ]] || die "--bench needs --filter REGEX" ;;
    testnet) ;;
esac
binary=${binary:-$target_dir/release/corecell}

# ---------------------------------------------------------------------------------------
# Tools and permissions, checked before anything is started.

command -v timeout >/dev/null || die "timeout (GNU coreutils) is missing"

perf_install_hint() {
    cat >&2 <<EOF
  Debian:        apt-get install linux-perf
  Ubuntu:        apt-get install linux-tools-common linux-tools-\$(uname -r)
                 (or linux-tools-generic for the generic kernel)
  Fedora / RHEL: dnf install perf
EOF
}

if ! command -v perf >/dev/null; then
    say "perf is not installed (or not on PATH). Install it:"
    perf_install_hint
    exit 1
fi
if ! timeout 20 perf --version >/dev/null 2>&1; then
    # Ubuntu's /usr/bin/perf is a wrapper that fails when the tools for the running kernel
    # are not installed.
    say "perf is installed but does not run for this kernel ($(uname -r)):"
    timeout 20 perf --version 2>&1 | sed 's/^/  /' >&2 || true
    perf_install_hint
    exit 1
fi

paranoid=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo unknown)
if [[ $EUID -ne 0 && $paranoid != unknown && $paranoid -gt 1 ]]; then
    say "kernel.perf_event_paranoid is $paranoid: an unprivileged user may not attach perf to"
    say "processes with kernel samples. Lower it (until reboot), or run as root:"
    say "  sudo sysctl -w kernel.perf_event_paranoid=1"
    say "  (persistent: echo 'kernel.perf_event_paranoid = 1' | sudo tee /etc/sysctl.d/99-perf.conf)"
    say "For kernel symbols also: sudo sysctl -w kernel.kptr_restrict=0"
    exit 1
fi

# A VM without a PMU has no hardware events: `cycles` etc. report <not supported>. cpu-clock
# (a software timer) always works, so fall back to it.
if [[ $event != cpu-clock && $event != task-clock ]]; then
    stat_out=$(timeout 20 perf stat -x, -e "$event" -- true 2>&1 >/dev/null) \
        || die "perf does not accept the event '$event': $stat_out"
    if grep -qi 'not supported' <<<"$stat_out"; then
        say "event '$event' is not supported here (no hardware counters, e.g. a VM); using cpu-clock"
        event=cpu-clock
    fi
fi

find_inferno() {
    local tool
    for tool in inferno-collapse-perf inferno-flamegraph; do
        if ! command -v "$tool" >/dev/null; then
            if [[ -x $HOME/.cargo/bin/$tool ]]; then
                PATH=$HOME/.cargo/bin:$PATH
            else
                return 1
            fi
        fi
    done
}
if ! find_inferno; then
    command -v cargo >/dev/null || die "inferno is missing and cargo is not installed to install it"
    say "inferno (inferno-collapse-perf, inferno-flamegraph) is missing:"
    say "installing it with 'cargo install inferno --locked' (a few minutes)"
    timeout 1800 nice cargo install inferno --locked || die "cargo install inferno failed"
    find_inferno || die "inferno was installed but is not on PATH (add ~/.cargo/bin to PATH)"
fi

# Probe once that perf can record at all with these settings (permissions, event, seccomp in
# containers), so that a testnet is not started for nothing.
probe_dir=$(mktemp -d "${TMPDIR:-/tmp}/flamegraph-probe.XXXXXX")
if ! timeout 30 perf record -q -e "$event" -o "$probe_dir/probe.data" -- true >"$probe_dir/log" 2>&1; then
    say "perf cannot record the '$event' event here:"
    sed 's/^/  /' "$probe_dir/log" >&2
    say "(in a container, perf_event_open may be blocked by seccomp: run with --privileged or"
    say " --cap-add PERFMON / SYS_ADMIN)"
    rm -rf "$probe_dir"
    exit 1
fi
rm -rf "$probe_dir"

out=${out:-$target_dir/flamegraph/$mode-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# ---------------------------------------------------------------------------------------
# Process bookkeeping and cleanup.

testnet_pid=
net_tmp=
perf_pids=()
node_pids=()

# The state letter of a process (R, S, D, Z, ...), empty if it does not exist.
proc_state() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) }
    echo "${stat%% *}"
}
# Running (exists and is not a zombie waiting to be reaped).
alive() {
    local s
    s=$(proc_state "$1")
    [[ -n $s && $s != Z && $s != X ]]
}
# Waits up to $2 seconds for process $1 to end; returns 1 on timeout.
wait_gone() {
    local deadline=$((SECONDS + $2))
    while alive "$1"; do
        (( SECONDS < deadline )) || return 1
        sleep 0.2
    done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local p
    for p in "${perf_pids[@]}"; do
        if alive "$p"; then
            kill -INT "$p" 2>/dev/null || true
            wait_gone "$p" 10 || kill -KILL "$p" 2>/dev/null || true
        fi
    done
    if [[ -n $testnet_pid ]] && alive "$testnet_pid"; then
        say "stopping the testnet (pid $testnet_pid)"
        kill -INT "$testnet_pid" 2>/dev/null || true
        if ! wait_gone "$testnet_pid" 60; then
            say "the testnet did not stop within 60 s; killing it"
            kill -KILL "$testnet_pid" 2>/dev/null || true
        fi
    fi
    # The nodes get SIGTERM when the testnet dies (PR_SET_PDEATHSIG); make sure.
    for p in "${node_pids[@]}"; do
        if alive "$p"; then
            kill -TERM "$p" 2>/dev/null || true
            wait_gone "$p" 20 || kill -KILL "$p" 2>/dev/null || true
        fi
    done
    if [[ -n $net_tmp ]]; then
        # Kept after a failure (the node logs say why); removed after success or Ctrl-C.
        if [[ $keep_net -eq 0 && ($rc -eq 0 || $rc -eq 130) ]]; then
            rm -rf "$net_tmp"
        else
            say "network folder (node logs and data) kept: $net_tmp/net"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

# perf record of one process for $record_seconds; the data goes to $out/$name.perf.data.
# -g with --call-graph dwarf,N: release builds have no frame pointers, so stacks are unwound
# from a copy of N bytes of each sample's user stack. More bytes = deeper stacks survive (blst's
# pairing code keeps large buffers on the stack) but bigger files and more perf overhead.
start_record() {
    local name=$1 target=$2
    timeout -s INT -k 10 $((record_seconds + 60)) \
        perf record -F "$freq" -e "$event" -g --call-graph "dwarf,$stack_bytes" \
            -m "$mmap_pages" -p "$target" -o "$out/$name.perf.data" -- sleep "$record_seconds" \
        >"$out/$name.record.log" 2>&1 &
    perf_pids+=("$!")
}

# Waits for every recorder; reports lost samples.
finish_records() {
    local p name
    for p in "${perf_pids[@]}"; do
        wait "$p" || say "perf record (pid $p) exited with status $?"
    done
    perf_pids=()
    for name in "$@"; do
        if grep -qi 'lost' "$out/$name.record.log"; then
            say "$name: perf reported lost data (raise --mmap-pages or lower --freq/--stack-bytes):"
            grep -i 'lost' "$out/$name.record.log" | sed 's/^/  /' >&2
        fi
    done
}

# The node name of a `corecell node --config <dir>/<node>/config.toml` process.
node_name() {
    local args config=
    mapfile -d '' -t args 2>/dev/null <"/proc/$1/cmdline" || true
    local i
    for ((i = 0; i + 1 < ${#args[@]}; i++)); do
        if [[ ${args[i]} == --config ]]; then config=${args[i + 1]}; fi
    done
    if [[ -n $config ]]; then
        basename "$(dirname "$config")"
    else
        echo "pid$1"
    fi
}

# ---------------------------------------------------------------------------------------
# Rendering.

# The per-thread summary of one node: each thread's share of the samples, which shard's code
# it ran (by the outermost corecell frame of each stack: the executor threads run several
# shards, e.g. `net+exec-1`), how many stacks were cut short, and its hottest functions.
summarize() {
    local name=$1 folded=$2 report=$3
    local samples
    samples=$(timeout 300 perf script -F comm -i "$out/$name.perf.data" 2>/dev/null | wc -l || true)
    echo "== $name: ${samples:-?} samples of $event at $freq Hz =="
    [[ -s $folded ]] || { echo "  no stacks"; return 0; }
    awk -v top="$top" '
        function shard(f, n,   i) {
            for (i = 2; i <= n; i++) {
                if (f[i] ~ /corecell::(net|types::frame)::/) return "net"
                if (f[i] ~ /corecell::exec::/) return "exec"
                if (f[i] ~ /corecell::(consensus|node::consensus_shard)::/) return "consensus"
                if (f[i] ~ /corecell::store::/) return "store"
            }
            for (i = 2; i <= n; i++) if (f[i] ~ /^glommio::/) return "glommio-runtime"
            return f[2] == "[unknown]" ? "cut-short" : "other"
        }
        # Folded stacks: "thread;outermost;...;innermost weight" (weight = sample period).
        FNR == NR {
            w = $NF; stack = substr($0, 1, length($0) - length($NF) - 1)
            n = split(stack, f, ";"); t = f[1]
            weight[t] += w; all += w
            by[t, shard(f, n)] += w
            if (f[2] == "[unknown]") cut[t] += w
            next
        }
        # perf report lines: "  12.34%  thread  [.] symbol ...".
        /^#/ || NF < 4 { next }
        {
            pct = $1; sub(/%$/, "", pct); t = $2
            sym = $0; sub(/^[ \t]*[0-9.]+%[ \t]+[^ \t]+[ \t]+/, "", sym)
            sub(/([ \t]+-)*[ \t]*$/, "", sym)
            if (++count[t] <= top) lines[t] = lines[t] sprintf("      %6.2f%%  %s\n", pct, sym)
        }
        END {
            if (all == 0) { print "  no samples"; exit }
            split("exec net consensus store glommio-runtime other cut-short", kinds, " ")
            # Threads by share, largest first.
            m = 0
            for (t in weight) order[++m] = t
            for (i = 2; i <= m; i++)
                for (j = i; j > 1 && weight[order[j]] > weight[order[j - 1]]; j--) {
                    x = order[j]; order[j] = order[j - 1]; order[j - 1] = x
                }
            for (i = 1; i <= m; i++) {
                t = order[i]
                printf "  thread %s: %.1f%% of the samples\n", t, 100 * weight[t] / all
                line = ""
                for (k = 1; k <= 7; k++)
                    if (by[t, kinds[k]] > 0)
                        line = line sprintf("  %s %.1f%%", kinds[k], 100 * by[t, kinds[k]] / weight[t])
                if (by[t, "exec"] + by[t, "net"] + by[t, "consensus"] + by[t, "store"] > 0)
                    printf "    by shard (outermost corecell frame):%s\n", line
                if (cut[t] > 0)
                    printf "    stacks cut short (outermost frame [unknown]; raise --stack-bytes): %.1f%%\n", 100 * cut[t] / weight[t]
                if (lines[t] != "") printf "    hottest functions (self, %% of all samples):\n%s", lines[t]
            }
        }' "$folded" "$report"
}

render() {
    local name=$1 title=$2 subtitle=${3:-} data="$out/$1.perf.data"
    [[ -s $data ]] || { say "$name: no profile data ($data)"; return 1; }
    say "$name: unwinding and folding stacks"
    # --no-inline: resolving inlined frames runs addr2line per address (very slow); the
    # flamegraph shows the outer (non-inlined) functions.
    if ! timeout 900 perf script --no-inline -i "$data" 2>"$out/$name.script.log" \
        | timeout 900 inferno-collapse-perf >"$out/$name.folded"; then
        say "$name: perf script | inferno-collapse-perf failed (see $out/$name.script.log)"
        return 1
    fi
    local folded="$out/$name.folded"
    if [[ -n ${FOCUS:-} ]]; then
        grep -E -- "$FOCUS" "$folded" >"$out/$name.focus.folded" || true
        folded="$out/$name.focus.folded"
    fi
    if ! timeout 300 inferno-flamegraph --title "$title" --subtitle "$subtitle" \
        <"$folded" >"$out/$name.svg"; then
        say "$name: inferno-flamegraph failed (no samples?)"
        return 1
    fi
    # Self time per (thread, function), the hottest first.
    timeout 900 perf report -i "$data" --no-children --no-inline -g none --sort comm,symbol \
        --stdio --percent-limit 0 2>/dev/null >"$out/$name.report.txt" || true
    summarize "$name" "$out/$name.folded" "$out/$name.report.txt" >"$out/$name.top.txt"
    say "$name: wrote $out/$name.svg"
}

# ---------------------------------------------------------------------------------------
# Modes.

case $mode in
bench)
    command -v jq >/dev/null || die "jq is missing (apt-get install jq / dnf install jq)"
    cd "$repo"
    exe=$(timeout 3600 nice cargo bench --bench "$bench" --no-run --message-format=json \
        | jq -r 'select(.reason == "compiler-artifact" and .target.kind == ["bench"]) | .executable' \
        | tail -n 1)
    [[ -x $exe ]] || die "no executable for bench '$bench'"
    name="$bench-${filter//[^A-Za-z0-9_.-]/_}"
    say "profiling $exe '$filter' for $record_seconds s"
    # --profile-time: criterion runs the matching benchmarks that long, without statistics.
    timeout -s INT -k 10 $((record_seconds + 600)) \
        perf record -F "$freq" -e "$event" -g --call-graph "dwarf,$stack_bytes" -m "$mmap_pages" \
            -o "$out/$name.perf.data" -- "$exe" --bench --profile-time "$record_seconds" "$filter" \
        >"$out/$name.record.log" 2>&1 || die "perf record failed: see $out/$name.record.log"
    render "$name" "bench $bench: $filter" "${FOCUS:+stacks matching $FOCUS}"
    cat "$out/$name.top.txt"
    ;;

pid)
    alive "$pid" || die "no running process $pid"
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    [[ $comm == corecell ]] || say "warning: process $pid is '$comm', not corecell"
    name=$(node_name "$pid")
    say "recording $name (pid $pid) for $record_seconds s at $freq Hz ($event, dwarf,$stack_bytes)"
    start_record "$name" "$pid"
    finish_records "$name"
    render "$name" "corecell $name (pid $pid): $record_seconds s of $event"
    cp "$out/$name.top.txt" "$out/summary.txt"
    cat "$out/summary.txt"
    ;;

testnet)
    if [[ $force_build -eq 1 || ! -x $binary ]]; then
        say "building the release binary (cargo build --release) into $target_dir"
        (cd "$repo" && timeout 3600 nice cargo build --release) || die "cargo build --release failed"
    fi
    [[ -x $binary ]] || die "no corecell binary at $binary (use --binary)"

    # The network folder: the caller's --dir, or a temporary one (removed at exit unless
    # --keep-net). The testnet's load duration, for the deadline.
    net_dir=
    duration=30
    for ((i = 0; i < ${#testnet_args[@]}; i++)); do
        a=${testnet_args[i]}
        case $a in
            --dir) net_dir=${testnet_args[i + 1]:-} ;;
            --dir=*) net_dir=${a#--dir=} ;;
            --duration) duration=${testnet_args[i + 1]:-} ;;
            --duration=*) duration=${a#--duration=} ;;
        esac
    done
    is_uint "$duration" || die "cannot read --duration '$duration'"
    if [[ -z $net_dir ]]; then
        net_tmp=$(mktemp -d "${TMPDIR:-/tmp}/corecell-flamegraph.XXXXXX")
        net_dir=$net_tmp/net
        testnet_args+=(--dir "$net_dir")
    fi
    if (( duration > 0 && warmup + record_seconds > duration )); then
        say "warning: warm-up $warmup s + recording $record_seconds s is longer than the load" \
            "(--duration $duration): the end of the profile sees the network wind down"
    fi

    say "starting: $binary testnet ${testnet_args[*]}"
    say "output in $out (testnet log: $out/testnet.log)"
    # Nodes run in their own process groups; the testnet forwards SIGINT to them as SIGTERM.
    "$binary" testnet "${testnet_args[@]}" >"$out/testnet.log" 2>&1 &
    testnet_pid=$!

    # Up and meshed = endpoints.json written. Signing a large transfer schedule comes first,
    # so allow for it.
    startup_deadline=$((SECONDS + 600))
    until [[ -s $net_dir/endpoints.json ]]; do
        if ! alive "$testnet_pid"; then
            tail -n 20 "$out/testnet.log" >&2 || true
            grep -H '^error' "$net_dir"/*/node.log >&2 2>/dev/null || true
            if grep -qs 'already in use' "$net_dir"/*/node.log; then
                say "a port is taken: node k uses base+k (p2p), base+2000+k (metrics) and"
                say "base+3000+k (ingress); another testnet may hold them. Try another --base-port."
                say "If 'ss -tan' shows a socket connected to itself on that port, the port is in"
                say "the ephemeral range and a readiness probe caught it; it clears within 60 s."
            fi
            die "the testnet exited before its nodes were up (log: $out/testnet.log)"
        fi
        (( SECONDS < startup_deadline )) || die "the nodes were not up within 600 s"
        sleep 0.2
    done
    # The nodes are the testnet's children; their names come from their --config paths.
    node_names=()
    while read -r p; do
        if [[ -n $p ]]; then
            node_pids+=("$p")
            node_names+=("$(node_name "$p")")
        fi
    done < <(pgrep -P "$testnet_pid" || true)
    [[ ${#node_pids[@]} -gt 0 ]] || die "found no node processes under the testnet (pid $testnet_pid)"
    say "nodes up: $(for i in "${!node_pids[@]}"; do printf '%s=%s ' "${node_names[i]}" "${node_pids[i]}"; done)"

    say "warm-up: $warmup s of load before recording"
    sleep "$warmup"
    alive "$testnet_pid" || die "the testnet ended during the warm-up (log: $out/testnet.log)"

    names=()
    for i in "${!node_pids[@]}"; do
        if ! alive "${node_pids[i]}"; then
            say "${node_names[i]} (pid ${node_pids[i]}) is not running any more; not recorded"
            continue
        fi
        names+=("${node_names[i]}")
        start_record "${node_names[i]}" "${node_pids[i]}"
    done
    [[ ${#names[@]} -gt 0 ]] || die "no node left to record (log: $out/testnet.log)"
    say "recording ${names[*]} for $record_seconds s at $freq Hz ($event, dwarf,$stack_bytes)"
    finish_records "${names[@]}"

    # Let the run finish (its summary is worth having), bounded; a run without an end
    # (--workload none --duration 0) is stopped now.
    if (( duration == 0 )); then
        kill -INT "$testnet_pid" 2>/dev/null || true
    fi
    say "waiting for the testnet to finish (log: $out/testnet.log)"
    if ! wait_gone "$testnet_pid" $((duration + 180)); then
        say "the testnet did not finish in time; stopping it"
        kill -INT "$testnet_pid" 2>/dev/null || true
        wait_gone "$testnet_pid" 60 || kill -KILL "$testnet_pid" 2>/dev/null || true
    fi
    testnet_rc=0
    wait "$testnet_pid" || testnet_rc=$?
    testnet_pid=
    sed -n '/^$/,$p' "$out/testnet.log" | tail -n 40 >&2 || true
    [[ $testnet_rc -eq 0 ]] || say "warning: the testnet exited with status $testnet_rc"
    if [[ -z $net_tmp ]]; then
        say "network folder: $net_dir"
    fi

    # Waits are not on-CPU time: a stalled fsync is invisible in a cpu-clock profile, so say
    # whether the stores logged any.
    slow_report=
    for name in "${names[@]}"; do
        log=$net_dir/$name/node.log
        [[ -f $log ]] || continue
        slow=$(grep -c 'slow durable write' "$log" || true)
        if (( slow > 0 )); then
            worst=$(grep -o 'took_ms=[0-9]*' "$log" | cut -d= -f2 | sort -n | tail -n 1)
            slow_report+="$name: $slow slow durable writes (fsync above 100 ms), the slowest ${worst} ms; "
        fi
    done

    {
        echo "corecell testnet ${testnet_args[*]}"
        echo "recorded $record_seconds s after a $warmup s warm-up; $event at $freq Hz, dwarf,$stack_bytes"
        sed -n '/^  workload/,/^  agree/p' "$out/testnet.log"
        if [[ -n $slow_report ]]; then
            echo "  waits (off-CPU, not in the flamegraphs): $slow_report"
        fi
        echo
    } >"$out/summary.txt"
    for name in "${names[@]}"; do
        render "$name" "corecell $name: $record_seconds s of $event after a $warmup s warm-up" \
            "testnet ${testnet_args[*]}" || continue
        cat "$out/$name.top.txt" >>"$out/summary.txt"
    done
    cat "$out/summary.txt"
    say "done: $(for name in "${names[@]}"; do
        if [[ -s $out/$name.svg ]]; then printf '%s.svg ' "$name"; fi
    done)in $out"
    ;;
esac
