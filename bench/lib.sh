# bench/lib.sh: shared by the bench scripts (sourced, not run).
# Everything a script starts goes into PIDS; on exit each gets SIGTERM, a
# moment to stop, then SIGKILL.

PIDS=()

# shellcheck disable=SC2317  # called from the trap
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_http URL SECONDS PID: until URL answers anything (any status), while
# PID lives.
wait_http() {
    local url=$1 secs=$2 pid=$3 i
    for ((i = 0; i < secs * 20; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        curl -s -o /dev/null --max-time 1 "$url" && return 0
        sleep 0.05
    done
    return 1
}
