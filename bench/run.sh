#!/usr/bin/env bash
# bench/run.sh: inletd throughput / latency / memory benchmark, side by side in one run.
#
# Each target below is measured against its reference in the same run, one phase
# right after the other, with inletd at its DEFAULTS (only addresses are passed;
# BENCH_* knobs below add flags when set). All on 127.0.0.1, free ports.
#
#   phase        conns  target                                  compared with
#   direct16        16  stand-in POST /collection/{id} (20 ms)   -
#   inletd16        16  inletd -> stand-in                       direct16: p50 <= +3 ms, p99 <= +5 ms
#   direct512      512  stand-in single endpoint                 -
#   inletd512      512  inletd -> stand-in                       direct512: >= 0.9x msgs/s; >= 50 msgs/upstream request
#   trivial2048   2048  trivial200 (hyper, answers 200 at once)   -
#   inletd2048    2048  inletd -> stand-in (CPU-bound)           trivial2048: >= 0.8x msgs/s; CPU/msg <= 1.3x
#                                                                trivial's CPU/request; >= 200 msgs/upstream request
#   mem            512  a second inletd -> stand-in answering    idle RSS <= 15 MiB; peak RSS with a full buffer
#                       after 1 s, 256 KiB messages              <= 1.5 x max_buffered_bytes + 20 MiB
#   instr           256  bench/profile.sh: inletd under callgrind instructions per message (the figure
#                                                                regressions are judged by; needs valgrind)
#
# CPU per message: CPU seconds (/proc/<pid>/stat, user + system) the target used in
# the measured window divided by the successes in that window.
# Prints a table, every comparison with its target and PASS/FAIL, and writes
# everything as JSON to target/bench-latest.json (raw outputs in target/bench-logs/).
# Everything it started is killed on exit (by PID).
#
# Usage:   bench/run.sh                         (build + 8 phases, ~2 min)
#          BENCH_DURATION=3s bench/run.sh       (quicker)
#          BENCH_PHASES="direct16 inletd16" bench/run.sh
#
# Environment (all optional):
#   BENCH_DURATION=10s  BENCH_WARMUP=2s  BENCH_MESSAGE_BYTES=1024  BENCH_CONNECTION_ID=benchconn0001
#   BENCH_FEW=16  BENCH_MANY=512  BENCH_FLOOD=2048                connections of the three loads
#   BENCH_PHASES="direct16 inletd16 direct512 inletd512 trivial2048 inletd2048 mem instr"
#                (the numbers in the names follow BENCH_FEW / BENCH_MANY / BENCH_FLOOD)
#   BENCH_STANDIN_LATENCY=20ms                  stand-in's answer delay
#   BENCH_LINGER  BENCH_MAX_BATCH_MESSAGES  BENCH_MAX_BATCH_BYTES  BENCH_MAX_IN_FLIGHT
#   BENCH_MAX_BUFFERED_BYTES  BENCH_REQUEST_TIMEOUT  BENCH_MAX_RETRIES
#                                               passed to inletd as --<key> when set
#   BENCH_INLETD_ARGS="..."                     extra inletd arguments
#   BENCH_INLETD_RUST_LOG                       RUST_LOG for inletd (default: unset)
#   BENCH_MEM_CONNECTIONS=512  BENCH_MEM_MESSAGE_BYTES=262144  BENCH_MEM_LATENCY=1s   (phase mem)
#   BENCH_MEM_LOADGEN_ARGS="..."               extra loadgen arguments for phase mem (no quoting)
#   BENCH_LOADGEN_THREADS                       loadgen worker threads (default: CPUs)
#   BENCH_SKIP_BUILD=1                          use the existing target/release binaries
#   BENCH_STRICT=1                              exit 1 when a check fails
#   BENCH_WAIT_QUIET=600                        first wait (up to 600 s) for a quiet machine
#
# Needs: bash, cargo, curl, python3 (bench/free_ports.py picks ports, bench/report.py
# makes the table); valgrind for phase instr (skipped with a note when missing).

set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-2s}
FEW=${BENCH_FEW:-16}
MANY=${BENCH_MANY:-512}
FLOOD=${BENCH_FLOOD:-2048}
MSG_BYTES=${BENCH_MESSAGE_BYTES:-1024}
CONN_ID=${BENCH_CONNECTION_ID:-benchconn0001}
PHASES=${BENCH_PHASES:-direct$FEW inletd$FEW direct$MANY inletd$MANY trivial$FLOOD inletd$FLOOD mem instr}
LATENCY=${BENCH_STANDIN_LATENCY:-20ms}
MEM_CONNS=${BENCH_MEM_CONNECTIONS:-512}
MEM_MSG_BYTES=${BENCH_MEM_MESSAGE_BYTES:-262144}
MEM_LATENCY=${BENCH_MEM_LATENCY:-1s}

REL=$ROOT/target/release
LOGS=$ROOT/target/bench-logs
OUT_JSON=$ROOT/target/bench-latest.json
mkdir -p "$LOGS"
rm -f "$LOGS"/*.json "$LOGS"/*.txt "$LOGS"/*.log

has_phase() { [[ " $PHASES " == *" $1 "* ]]; }
log() { printf '[bench] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- cleanup
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

# ---------------------------------------------------------------- build
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    log "cargo build --release --bins --examples"
    cargo build --release --bins --examples >&2
fi
for b in "$REL/examples/loadgen" "$REL/examples/trivial200" "$REL/aep-standin"; do
    [[ -x $b ]] || { log "missing $b"; exit 1; }
done
NEED_INLETD=0
if [[ " $PHASES " == *" inletd"* ]] || has_phase mem; then
    NEED_INLETD=1
    [[ -x $REL/inletd ]] || { log "missing $REL/inletd"; exit 1; }
fi

# ---------------------------------------------------------------- helpers
read -r P_TRIVIAL P_STANDIN P_INLETD P_ADMIN P_MSTANDIN P_MINLETD P_MADMIN \
    < <(python3 "$ROOT/bench/free_ports.py" 7)


proc_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
# CPU seconds (user + system) used so far by PID (0 when none).
TICKS=$(getconf CLK_TCK)
proc_cpu() {
    if [[ -n ${1:-} && -r /proc/$1/stat ]]; then
        # Fields after the ")" of the command name: utime is the 12th, stime the 13th.
        sed 's/^.*) //' "/proc/$1/stat" | awk -v t="$TICKS" '{ printf "%.2f\n", ($12 + $13) / t }'
    else
        echo 0
    fi
}
# Busy CPU seconds of the whole machine so far (all CPUs; from /proc/stat).
machine_busy() { awk -v t="$TICKS" '$1 == "cpu" { printf "%.2f\n", ($2 + $3 + $4 + $7 + $8 + $9) / t }' /proc/stat; }
now_s() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# start_standin PORT LATENCY LOGNAME: sets STARTED_PID.
start_standin() {
    "$REL/aep-standin" --listen "127.0.0.1:$1" --latency "$2" --no-record >"$LOGS/$3.log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    wait_http "http://127.0.0.1:$1/standin/stats" 10 "$STARTED_PID" ||
        { log "aep-standin ($3) did not start"; cat "$LOGS/$3.log" >&2; exit 1; }
}

# start_inletd PORT ADMIN_PORT UPSTREAM_PORT LOGNAME: sets STARTED_PID, STARTED_ARGS.
start_inletd() {
    local args=(
        --listen "127.0.0.1:$1"
        --admin-listen "127.0.0.1:$2"
        --upstream "http://127.0.0.1:$3"
    )
    # Defaults unless a knob is set: the targets are for an untuned inletd.
    [[ -n ${BENCH_LINGER:-} ]] && args+=(--linger "$BENCH_LINGER")
    [[ -n ${BENCH_MAX_BATCH_MESSAGES:-} ]] && args+=(--max-batch-messages "$BENCH_MAX_BATCH_MESSAGES")
    [[ -n ${BENCH_MAX_BATCH_BYTES:-} ]] && args+=(--max-batch-bytes "$BENCH_MAX_BATCH_BYTES")
    [[ -n ${BENCH_MAX_IN_FLIGHT:-} ]] && args+=(--max-in-flight "$BENCH_MAX_IN_FLIGHT")
    [[ -n ${BENCH_MAX_BUFFERED_BYTES:-} ]] && args+=(--max-buffered-bytes "$BENCH_MAX_BUFFERED_BYTES")
    [[ -n ${BENCH_REQUEST_TIMEOUT:-} ]] && args+=(--request-timeout "$BENCH_REQUEST_TIMEOUT")
    [[ -n ${BENCH_MAX_RETRIES:-} ]] && args+=(--max-retries "$BENCH_MAX_RETRIES")
    if [[ -n ${BENCH_INLETD_ARGS:-} ]]; then
        local extra
        read -r -a extra <<<"$BENCH_INLETD_ARGS"
        args+=("${extra[@]}")
    fi
    log "inletd ${args[*]}"
    (
        if [[ -n ${BENCH_INLETD_RUST_LOG:-} ]]; then export RUST_LOG=$BENCH_INLETD_RUST_LOG; fi
        exec "$REL/inletd" "${args[@]}"
    ) >"$LOGS/$4.log" 2>&1 &
    STARTED_PID=$!
    STARTED_ARGS="${args[*]}"
    PIDS+=("$STARTED_PID")
    wait_http "http://127.0.0.1:$2/healthz" 15 "$STARTED_PID" ||
        { log "inletd ($4) did not start"; cat "$LOGS/$4.log" >&2; exit 1; }
    wait_http "http://127.0.0.1:$1/" 5 "$STARTED_PID" ||
        { log "inletd ($4) listener did not answer"; cat "$LOGS/$4.log" >&2; exit 1; }
}

# ---------------------------------------------------------------- start servers
log "ports: trivial200=$P_TRIVIAL stand-in=$P_STANDIN inletd=$P_INLETD admin=$P_ADMIN" \
    "(phase mem: stand-in=$P_MSTANDIN inletd=$P_MINLETD admin=$P_MADMIN)"

"$REL/examples/trivial200" --listen "127.0.0.1:$P_TRIVIAL" >"$LOGS/trivial200.log" 2>&1 &
PID_TRIVIAL=$!
PIDS+=("$PID_TRIVIAL")
wait_http "http://127.0.0.1:$P_TRIVIAL/" 10 "$PID_TRIVIAL" ||
    { log "trivial200 did not start"; cat "$LOGS/trivial200.log" >&2; exit 1; }

start_standin "$P_STANDIN" "$LATENCY" standin
PID_STANDIN=$STARTED_PID

PID_INLETD=""
INLETD_ARGS=""
MAX_BUFFERED=0
IDLE_RSS_KB=0
if [[ $NEED_INLETD == 1 ]]; then
    # The memory bound in force: the override, else the default from --help.
    MAX_BUFFERED=${BENCH_MAX_BUFFERED_BYTES:-}
    if [[ -z $MAX_BUFFERED ]]; then
        MAX_BUFFERED=$("$REL/inletd" --help 2>/dev/null | tr '\n' ' ' |
            sed -n 's/.*--max-buffered-bytes[^[]*\[default: \([0-9]*\)\].*/\1/p')
    fi
    MAX_BUFFERED=${MAX_BUFFERED:-67108864}
fi
if [[ " $PHASES " == *" inletd"* ]]; then
    start_inletd "$P_INLETD" "$P_ADMIN" "$P_STANDIN" inletd
    PID_INLETD=$STARTED_PID
    INLETD_ARGS=$STARTED_ARGS
    sleep 1
    IDLE_RSS_KB=$(proc_kb "$PID_INLETD" VmRSS)
    log "inletd pid $PID_INLETD idle VmRSS ${IDLE_RSS_KB} kB, max_buffered_bytes $MAX_BUFFERED"
fi

# ---------------------------------------------------------------- quiet machine
# BENCH_WAIT_QUIET=SECONDS: before measuring, wait up to that long for the machine
# to be quiet (under 15 % busy over 3 s), e.g. while others' builds finish.
if [[ -n ${BENCH_WAIT_QUIET:-} ]]; then
    deadline=$(($(date +%s) + BENCH_WAIT_QUIET))
    ncpu=$(nproc)
    while :; do
        b0=$(machine_busy); sleep 3; b1=$(machine_busy)
        pct=$(awk -v a="$b0" -v b="$b1" -v n="$ncpu" 'BEGIN { printf "%d", (b - a) / (3 * n) * 100 }')
        if ((pct < 15)); then log "machine quiet (${pct}% busy)"; break; fi
        if (($(date +%s) >= deadline)); then log "machine still ${pct}% busy; measuring anyway"; break; fi
        log "machine ${pct}% busy; waiting"
    done
fi

# ---------------------------------------------------------------- phases
standin_stats() { curl -s --max-time 5 "http://127.0.0.1:$1/standin/stats" || echo '{}'; }
metrics() { curl -s --max-time 5 "http://127.0.0.1:$1/metrics" >"$2" || true; }

# run_phase NAME CONNS URL MSG_BYTES TARGET_PID STANDIN_PORT STANDIN_PID [ADMIN_PORT]
# Writes $LOGS/NAME.json: the loadgen line, stand-in counters before/after, CPU
# seconds of the target, the stand-in, trivial200 and the whole machine over the
# measured window (the loadgen's own cpu_s covers its whole run); with
# ADMIN_PORT, inletd's /metrics before and after (and buffered-bytes samples).
run_phase() {
    local name=$1 conns=$2 url=$3 bytes=$4 tpid=$5 sport=$6 spid=$7 admin=${8:-}
    local before after c_t0 c_t1 c_s0 c_s1 c_v0 c_v1 busy0 busy1 wall0 wall1 line sampler=""
    local threads=()
    [[ -n ${BENCH_LOADGEN_THREADS:-} ]] && threads=(--threads "$BENCH_LOADGEN_THREADS")
    log "phase $name: $conns connections x $bytes B -> $url ($WARMUP warmup + $DURATION)"
    before=$(standin_stats "$sport")
    [[ -n $admin ]] && metrics "$admin" "$LOGS/metrics-before-$name.txt"
    if [[ -n $admin ]]; then
        # Samples inletd_buffered_bytes twice a second (to see the buffer fill).
        (
            while :; do
                curl -s --max-time 1 "http://127.0.0.1:$admin/metrics" |
                    awk '$1 == "inletd_buffered_bytes" { print $2 }'
                sleep 0.5
            done
        ) >"$LOGS/buffered-$name.txt" 2>/dev/null &
        sampler=$!
        PIDS+=("$sampler")
    fi
    # loadgen runs in the background so CPU is sampled over its measured window only.
    "$REL/examples/loadgen" --url "$url" --connections "$conns" \
        --duration "$DURATION" --warmup "$WARMUP" --message-bytes "$bytes" "${threads[@]}" "${LOADGEN_EXTRA[@]}" \
        >"$LOGS/loadgen-$name.out" 2>"$LOGS/loadgen-$name.log" &
    local lpid=$!
    PIDS+=("$lpid")
    sleep "$WARMUP"
    c_t0=$(proc_cpu "$tpid"); c_s0=$(proc_cpu "$spid"); c_v0=$(proc_cpu "$PID_TRIVIAL")
    busy0=$(machine_busy)
    wall0=$(now_s)
    if ! wait "$lpid"; then
        log "loadgen failed in phase $name"; cat "$LOGS/loadgen-$name.log" >&2; exit 1
    fi
    line=$(cat "$LOGS/loadgen-$name.out")
    busy1=$(machine_busy)
    wall1=$(now_s)
    c_t1=$(proc_cpu "$tpid"); c_s1=$(proc_cpu "$spid"); c_v1=$(proc_cpu "$PID_TRIVIAL")
    if [[ -n $sampler ]]; then
        kill "$sampler" 2>/dev/null || true
        wait "$sampler" 2>/dev/null || true
    fi
    after=$(standin_stats "$sport")
    [[ -n $admin ]] && metrics "$admin" "$LOGS/metrics-after-$name.txt"
    printf '{"loadgen":%s,"standin_before":%s,"standin_after":%s,"cpu_s":{"target":%s,"standin":%s,"trivial200":%s,"machine_busy":%s},"wall_s":%s}\n' \
        "$line" "$before" "$after" \
        "$(sub "$c_t0" "$c_t1")" "$(sub "$c_s0" "$c_s1")" "$(sub "$c_v0" "$c_v1")" \
        "$(sub "$busy0" "$busy1")" "$(sub "$wall0" "$wall1")" \
        >"$LOGS/$name.json"
    log "phase $name: $line"
}

URL_PATH=/collection/$CONN_ID
LOADGEN_EXTRA=()
DIRECT=http://127.0.0.1:$P_STANDIN$URL_PATH
VIA=http://127.0.0.1:$P_INLETD$URL_PATH
for conns in "$FEW" "$MANY" "$FLOOD"; do
    if has_phase "direct$conns"; then
        run_phase "direct$conns" "$conns" "$DIRECT" "$MSG_BYTES" "$PID_STANDIN" "$P_STANDIN" ""
    fi
    if has_phase "trivial$conns"; then
        run_phase "trivial$conns" "$conns" "http://127.0.0.1:$P_TRIVIAL$URL_PATH" "$MSG_BYTES" "$PID_TRIVIAL" "$P_STANDIN" ""
    fi
    if has_phase "inletd$conns"; then
        run_phase "inletd$conns" "$conns" "$VIA" "$MSG_BYTES" "$PID_INLETD" "$P_STANDIN" "$PID_STANDIN" "$P_ADMIN"
    fi
done

PEAK_RSS_KB=0
if [[ -n $PID_INLETD ]]; then
    PEAK_RSS_KB=$(proc_kb "$PID_INLETD" VmHWM)
    kill -0 "$PID_INLETD" 2>/dev/null || log "WARNING: inletd exited during the run (see $LOGS/inletd.log)"
fi

MEM_ARGS=""
MEM_IDLE_RSS_KB=0
MEM_PEAK_RSS_KB=0
if has_phase mem; then
    start_standin "$P_MSTANDIN" "$MEM_LATENCY" standin-mem
    PID_MSTANDIN=$STARTED_PID
    start_inletd "$P_MINLETD" "$P_MADMIN" "$P_MSTANDIN" inletd-mem
    PID_MINLETD=$STARTED_PID
    MEM_ARGS=$STARTED_ARGS
    sleep 1
    MEM_IDLE_RSS_KB=$(proc_kb "$PID_MINLETD" VmRSS)
    if [[ -n ${BENCH_MEM_LOADGEN_ARGS:-} ]]; then
        read -r -a LOADGEN_EXTRA <<<"$BENCH_MEM_LOADGEN_ARGS"
    fi
    run_phase mem "$MEM_CONNS" "http://127.0.0.1:$P_MINLETD$URL_PATH" "$MEM_MSG_BYTES" "$PID_MINLETD" "$P_MSTANDIN" "$PID_MSTANDIN" "$P_MADMIN"
    MEM_PEAK_RSS_KB=$(proc_kb "$PID_MINLETD" VmHWM)
    kill -0 "$PID_MINLETD" 2>/dev/null || log "WARNING: inletd (phase mem) exited during the run (see $LOGS/inletd-mem.log)"
fi

# Instructions per message under callgrind (its own stand-in and inletd, defaults).
if has_phase instr; then
    if command -v valgrind >/dev/null; then
        log "phase instr: bench/profile.sh (inletd under callgrind)"
        BENCH_SKIP_BUILD=1 BENCH_PROFILE_TOP=0 "$ROOT/bench/profile.sh" >"$LOGS/instr.out" 2>"$LOGS/instr.log" ||
            log "phase instr failed (see $LOGS/instr.log)"
    else
        log "phase instr skipped: valgrind not found"
    fi
fi

# ---------------------------------------------------------------- report
set +e
python3 "$ROOT/bench/report.py" \
    --logs "$LOGS" --out "$OUT_JSON" --phases "$PHASES" \
    --duration "$DURATION" --warmup "$WARMUP" --message-bytes "$MSG_BYTES" \
    --few "$FEW" --many "$MANY" --flood "$FLOOD" --latency "$LATENCY" \
    --max-buffered-bytes "$MAX_BUFFERED" \
    --idle-rss-kb "$IDLE_RSS_KB" --peak-rss-kb "$PEAK_RSS_KB" \
    --mem-idle-rss-kb "$MEM_IDLE_RSS_KB" --mem-peak-rss-kb "$MEM_PEAK_RSS_KB" \
    --mem-latency "$MEM_LATENCY" --mem-message-bytes "$MEM_MSG_BYTES" \
    --cpus "$(nproc)" --inletd-args "$INLETD_ARGS" --mem-inletd-args "$MEM_ARGS"
rc=$?
set -e
if [[ $rc -ne 0 && "${BENCH_STRICT:-0}" == 1 ]]; then
    exit 1
fi
exit 0
