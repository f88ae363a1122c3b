#!/usr/bin/env bash
# bench/soak.sh: a long run at steady load with upstream faults, watching inletd
# for leaks (memory, file descriptors) and for producer requests left unanswered.
#
# What it does (all on 127.0.0.1, free ports picked at start):
#   1. cargo build --release --bins --examples (unless SOAK_SKIP_BUILD=1)
#   2. starts aep-standin --latency 20ms --no-record and inletd in front of it
#   3. the rate: the argument / SOAK_RATE (messages per second), or else measured:
#      a short closed-loop run (SOAK_MEASURE, default 10s) gives the maximum and
#      the soak runs at SOAK_LOAD_PCT (default 80) % of it
#   4. examples/loadgen at that rate for SOAK_WARMUP + SOAK_DURATION, while
#        - every SOAK_FAULT_EVERY seconds one fault is queued on the stand-in
#          (POST /standin/faults), in turn: 503, 429 with Retry-After: 1, a
#          garbage 207, a 207 with too few entries, 500;
#        - every SOAK_SAMPLE_EVERY seconds inletd's VmRSS and open file
#          descriptors are read from /proc/<pid> (and once more 2 s after the
#          load, shown apart: the producers' connections should be gone)
#   5. prints first / warm-up / last / max of each, and FAILS (exit 1) when
#        - RSS or open fds at the end (mean of the last 3 samples) is more than
#          SOAK_MAX_GROWTH_PCT (default 10) % above the warm-up level (the first
#          sample after the warm-up), or
#        - any producer request went unanswered (loadgen timeouts, connections
#          dropped without an answer, connect failures, lost workers), or
#        - inletd exited.
#      Answers that are errors (a 502 for a message whose batch got a garbage
#      answer, say) are answered requests: they are counted and shown, not failed.
#   Logs, samples and the loadgen line: target/soak-logs/. Everything started
#   is killed on exit (by PID).
#
# Usage:   bench/soak.sh                         (10 min at 80 % of the measured max)
#          SOAK_DURATION=2m bench/soak.sh        (quicker)
#          bench/soak.sh 3000                    (10 min at 3000 messages/s)
#
# Environment (all optional):
#   SOAK_DURATION=10m  SOAK_WARMUP=30s  SOAK_MEASURE=10s  SOAK_LOAD_PCT=80  SOAK_RATE
#   SOAK_CONNECTIONS=128  SOAK_MESSAGE_BYTES=1024  SOAK_CONNECTION_ID=soakconn0001
#   SOAK_STANDIN_LATENCY=20ms  SOAK_FAULT_EVERY=5  SOAK_SAMPLE_EVERY=5
#   SOAK_MAX_GROWTH_PCT=10  SOAK_INLETD_ARGS="..."  SOAK_SKIP_BUILD=1
#   SOAK_PROFILE=release    or `debug`: unoptimised binaries (target/debug; a quick
#                           check of the script itself, not a measurement)
#
# Needs: bash, cargo, curl, python3.

set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=${SOAK_DURATION:-10m}
WARMUP=${SOAK_WARMUP:-30s}
MEASURE=${SOAK_MEASURE:-10s}
LOAD_PCT=${SOAK_LOAD_PCT:-80}
RATE=${1:-${SOAK_RATE:-}}
CONNS=${SOAK_CONNECTIONS:-128}
MSG_BYTES=${SOAK_MESSAGE_BYTES:-1024}
CONN_ID=${SOAK_CONNECTION_ID:-soakconn0001}
LATENCY=${SOAK_STANDIN_LATENCY:-20ms}
FAULT_EVERY=${SOAK_FAULT_EVERY:-5}
SAMPLE_EVERY=${SOAK_SAMPLE_EVERY:-5}
MAX_GROWTH_PCT=${SOAK_MAX_GROWTH_PCT:-10}

PROFILE=${SOAK_PROFILE:-release}
case $PROFILE in
    release) BUILD=(cargo build --release --bins --examples) ;;
    debug) BUILD=(cargo build --bins --examples) ;;
    *) printf '[soak] SOAK_PROFILE must be release or debug\n' >&2; exit 2 ;;
esac
REL=$ROOT/target/$PROFILE
LOGS=$ROOT/target/soak-logs
mkdir -p "$LOGS"
rm -f "$LOGS"/*.log "$LOGS"/*.txt "$LOGS"/*.json

log() { printf '[soak] %s\n' "$*" >&2; }
# Seconds in a humantime-like duration (`90s`, `10m`, `1h`, `2m30s`).
seconds() {
    python3 -c '
import re, sys
units = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600}
text = sys.argv[1].replace(" ", "")
parts = re.findall(r"(\d+(?:\.\d+)?)(ms|min|s|m|h)", text)
if not parts or "".join(n + u for n, u in parts) != text:
    sys.exit("not a duration: " + sys.argv[1])
print(int(sum(float(n) * units[u] for n, u in parts)))' "$1"
}
DURATION_S=$(seconds "$DURATION")
WARMUP_S=$(seconds "$WARMUP")

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

# ---------------------------------------------------------------- build
if [[ "${SOAK_SKIP_BUILD:-0}" != 1 ]]; then
    log "${BUILD[*]}"
    "${BUILD[@]}" >&2
fi
for b in "$REL/examples/loadgen" "$REL/aep-standin" "$REL/inletd"; do
    [[ -x $b ]] || { log "missing $b"; exit 1; }
done

# ---------------------------------------------------------------- start
read -r P_STANDIN P_INLETD P_ADMIN < <(python3 "$ROOT/bench/free_ports.py" 3)


"$REL/aep-standin" --listen "127.0.0.1:$P_STANDIN" --latency "$LATENCY" --no-record \
    >"$LOGS/standin.log" 2>&1 &
PID_STANDIN=$!
PIDS+=("$PID_STANDIN")
wait_http "http://127.0.0.1:$P_STANDIN/standin/stats" 10 "$PID_STANDIN" ||
    { log "aep-standin did not start"; cat "$LOGS/standin.log" >&2; exit 1; }

INLETD_ARGS=(--listen "127.0.0.1:$P_INLETD" --admin-listen "127.0.0.1:$P_ADMIN"
    --upstream "http://127.0.0.1:$P_STANDIN")
if [[ -n ${SOAK_INLETD_ARGS:-} ]]; then
    read -r -a extra <<<"$SOAK_INLETD_ARGS"
    INLETD_ARGS+=("${extra[@]}")
fi
log "inletd ${INLETD_ARGS[*]}"
"$REL/inletd" "${INLETD_ARGS[@]}" >"$LOGS/inletd.log" 2>&1 &
PID_INLETD=$!
PIDS+=("$PID_INLETD")
wait_http "http://127.0.0.1:$P_ADMIN/healthz" 15 "$PID_INLETD" ||
    { log "inletd did not start"; cat "$LOGS/inletd.log" >&2; exit 1; }

URL="http://127.0.0.1:$P_INLETD/collection/$CONN_ID"
field() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

# ---------------------------------------------------------------- rate
if [[ -z $RATE ]]; then
    log "measuring the maximum: $CONNS connections, closed loop, 2s warmup + $MEASURE"
    line=$("$REL/examples/loadgen" --url "$URL" --connections "$CONNS" --duration "$MEASURE" \
        --warmup 2s --message-bytes "$MSG_BYTES" 2>"$LOGS/loadgen-measure.log")
    printf '%s\n' "$line" >"$LOGS/measure.json"
    max=$(field "$line" msgs_per_s)
    RATE=$(python3 -c "print(max(1, int(float('$max') * $LOAD_PCT / 100)))")
    log "maximum ${max} msg/s; soaking at ${LOAD_PCT} %: $RATE msg/s"
fi
[[ $RATE =~ ^[0-9]+(\.[0-9]+)?$ ]] || { log "the rate must be a number of messages per second, not '$RATE'"; exit 2; }

# ---------------------------------------------------------------- soak
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
rss_kb() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

log "soak: $RATE msg/s on $CONNS connections for $WARMUP warm-up + $DURATION;" \
    "a fault every ${FAULT_EVERY}s, a sample every ${SAMPLE_EVERY}s"
start=$(date +%s)

# Samples: seconds since start, VmRSS kB, open fds.
(
    while kill -0 "$PID_INLETD" 2>/dev/null; do
        printf '%s %s %s\n' "$(($(date +%s) - start))" "$(rss_kb "$PID_INLETD")" "$(fds "$PID_INLETD")"
        sleep "$SAMPLE_EVERY"
    done
) >"$LOGS/samples.txt" &
PID_SAMPLER=$!
PIDS+=("$PID_SAMPLER")

# Faults, in turn; each line of faults.txt says what was queued and whether it took.
FAULTS=(
    '[{"kind":"status","status":503}]'
    '[{"kind":"status","status":429,"retry_after":1}]'
    '[{"kind":"garbage"}]'
    '[{"kind":"short_responses"}]'
    '[{"kind":"status","status":500}]'
)
(
    i=0
    while :; do
        sleep "$FAULT_EVERY"
        fault=${FAULTS[i % ${#FAULTS[@]}]}
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -X POST \
            -H 'content-type: application/json' --data "$fault" \
            "http://127.0.0.1:$P_STANDIN/standin/faults" || echo 000)
        printf '%s %s %s\n' "$(($(date +%s) - start))" "$code" "$fault"
        i=$((i + 1))
    done
) >"$LOGS/faults.txt" &
PIDS+=("$!")

# loadgen's own timeout is longer than inletd's request_timeout, so inletd's 504
# is an answer and only a request inletd never answered counts as a timeout.
rc=0
timeout --kill-after=10 $((WARMUP_S + DURATION_S + 60)) \
    "$REL/examples/loadgen" --url "$URL" --connections "$CONNS" --rate "$RATE" \
    --duration "$DURATION" --warmup "$WARMUP" --message-bytes "$MSG_BYTES" --timeout 30s \
    >"$LOGS/soak.json" 2>"$LOGS/loadgen-soak.log" || rc=$?
kill "$PID_SAMPLER" 2>/dev/null || true
# Once the producers have gone: their connections' fds must have been released.
sleep 2
printf '%s %s %s\n' "$(($(date +%s) - start))" "$(rss_kb "$PID_INLETD")" "$(fds "$PID_INLETD")" >"$LOGS/after.txt"
alive=1
kill -0 "$PID_INLETD" 2>/dev/null || alive=0
curl -s --max-time 5 "http://127.0.0.1:$P_STANDIN/standin/stats" >"$LOGS/standin-stats.json" || true
curl -s --max-time 5 "http://127.0.0.1:$P_ADMIN/metrics" >"$LOGS/metrics.txt" || true
if [[ $rc -ne 0 ]]; then
    log "loadgen failed (exit $rc)"
    cat "$LOGS/loadgen-soak.log" >&2
    exit 1
fi

# ---------------------------------------------------------------- verdict
python3 - "$LOGS" "$WARMUP_S" "$MAX_GROWTH_PCT" "$alive" "$RATE" "$PROFILE" <<'EOF'
import json, sys

logs, warmup_s, max_growth, alive, rate, profile = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1", sys.argv[5], sys.argv[6]
samples = [tuple(int(x) for x in line.split()) for line in open(f"{logs}/samples.txt") if len(line.split()) == 3]
faults = [line.split(" ", 2) for line in open(f"{logs}/faults.txt")]
result = json.loads(open(f"{logs}/soak.json").read())
failures = []

print(f"soak ({profile} build): {rate} msg/s target, {result['msgs_per_s']:.0f} msg/s answered ok, "
      f"{result['duration_s']:.0f} s measured after {warmup_s} s warm-up")
print(f"answers: ok {result['ok']}, errors {result['errors']}, statuses {result['status_counts']}, "
      f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, max {result['max_ms']:.1f} ms")
queued = sum(1 for f in faults if f[1] == "200")
print(f"faults queued on the stand-in: {queued} of {len(faults)} tried")
if queued < len(faults):
    failures.append(f"{len(faults) - queued} faults could not be queued (see faults.txt)")

kinds = result.get("error_kinds", {})
unanswered = {k: kinds.get(k, 0) for k in ("timeout", "io", "connect")}
unanswered["lost_workers"] = result.get("lost_workers", 0)
print(f"unanswered: {unanswered}")
if any(unanswered.values()):
    failures.append(f"producer requests went unanswered: {unanswered}")
if not alive:
    failures.append("inletd exited during the soak")

warm = [s for s in samples if s[0] >= warmup_s]
if len(warm) < 4:
    failures.append(f"only {len(warm)} samples after the warm-up; run longer")
else:
    for i, name, unit in ((1, "RSS", "kB"), (2, "open fds", "")):
        values = [s[i] for s in samples]
        level = warm[0][i]
        end = sum(s[i] for s in warm[-3:]) / 3
        growth = (end - level) / level * 100 if level else 0.0
        print(f"{name:9}: first {values[0]}{unit}, warm-up {level}{unit}, last {values[-1]}{unit}, "
              f"max {max(values)}{unit}, end (mean of last 3) {end:.0f}{unit}: {growth:+.1f} % "
              f"({len(values)} samples)")
        if growth > max_growth:
            failures.append(f"{name} grew {growth:.1f} % from the warm-up level (limit {max_growth:g} %)")

after = open(f"{logs}/after.txt").read().split()
if len(after) == 3:
    print(f"after the load (producers gone): RSS {after[1]}kB, open fds {after[2]}")
for f in failures:
    print(f"FAIL: {f}")
print("soak: " + ("FAILED" if failures else "passed"))
sys.exit(1 if failures else 0)
EOF
