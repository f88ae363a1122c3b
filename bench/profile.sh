#!/usr/bin/env bash
# bench/profile.sh: where inletd spends its CPU under phase-B load (perf, cpu-clock).
#
# Starts aep-standin (--latency 20ms --no-record) and inletd on free 127.0.0.1 ports
# (same flags as bench/run.sh), drives inletd with examples/loadgen (512 connections
# by default), records inletd with `perf record -e cpu-clock -g` for the measured
# window, and prints the top functions (self time) and a per-thread split.
# perf.data stays in target/bench-logs/perf-inletd.data for `perf report -i ...`.
#
# Usage: bench/profile.sh      (needs perf; run bench/run.sh or cargo build first,
#                               or leave BENCH_SKIP_BUILD unset to build)
# Environment: BENCH_DURATION=10s BENCH_WARMUP=2s BENCH_CONNECTIONS=512
#              BENCH_LINGER=20ms BENCH_MAX_BATCH_MESSAGES=500 BENCH_STANDIN_LATENCY=20ms
#              BENCH_INLETD_ARGS="..." BENCH_SKIP_BUILD=1 BENCH_PERF_FREQ=999
#              BENCH_PERF_CALLGRAPH=fp|dwarf (default fp)

set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
REL=$ROOT/target/release
LOGS=$ROOT/target/bench-logs
mkdir -p "$LOGS"

DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-2s}
CONNS=${BENCH_CONNECTIONS:-512}
LATENCY=${BENCH_STANDIN_LATENCY:-20ms}
LINGER=${BENCH_LINGER:-20ms}
MAX_BATCH_MESSAGES=${BENCH_MAX_BATCH_MESSAGES:-500}
FREQ=${BENCH_PERF_FREQ:-999}
CALLGRAPH=${BENCH_PERF_CALLGRAPH:-fp}
PERF_DATA=$LOGS/perf-inletd.data

command -v perf >/dev/null || { echo "perf not found" >&2; exit 1; }

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    cargo build --release --bins --examples >&2
fi

read -r P_STANDIN P_INLETD P_ADMIN < <(python3 "$ROOT/bench/free_ports.py" 3)

wait_http() {
    local i
    for ((i = 0; i < 200; i++)); do
        kill -0 "$2" 2>/dev/null || return 1
        curl -s -o /dev/null --max-time 1 "$1" && return 0
        sleep 0.05
    done
    return 1
}

"$REL/aep-standin" --listen "127.0.0.1:$P_STANDIN" --latency "$LATENCY" --no-record \
    >"$LOGS/profile-standin.log" 2>&1 &
PIDS+=("$!")
wait_http "http://127.0.0.1:$P_STANDIN/standin/stats" "$!" || { echo "stand-in did not start" >&2; exit 1; }

extra=()
[[ -n ${BENCH_INLETD_ARGS:-} ]] && read -r -a extra <<<"$BENCH_INLETD_ARGS"
"$REL/inletd" --listen "127.0.0.1:$P_INLETD" --admin-listen "127.0.0.1:$P_ADMIN" \
    --upstream "http://127.0.0.1:$P_STANDIN" --linger "$LINGER" \
    --max-batch-messages "$MAX_BATCH_MESSAGES" "${extra[@]}" >"$LOGS/profile-inletd.log" 2>&1 &
PID_INLETD=$!
PIDS+=("$PID_INLETD")
wait_http "http://127.0.0.1:$P_ADMIN/healthz" "$PID_INLETD" || { echo "inletd did not start" >&2; exit 1; }

"$REL/examples/loadgen" --url "http://127.0.0.1:$P_INLETD/collection/benchconn0001" \
    --connections "$CONNS" --duration "$DURATION" --warmup "$WARMUP" >"$LOGS/profile-loadgen.json" &
PID_LOADGEN=$!
PIDS+=("$PID_LOADGEN")

# Record the measured window only.
sleep "$(python3 -c "
import re,sys
t=sys.argv[1]; u={'ms':1e-3,'s':1,'m':60}
print(sum(float(n)*u[x] for n,x in re.findall(r'([0-9.]+)(ms|s|m)', t)))" "$WARMUP")"
secs=$(python3 -c "
import re,sys
t=sys.argv[1]; u={'ms':1e-3,'s':1,'m':60}
print(max(1, int(sum(float(n)*u[x] for n,x in re.findall(r'([0-9.]+)(ms|s|m)', t)) - 0.5)))" "$DURATION")
perf record -e cpu-clock -F "$FREQ" --call-graph "$CALLGRAPH" -p "$PID_INLETD" -o "$PERF_DATA" \
    -- sleep "$secs" >"$LOGS/perf-record.log" 2>&1 || { echo "perf record failed:" >&2; cat "$LOGS/perf-record.log" >&2; exit 1; }
wait "$PID_LOADGEN" || true

echo "loadgen: $(cat "$LOGS/profile-loadgen.json")"
echo
top() { grep -E '^ +[0-9]' | sed -e 's/ *- *- *$//' -e 's/ *$//' | cut -c1-160 | head -"$1"; }
echo "== inletd: CPU by thread =="
perf report -i "$PERF_DATA" --stdio --no-children --sort comm -g none 2>/dev/null | top 10
echo
echo "== inletd: CPU by binary (kernel = syscalls / TCP stack, libc = mostly malloc/free/memcpy) =="
perf report -i "$PERF_DATA" --stdio --no-children --sort dso -g none 2>/dev/null | top 10
echo
echo "== inletd: top functions (self) =="
perf report -i "$PERF_DATA" --stdio --no-children --sort dso,symbol -g none 2>/dev/null | top 40
echo
echo "perf data: $PERF_DATA (perf report -i $PERF_DATA)"
