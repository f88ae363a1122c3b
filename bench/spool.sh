#!/usr/bin/env bash
# bench/spool.sh: fire-and-forget in memory against the durable spool, side by
# side in one run, then kill -9 cycles under load. All on 127.0.0.1, free ports.
#
#   phase   what                                                   target
#   memory  inletd (no spool_dir), N producers sending              reference
#           `Prefer: respond-async`, 202 counted as success
#   spool   the same with spool_dir in a fresh directory            >= 0.8x memory's msgs/s;
#                                                                   202 p99 <= 5 ms; messages per
#                                                                   fsync reported
#   kill9   producers send async throughout; inletd (spool) is       lost = 0 (every _id that got a
#           killed with SIGKILL and restarted CYCLES times; then      202 reached the stand-in);
#           the spool drains                                        duplicates reported
#
# The stand-in answers after 20 ms (--latency); loadgen runs N keep-alive
# connections (default 64), one request in flight on each, 1 KiB messages with
# a unique `_id`. Messages per fsync: the increase of
# inletd_spool_synced_messages_total over that of inletd_spool_syncs_total in
# the measured window (from /metrics before and after). CPU per message: the
# CPU seconds (user + system, /proc/<pid>/stat) inletd and the stand-in used in
# the measured window over the messages answered 202 in it, plus how many of
# the machine's CPUs were busy then (at all of them the phase is CPU-bound, and
# its msgs/s says more about the machine than about inletd).
#
# Needs a build of inletd in which fire-and-forget and the spool are wired:
# the script stops with a clear message when inletd answers 200 to
# `Prefer: respond-async` (not wired) or shows no spool metrics (spool_dir
# not honoured).
#
# Usage:   bench/spool.sh
#          BENCH_DURATION=3s BENCH_KILL_CYCLES=3 bench/spool.sh     (quicker)
#
# Environment (all optional):
#   BENCH_DURATION=10s  BENCH_WARMUP=2s  BENCH_MESSAGE_BYTES=1024  BENCH_CONNECTION_ID=benchconn0001
#   BENCH_SPOOL_CONNECTIONS=64             producers (connections) of every phase
#   BENCH_STANDIN_LATENCY=20ms             stand-in's answer delay
#   BENCH_KILL_CYCLES=10  BENCH_KILL_EVERY=3   kill -9 cycles, seconds of load between kills
#   BENCH_KILL_RATE=2000                   producers' total messages/s during kill9 (empty: closed loop)
#   BENCH_SPOOL_PARENT=target              where the spool directories are made: a real disk,
#                                          not /tmp (often tmpfs, where fsync costs nothing)
#   BENCH_DRAIN_TIMEOUT=120                seconds to wait for the spool to drain after kill9
#   BENCH_INLETD_ARGS="..."                extra inletd arguments (every phase)
#   BENCH_PHASES="memory spool kill9"
#   BENCH_SKIP_BUILD=1                     use the existing binaries
#   BENCH_BIN_DIR=target/release           where they are (with BENCH_SKIP_BUILD=1)
#   BENCH_STRICT=1                         exit 1 when a check fails
#
# Prints a table and every check with PASS/FAIL; writes target/bench-spool.json;
# logs, raw loadgen output and /metrics snapshots go to target/bench-spool-logs/.
# Everything it started is stopped on exit (by PID).

set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-2s}
CONNS=${BENCH_SPOOL_CONNECTIONS:-64}
MSG_BYTES=${BENCH_MESSAGE_BYTES:-1024}
CONN_ID=${BENCH_CONNECTION_ID:-benchconn0001}
LATENCY=${BENCH_STANDIN_LATENCY:-20ms}
CYCLES=${BENCH_KILL_CYCLES:-10}
EVERY=${BENCH_KILL_EVERY:-3}
KILL_RATE=${BENCH_KILL_RATE-2000}
SPOOL_PARENT=${BENCH_SPOOL_PARENT:-$ROOT/target}
DRAIN_TIMEOUT=${BENCH_DRAIN_TIMEOUT:-120}
PHASES=${BENCH_PHASES:-memory spool kill9}

REL=${BENCH_BIN_DIR:-$ROOT/target/release}
LOGS=$ROOT/target/bench-spool-logs
OUT_JSON=$ROOT/target/bench-spool.json
mkdir -p "$LOGS" "$SPOOL_PARENT"
rm -f "$LOGS"/*

has_phase() { [[ " $PHASES " == *" $1 "* ]]; }
log() { printf '[bench-spool] %s\n' "$*" >&2; }
die() { printf '[bench-spool] ERROR: %s\n' "$*" >&2; exit 1; }

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
SPOOL_DIRS=()
remove_spools() {
    local d
    for d in "${SPOOL_DIRS[@]}"; do rm -rf -- "$d"; done
}
trap 'cleanup; remove_spools' EXIT

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    log "cargo build --release --bins --examples"
    cargo build --release --bins --examples >&2
fi
for b in "$REL/inletd" "$REL/aep-standin" "$REL/examples/loadgen"; do
    [[ -x $b ]] || die "missing $b"
done

read -r P_STANDIN P_INLETD P_ADMIN < <(python3 "$ROOT/bench/free_ports.py" 3)
URL="http://127.0.0.1:$P_INLETD/collection/$CONN_ID"
METRICS="http://127.0.0.1:$P_ADMIN/metrics"


# start_standin LOGNAME [--no-record]: sets PID_STANDIN.
start_standin() {
    "$REL/aep-standin" --listen "127.0.0.1:$P_STANDIN" --latency "$LATENCY" "${@:2}" \
        >"$LOGS/$1.log" 2>&1 &
    PID_STANDIN=$!
    PIDS+=("$PID_STANDIN")
    wait_http "http://127.0.0.1:$P_STANDIN/standin/stats" 10 "$PID_STANDIN" ||
        die "aep-standin did not start (log: $LOGS/$1.log)"
}

stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# start_inletd LOGNAME [SPOOL_DIR]: sets PID_INLETD. The spool directory is
# given as INLETD_SPOOL_DIR, so a build without the key still starts (and the
# check below says what is missing) instead of failing on an unknown flag.
start_inletd() {
    local args=(--listen "127.0.0.1:$P_INLETD" --admin-listen "127.0.0.1:$P_ADMIN"
        --upstream "http://127.0.0.1:$P_STANDIN")
    if [[ -n ${BENCH_INLETD_ARGS:-} ]]; then
        local extra
        read -r -a extra <<<"$BENCH_INLETD_ARGS"
        args+=("${extra[@]}")
    fi
    (
        if [[ -n ${2:-} ]]; then export INLETD_SPOOL_DIR=$2; fi
        exec "$REL/inletd" "${args[@]}"
    ) >>"$LOGS/$1.log" 2>&1 &
    PID_INLETD=$!
    PIDS+=("$PID_INLETD")
    wait_http "http://127.0.0.1:$P_ADMIN/healthz" 30 "$PID_INLETD" ||
        die "inletd did not start (log: $LOGS/$1.log)"
}

# require_async: one message with Prefer: respond-async must get a 202.
require_async() {
    local status
    status=$(curl -s -o "$LOGS/probe-body.txt" -w '%{http_code}' --max-time 15 \
        -H 'content-type: application/json' -H 'Prefer: respond-async' \
        -d '{"header":{"schemaRef":{"id":"probe"}},"body":{"xdmEntity":{"_id":"probe-'"$1"'"}}}' "$URL") || true
    case $status in
        202) ;;
        200) die "inletd answered 200 to 'Prefer: respond-async' ($1): fire-and-forget is not wired into this build (docs/spool.md); nothing to measure" ;;
        *) die "inletd answered ${status:-nothing} to 'Prefer: respond-async' ($1): $(head -c 300 "$LOGS/probe-body.txt")" ;;
    esac
}

# metric FILE NAME: the sum of NAME's samples (all label sets) in a /metrics text.
metric() {
    awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%.0f\n", s + 0 }' "$1"
}

require_spool_metrics() {
    curl -s --max-time 5 "$METRICS" >"$LOGS/$1-metrics-probe.txt" || true
    grep -q '^# TYPE inletd_spool_syncs_total ' "$LOGS/$1-metrics-probe.txt" ||
        die "inletd with INLETD_SPOOL_DIR shows no inletd_spool_syncs_total in /metrics: the spool is not wired into this build (or spool_dir was not honoured)"
}

# CPU seconds (user + system) PID used so far, from /proc/PID/stat (as bench/run.sh).
TICKS=$(getconf CLK_TCK)
proc_cpu() {
    if [[ -r /proc/$1/stat ]]; then
        # Fields after the ")" of the command name: utime is the 12th, stime the 13th.
        sed 's/^.*) //' "/proc/$1/stat" | awk -v t="$TICKS" '{ printf "%.2f\n", ($12 + $13) / t }'
    else
        echo 0
    fi
}
# Busy CPU seconds of the whole machine so far (all CPUs; /proc/stat).
machine_busy() { awk -v t="$TICKS" '$1 == "cpu" { printf "%.2f\n", ($2 + $3 + $4 + $7 + $8 + $9) / t }' /proc/stat; }

new_spool_dir() {
    local d
    d=$(mktemp -d "$SPOOL_PARENT/bench-spool.XXXXXX")
    SPOOL_DIRS+=("$d")
    printf '%s/spool\n' "$d"
}

loadgen_async() { # NAME [extra loadgen args...]: raw JSON line to $LOGS/NAME.json
    local name=$1
    shift
    "$REL/examples/loadgen" --url "$URL" --connections "$CONNS" --message-bytes "$MSG_BYTES" \
        --header 'Prefer: respond-async' --expect-status 202 --expect '' "$@" \
        >"$LOGS/$name.json" 2>"$LOGS/$name.err"
}

declare -A RESULT
# ---------------------------------------------------------------- memory, spool
measure() { # PHASE [SPOOL_DIR]
    local phase=$1 dir=${2:-}
    start_standin "standin-$phase" --no-record
    start_inletd "inletd-$phase" "$dir"
    require_async "$phase"
    [[ -z $dir ]] || require_spool_metrics "$phase"
    log "$phase: $CONNS producers, async, $WARMUP + $DURATION"
    # In the background so the CPU and /metrics deltas cover the measured
    # window only (after the warmup), as bench/run.sh does.
    loadgen_async "$phase" --duration "$DURATION" --warmup "$WARMUP" &
    local lpid=$! c_i0 c_s0 busy0 wall0 c_i1 c_s1 busy1 wall1
    PIDS+=("$lpid")
    sleep "$WARMUP"
    curl -s "$METRICS" >"$LOGS/$phase-metrics-before.txt"
    c_i0=$(proc_cpu "$PID_INLETD"); c_s0=$(proc_cpu "$PID_STANDIN")
    busy0=$(machine_busy); wall0=$(date +%s.%N)
    wait "$lpid" || die "loadgen failed in $phase (see $LOGS/$phase.err)"
    c_i1=$(proc_cpu "$PID_INLETD"); c_s1=$(proc_cpu "$PID_STANDIN")
    busy1=$(machine_busy); wall1=$(date +%s.%N)
    curl -s "$METRICS" >"$LOGS/$phase-metrics-after.txt"
    stop_pid "$PID_INLETD"
    stop_pid "$PID_STANDIN"
    RESULT[$phase]=$(python3 -c '
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
d = lambda a, b: float(b) - float(a)
r["cpu_s"] = {"inletd": d(*sys.argv[2:4]), "standin": d(*sys.argv[4:6]),
              "machine_busy": d(*sys.argv[6:8]), "wall": d(*sys.argv[8:10])}
print(json.dumps(r))' "$LOGS/$phase.json" "$c_i0" "$c_i1" "$c_s0" "$c_s1" "$busy0" "$busy1" "$wall0" "$wall1")
}
has_phase memory && measure memory
has_phase spool && measure spool "$(new_spool_dir)"

# ---------------------------------------------------------------- kill9
if has_phase kill9; then
    dir=$(new_spool_dir)
    start_standin standin-kill9
    start_inletd inletd-kill9 "$dir"
    require_async kill9
    require_spool_metrics kill9
    total=$((CYCLES * EVERY + EVERY))
    rate_args=()
    [[ -z $KILL_RATE ]] || rate_args=(--rate "$KILL_RATE")
    log "kill9: $CONNS producers for ${total}s, SIGKILL every ${EVERY}s, $CYCLES cycles"
    loadgen_async kill9 --duration "${total}s" --warmup 0s --timeout 2s \
        --ids-out "$LOGS/kill9-acked-ids.txt" "${rate_args[@]}" &
    PID_LOADGEN=$!
    PIDS+=("$PID_LOADGEN")
    for ((c = 1; c <= CYCLES; c++)); do
        sleep "$EVERY"
        kill -KILL "$PID_INLETD"
        wait "$PID_INLETD" 2>/dev/null || true
        log "kill9: cycle $c: killed, restarting"
        start_inletd inletd-kill9 "$dir"
    done
    wait "$PID_LOADGEN" || die "loadgen failed in kill9 (see $LOGS/kill9.err)"
    log "kill9: load over; waiting for the spool to drain (up to ${DRAIN_TIMEOUT}s)"
    drained=0
    for ((i = 0; i < DRAIN_TIMEOUT * 2; i++)); do
        curl -s --max-time 2 "$METRICS" >"$LOGS/kill9-metrics-after.txt" || true
        if grep -q '^inletd_spool_messages' "$LOGS/kill9-metrics-after.txt" &&
            [[ $(metric "$LOGS/kill9-metrics-after.txt" inletd_spool_messages) == 0 ]]; then
            drained=1
            break
        fi
        sleep 0.5
    done
    curl -s --max-time 60 "http://127.0.0.1:$P_STANDIN/standin/messages" >"$LOGS/kill9-delivered.json"
    RESULT[kill9]=$(python3 - "$LOGS/kill9-acked-ids.txt" "$LOGS/kill9-delivered.json" \
        "$LOGS/kill9.json" "$drained" "$CYCLES" <<'EOF'
import json, sys
acked = [l.strip() for l in open(sys.argv[1]) if l.strip()]
delivered = json.load(open(sys.argv[2]))
load = json.loads(open(sys.argv[3]).read().strip().splitlines()[-1])
lost = [i for i in acked if i not in delivered]
dups = sum(len(x) - 1 for x in delivered.values() if len(x) > 1)
print(json.dumps({"cycles": int(sys.argv[5]), "acked": len(acked), "delivered_ids": len(delivered),
                  "lost": len(lost), "lost_sample": lost[:10], "duplicates": dups,
                  "drained": sys.argv[4] == "1", "loadgen": load}))
EOF
)
    stop_pid "$PID_INLETD"
    stop_pid "$PID_STANDIN"
fi

# ---------------------------------------------------------------- report
rc=0
python3 - "$OUT_JSON" "$LOGS" "${RESULT[memory]:-}" "${RESULT[spool]:-}" "${RESULT[kill9]:-}" <<'EOF' || rc=$?
import json, sys
out, logs = sys.argv[1], sys.argv[2]
def load(s):
    return json.loads(s.strip().splitlines()[-1]) if s.strip() else None
mem, spool, kill = load(sys.argv[3]), load(sys.argv[4]), load(sys.argv[5])

def metric(path, name):
    total, seen = 0.0, False
    try:
        for line in open(path):
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.split()[-1]); seen = True
    except FileNotFoundError:
        return None
    return total if seen else None

checks, summary = [], {}
def cpu_us(r, who):
    # CPU µs per message over the measured window (the messages that got their 202 then).
    cpu, secs = r.get("cpu_s", {}), r.get("duration_s") or 0
    msgs = r["msgs_per_s"] * secs
    return cpu[who] / msgs * 1e6 if who in cpu and msgs > 0 else float("nan")

print("%-8s %12s %9s %9s %9s %8s %10s %10s %9s" % ("phase", "msgs/s", "p50 ms", "p99 ms", "max ms", "errors",
                                                   "inletd us", "standin us", "busy cpus"))
for name, r in (("memory", mem), ("spool", spool)):
    if r:
        cpu = r.get("cpu_s", {})
        busy = cpu["machine_busy"] / cpu["wall"] if cpu.get("wall") else float("nan")
        r["inletd_cpu_us_per_msg"] = cpu_us(r, "inletd")
        r["standin_cpu_us_per_msg"] = cpu_us(r, "standin")
        print("%-8s %12.1f %9.2f %9.2f %9.2f %8d %10.1f %10.1f %9.2f" % (name, r["msgs_per_s"], r["p50_ms"], r["p99_ms"], r["max_ms"], r["errors"],
              r["inletd_cpu_us_per_msg"], r["standin_cpu_us_per_msg"], busy))
        summary[name] = r
print("(inletd us, standin us: CPU µs (user + system) per message over the measured window; busy cpus:\n"
      " the whole machine's busy CPUs then, of %d; near it, the phase is CPU-bound)" % __import__("os").cpu_count())
if spool:
    b, a = "%s/spool-metrics-before.txt" % logs, "%s/spool-metrics-after.txt" % logs
    syncs = (metric(a, "inletd_spool_syncs_total") or 0) - (metric(b, "inletd_spool_syncs_total") or 0)
    synced = (metric(a, "inletd_spool_synced_messages_total") or 0) - (metric(b, "inletd_spool_synced_messages_total") or 0)
    per = synced / syncs if syncs > 0 else None
    summary["messages_per_fsync"] = per
    summary["fsyncs"] = syncs
    print("messages per fsync (spool): %s (%d messages, %d syncs)" % ("%.1f" % per if per else "n/a", synced, syncs))
    checks.append(("spool 202 p99 <= 5 ms", spool["p99_ms"] <= 5.0, "%.2f ms" % spool["p99_ms"]))
    checks.append(("spool has no errors", spool["errors"] == 0, "%d errors" % spool["errors"]))
if mem and spool:
    ratio = spool["msgs_per_s"] / mem["msgs_per_s"] if mem["msgs_per_s"] else 0
    summary["spool_over_memory"] = ratio
    cpu_ratio = spool["inletd_cpu_us_per_msg"] / mem["inletd_cpu_us_per_msg"]
    summary["spool_over_memory_inletd_cpu_per_msg"] = cpu_ratio
    print("inletd CPU per message, spool / memory: %.2f x" % cpu_ratio)
    checks.append(("spool msgs/s >= 0.8 x memory", ratio >= 0.8, "%.2f x" % ratio))
if kill:
    summary["kill9"] = kill
    print("kill9: %d cycles, %d messages got a 202, %d distinct delivered, lost %d, duplicates %d%s"
          % (kill["cycles"], kill["acked"], kill["delivered_ids"], kill["lost"], kill["duplicates"],
             "" if kill["drained"] else " (spool NOT drained in time)"))
    checks.append(("kill9: nothing that got a 202 lost", kill["lost"] == 0, "%d lost %s" % (kill["lost"], kill["lost_sample"])))
    checks.append(("kill9: spool drained after the last restart", kill["drained"], ""))
failed = 0
for name, ok, detail in checks:
    print("%s  %s  %s" % ("PASS" if ok else "FAIL", name, detail))
    failed += 0 if ok else 1
summary["checks"] = [{"check": n, "pass": ok, "detail": d} for n, ok, d in checks]
json.dump(summary, open(out, "w"), indent=2)
print("written: %s" % out)
sys.exit(1 if failed else 0)
EOF
if [[ $rc != 0 && ${BENCH_STRICT:-0} == 1 ]]; then exit 1; fi
exit 0
