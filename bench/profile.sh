#!/usr/bin/env bash
# bench/profile.sh: inletd's CPU cost per message, counted in instructions by
# valgrind's callgrind (repeatable on a noisy shared machine, unlike wall time;
# perf counters are not available here).
#
# Starts aep-standin (--latency 20ms --no-record) and inletd with its defaults
# under `valgrind --tool=callgrind` on free 127.0.0.1 ports, drives it with
# examples/loadgen, zeroes callgrind's counters after the warmup, dumps them
# after the measured window, and divides the instructions inletd executed (all
# threads) by the messages it received in that window (its own
# inletd_messages_received_total). Prints one JSON line on stdout:
#   {"instructions":N,"messages":N,"instructions_per_message":N,"batches":N,
#    "messages_per_batch":N,"callgrind_out":"..."}
# and, with BENCH_PROFILE_TOP=N (default 30), the top functions by inclusive
# instruction count on stderr (callgrind_annotate --inclusive=yes).
#
# Usage: bench/profile.sh            (needs valgrind; builds release unless BENCH_SKIP_BUILD=1)
# Environment: BENCH_PROFILE_DURATION=10s BENCH_PROFILE_WARMUP=5s
#              BENCH_PROFILE_CONNECTIONS=256 BENCH_STANDIN_LATENCY=20ms
#              BENCH_INLETD_ARGS="..." BENCH_SKIP_BUILD=1 BENCH_PROFILE_TOP=30
#              BENCH_PROFILE_LOADGEN_ARGS="..."  extra loadgen arguments, e.g.
#                "--header Prefer:respond-async --expect-status 202 --expect ''" for
#                fire-and-forget (with INLETD_SPOOL_DIR set in the environment: spooled)
#
# Under valgrind inletd runs one thread at a time and ~50x slower, so it is
# CPU-bound at a few hundred messages/s: batches fill the way they do at the
# CPU-bound end of bench/run.sh. Compare counts at equal batch sizes.

set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
REL=$ROOT/target/release
LOGS=$ROOT/target/bench-logs
mkdir -p "$LOGS"

DURATION=${BENCH_PROFILE_DURATION:-10s}
WARMUP=${BENCH_PROFILE_WARMUP:-5s}
CONNS=${BENCH_PROFILE_CONNECTIONS:-256}
LATENCY=${BENCH_STANDIN_LATENCY:-20ms}
TOP=${BENCH_PROFILE_TOP:-30}
OUT=$LOGS/callgrind.inletd.out

for tool in valgrind callgrind_control callgrind_annotate; do
    command -v "$tool" >/dev/null || { echo "$tool not found (apt-get install valgrind)" >&2; exit 1; }
done

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    cargo build --release --bins --examples >&2
fi

read -r P_STANDIN P_INLETD P_ADMIN < <(python3 "$ROOT/bench/free_ports.py" 3)

# wait_http URL PID TRIES: until URL answers (valgrind start-up is slow).
wait_http() {
    local i
    for ((i = 0; i < $3; i++)); do
        kill -0 "$2" 2>/dev/null || return 1
        curl -s -o /dev/null --max-time 2 "$1" && return 0
        sleep 0.1
    done
    return 1
}
received() {
    curl -s --max-time 10 "http://127.0.0.1:$P_ADMIN/metrics" |
        awk -v k="$1" '$1 == k { print $2; found = 1 } END { if (!found) print 0 }'
}

"$REL/aep-standin" --listen "127.0.0.1:$P_STANDIN" --latency "$LATENCY" --no-record \
    >"$LOGS/profile-standin.log" 2>&1 &
PIDS+=("$!")
wait_http "http://127.0.0.1:$P_STANDIN/standin/stats" "$!" 100 || { echo "stand-in did not start" >&2; exit 1; }

extra=()
[[ -n ${BENCH_INLETD_ARGS:-} ]] && read -r -a extra <<<"$BENCH_INLETD_ARGS"
rm -f "$OUT" "$OUT".*
valgrind --tool=callgrind --callgrind-out-file="$OUT" --dump-instr=no \
    "$REL/inletd" --listen "127.0.0.1:$P_INLETD" --admin-listen "127.0.0.1:$P_ADMIN" \
    --upstream "http://127.0.0.1:$P_STANDIN" "${extra[@]}" >"$LOGS/profile-inletd.log" 2>&1 &
PID_INLETD=$!
PIDS+=("$PID_INLETD")
wait_http "http://127.0.0.1:$P_ADMIN/healthz" "$PID_INLETD" 600 ||
    { echo "inletd did not start under valgrind" >&2; cat "$LOGS/profile-inletd.log" >&2; exit 1; }

lg_extra=()
[[ -n ${BENCH_PROFILE_LOADGEN_ARGS:-} ]] && eval "lg_extra=($BENCH_PROFILE_LOADGEN_ARGS)"
"$REL/examples/loadgen" --url "http://127.0.0.1:$P_INLETD/collection/benchconn0001" \
    --connections "$CONNS" --duration "$DURATION" --warmup "$WARMUP" --timeout 60s "${lg_extra[@]}" \
    >"$LOGS/profile-loadgen.json" 2>"$LOGS/profile-loadgen.log" &
PID_LOADGEN=$!
PIDS+=("$PID_LOADGEN")

# Count the measured window only: zero after the warmup, dump at its end.
sleep "$WARMUP"
callgrind_control --zero "$PID_INLETD" >/dev/null
m0=$(received inletd_messages_received_total)
b0=$(received inletd_batch_messages_count)
sleep "$DURATION"
m1=$(received inletd_messages_received_total)
b1=$(received inletd_batch_messages_count)
callgrind_control --dump=window "$PID_INLETD" >/dev/null
wait "$PID_LOADGEN" || true

dump=$(find "$LOGS" -maxdepth 1 -name "$(basename "$OUT").*" -newer "$LOGS/profile-loadgen.log" | sort | tail -1)
[[ -n $dump ]] || dump=$(find "$LOGS" -maxdepth 1 -name "$(basename "$OUT").*" | sort | tail -1)
[[ -n $dump ]] || { echo "no callgrind dump found" >&2; exit 1; }
instr=$(awk '/^(summary|totals):/ { print $2; exit }' "$dump")

python3 - "$instr" "$m0" "$m1" "$b0" "$b1" "$dump" <<'EOF'
import json, sys
instr, m0, m1, b0, b1, dump = sys.argv[1:]
msgs = float(m1) - float(m0)
batches = float(b1) - float(b0)
print(json.dumps({
    "instructions": int(instr),
    "messages": int(msgs),
    "instructions_per_message": round(int(instr) / msgs) if msgs > 0 else None,
    "batches": int(batches),
    "messages_per_batch": round(msgs / batches, 1) if batches > 0 else None,
    "callgrind_out": dump,
}))
EOF

if [[ $TOP -gt 0 ]]; then
    {
        echo "== inletd: top functions, inclusive (measured window) =="
        callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | sed -n '1,400p' |
            grep -E '^ *[0-9,]+ ' | head -"$TOP" | cut -c1-200
    } >&2
fi
