#!/usr/bin/env python3
"""bench/report.py: turns the raw phase outputs of bench/run.sh into the table,
the ratios and the checks, and writes them as one JSON document.

Called by bench/run.sh; not meant to be run by hand (but it can be re-run on an
existing target/bench-logs/ with the same arguments). Exit status 1 when a check
fails, 0 otherwise.
"""

import argparse
import json
import os
import re
import sys

MIB = 1024 * 1024

PHASES = {
    "A": "trivial200 (ceiling)",
    "B": "inletd -> stand-in",
    "C": "stand-in single endpoint",
    "D": "inletd (half load)",
    "M": "inletd memory bound",
}


def parse_ms(text):
    """Human duration ("20ms", "1.5s", "2m", "500us") to milliseconds."""
    total = 0.0
    units = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3, "sec": 1e3,
             "m": 60e3, "min": 60e3, "h": 3600e3}
    parts = re.findall(r"([0-9.]+)\s*([a-zµ]+)", text.strip())
    if not parts:
        raise ValueError(f"cannot parse duration {text!r}")
    for num, unit in parts:
        if unit not in units:
            raise ValueError(f"unknown unit in {text!r}")
        total += float(num) * units[unit]
    return total


def load(logs, name):
    path = os.path.join(logs, f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def delta(after, before, key):
    try:
        return int(after[key]) - int(before[key])
    except (KeyError, TypeError, ValueError):
        return None


def ratio(a, b):
    return round(a / b, 3) if a is not None and b not in (None, 0) else None


def parse_prom(path):
    """Prometheus text to {"name{labels}": value} (comments and bad lines skipped)."""
    out = {}
    try:
        with open(path) as f:
            for raw in f:
                if raw.startswith("#") or not raw.strip():
                    continue
                key, _, val = raw.rstrip("\n").rpartition(" ")
                try:
                    out[key] = float(val)
                except ValueError:
                    pass
    except OSError:
        return None
    return out


def metrics_delta(logs, name):
    """inletd's counters over one phase, from its /metrics before and after."""
    before = parse_prom(os.path.join(logs, f"metrics-before-{name}.txt"))
    after = parse_prom(os.path.join(logs, f"metrics-after-{name}.txt"))
    if not before or not after:
        return None

    def d(key):
        if key not in after:
            return None
        return after[key] - before.get(key, 0.0)

    def avg(sum_key, count_key, scale=1.0):
        s, c = d(sum_key), d(count_key)
        return round(s / c * scale, 3) if s is not None and c else None

    reasons = {}
    for key in after:
        mt = re.match(r'inletd_batches_sent_total\{.*reason="([^"]+)".*\}$', key)
        if mt:
            reasons[mt.group(1)] = int(d(key) or 0)
    upstream = {}
    for key in after:
        mt = re.match(r'inletd_upstream_requests_total\{.*status="([^"]+)".*\}$', key)
        if mt and d(key):
            upstream[mt.group(1)] = int(d(key))
    return {
        "batches": int(d("inletd_batch_messages_count") or 0),
        "batches_by_reason": reasons,
        "upstream_requests_by_status": upstream,
        "batch_messages_avg": avg("inletd_batch_messages_sum", "inletd_batch_messages_count"),
        "batch_kib_avg": avg("inletd_batch_bytes_sum", "inletd_batch_bytes_count", 1 / 1024),
        "upstream_avg_ms": avg("inletd_upstream_request_duration_seconds_sum",
                               "inletd_upstream_request_duration_seconds_count", 1000),
        "message_wait_avg_ms": avg("inletd_message_wait_seconds_sum",
                                   "inletd_message_wait_seconds_count", 1000),
        "retries": int(d("inletd_upstream_retries_total") or 0),
    }


def read_samples(path):
    out = []
    try:
        with open(path) as f:
            for raw in f:
                try:
                    out.append(float(raw))
                except ValueError:
                    pass
    except OSError:
        pass
    return out


def other_cpu(p):
    """CPU seconds the machine spent on processes other than the benchmark's."""
    cpu = p.get("cpu_s", {})
    busy = cpu.get("machine_busy")
    if busy is None:
        return None
    ours = sum(cpu.get(k) or 0 for k in ("target", "standin"))
    ours += p["loadgen"].get("cpu_s") or 0
    return max(busy - ours, 0.0)


def fmt(v, spec="{:.1f}"):
    return "-" if v is None else spec.format(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--logs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--phases", default="A B C D")
    ap.add_argument("--duration", required=True)
    ap.add_argument("--warmup", required=True)
    ap.add_argument("--message-bytes", type=int, required=True)
    ap.add_argument("--linger", required=True)
    ap.add_argument("--latency", required=True)
    ap.add_argument("--max-batch-messages", type=int, required=True)
    ap.add_argument("--max-buffered-bytes", type=int, default=0)
    ap.add_argument("--idle-rss-kb", type=int, default=0)
    ap.add_argument("--peak-rss-kb", type=int, default=0)
    ap.add_argument("--cpus", type=int, default=0)
    ap.add_argument("--inletd-args", default="")
    ap.add_argument("--mem-idle-rss-kb", type=int, default=0)
    ap.add_argument("--mem-peak-rss-kb", type=int, default=0)
    ap.add_argument("--mem-latency", default="")
    ap.add_argument("--mem-message-bytes", type=int, default=0)
    ap.add_argument("--mem-inletd-args", default="")
    a = ap.parse_args()

    phases = {}
    for name in a.phases.split():
        data = load(a.logs, name)
        if data is not None:
            phases[name] = data

    # ---- table
    rows = []
    header = ("phase", "target", "conns", "msgs/s", "p50 ms", "p90 ms", "p99 ms",
              "max ms", "ok", "errors", "target cpu s", "upstream cpu s", "loadgen cpu s",
              "other cpu s")
    for name in ("A", "B", "C", "D", "M"):
        p = phases.get(name)
        if p is None:
            continue
        lg = p["loadgen"]
        cpu = p.get("cpu_s", {})
        rows.append((
            name, PHASES[name], str(lg["connections"]), fmt(lg["msgs_per_s"]),
            fmt(lg["p50_ms"], "{:.2f}"), fmt(lg["p90_ms"], "{:.2f}"),
            fmt(lg["p99_ms"], "{:.2f}"), fmt(lg["max_ms"], "{:.2f}"),
            str(lg["ok"]), str(lg["errors"]),
            fmt(cpu.get("target"), "{:.2f}"),
            fmt(cpu.get("standin"), "{:.2f}") if name in "BDM" else "",
            fmt(lg.get("cpu_s"), "{:.2f}"),
            fmt(other_cpu(p), "{:.2f}"),
        ))
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    right = set(range(2, len(header)))

    def line(r):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths)))

    print()
    print(f"inletd benchmark: {a.duration} per phase after {a.warmup} warmup, "
          f"{a.message_bytes}-byte messages, {a.cpus} CPUs, stand-in latency {a.latency}")
    if a.inletd_args:
        print(f"inletd {a.inletd_args}")
    if "M" in phases:
        print(f"phase M: {a.mem_message_bytes}-byte messages, stand-in latency {a.mem_latency}, "
              f"inletd {a.mem_inletd_args}")
    print()
    print(line(header))
    print(line(tuple("-" * w for w in widths)))
    for r in rows:
        print(line(r))
    for name in ("A", "B", "C", "D", "M"):
        p = phases.get(name)
        o = other_cpu(p) if p else None
        if o is not None and p.get("wall_s") and a.cpus and o > 0.1 * a.cpus * p["wall_s"]:
            print(f"  WARNING: phase {name}: other processes used {o:.1f} CPU s of "
                  f"{a.cpus * p['wall_s']:.1f} available: the machine was not quiet")
    for name in ("A", "B", "C", "D", "M"):
        p = phases.get(name)
        if p and p["loadgen"]["errors"]:
            lg = p["loadgen"]
            note = " (429s expected: the buffer is meant to be full)" if name == "M" else ""
            print(f"  {name} answers: status {lg['status_counts']} "
                  f"error kinds {lg['error_kinds']}{note}")
    print()

    def rate(name):
        p = phases.get(name)
        return p["loadgen"]["msgs_per_s"] if p else None

    checks = []
    summary = {}

    # ---- ratios
    summary["B_over_A"] = ratio(rate("B"), rate("A"))
    summary["B_over_C"] = ratio(rate("B"), rate("C"))
    print(f"B/A  inletd vs ceiling:          {fmt(summary['B_over_A'], '{:.3f}')}")
    print(f"B/C  inletd vs single endpoint:  {fmt(summary['B_over_C'], '{:.3f}')}")

    # ---- upstream requests per message during B
    if "B" in phases:
        b = phases["B"]
        before, after = b.get("standin_before") or {}, b.get("standin_after") or {}
        d_req = delta(after, before, "requests")
        d_batch = delta(after, before, "batch_requests")
        d_deliv = delta(after, before, "delivered")
        summary["B_upstream"] = {
            "requests": d_req, "batch_requests": d_batch, "delivered": d_deliv,
            "msgs_per_batch_request": ratio(d_deliv, d_batch),
            "upstream_requests_per_msg": (round(d_req / d_deliv, 5)
                                          if d_req is not None and d_deliv else None),
        }
        u = summary["B_upstream"]
        print(f"B upstream: {fmt(d_batch, '{}')} batch requests carried "
              f"{fmt(d_deliv, '{}')} messages (incl. warmup): "
              f"{fmt(u['msgs_per_batch_request'], '{:.1f}')} msgs/request, "
              f"{fmt(u['upstream_requests_per_msg'], '{:.5f}')} upstream requests/msg "
              f"(max_batch_messages {a.max_batch_messages})")
        errs = b["loadgen"]["errors"]
        checks.append(("B has no errors", errs == 0, f"{errs} errors"))

    # ---- inletd's own view (its /metrics, deltas over the phase)
    for name in ("B", "D", "M"):
        if name not in phases:
            continue
        m = metrics_delta(a.logs, name)
        if not m:
            continue
        lg = phases[name]["loadgen"]
        m["loadgen_mean_ms"] = lg["mean_ms"]
        if m.get("message_wait_avg_ms") is not None:
            m["outside_inletd_ms"] = round(lg["mean_ms"] - m["message_wait_avg_ms"], 2)
        summary[f"{name}_inletd_metrics"] = m
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(m["batches_by_reason"].items()) if v)
        print(f"{name} inside inletd (incl. warmup): {m['batches']} batches ({reasons}), "
              f"avg {fmt(m['batch_messages_avg'])} msgs / {fmt(m['batch_kib_avg'])} KiB; "
              f"upstream request avg {fmt(m['upstream_avg_ms'], '{:.2f}')} ms; message wait "
              f"(accept to answer) avg {fmt(m['message_wait_avg_ms'], '{:.2f}')} ms vs loadgen mean "
              f"{lg['mean_ms']:.2f} ms (HTTP + scheduling outside it: "
              f"{fmt(m.get('outside_inletd_ms'), '{:.2f}')} ms)")

    # ---- latency bound at half load
    if "D" in phases:
        bound = parse_ms(a.linger) + parse_ms(a.latency) + 5.0
        p99 = phases["D"]["loadgen"]["p99_ms"]
        p50 = phases["D"]["loadgen"]["p50_ms"]
        summary["D_latency"] = {"p50_ms": p50, "p99_ms": p99, "bound_ms": bound}
        checks.append((f"D p99 <= linger + latency + 5 ms = {bound:.1f} ms",
                       p99 <= bound, f"p99 {p99:.2f} ms, p50 {p50:.2f} ms"))
        errs = phases["D"]["loadgen"]["errors"]
        checks.append(("D has no errors", errs == 0, f"{errs} errors"))

    # ---- memory
    if a.max_buffered_bytes and a.peak_rss_kb and ("B" in phases or "D" in phases):
        bound = 1.5 * a.max_buffered_bytes + 20 * MIB
        idle, peak = a.idle_rss_kb * 1024, a.peak_rss_kb * 1024
        summary["inletd_memory"] = {
            "idle_vmrss_bytes": idle, "peak_vmhwm_bytes": peak,
            "max_buffered_bytes": a.max_buffered_bytes, "bound_bytes": int(bound),
        }
        print(f"B/D inletd RSS: idle VmRSS {idle / MIB:.1f} MiB, peak VmHWM {peak / MIB:.1f} MiB "
              f"(max_buffered_bytes {a.max_buffered_bytes / MIB:.1f} MiB)")
        checks.append((f"B/D inletd peak RSS <= 1.5 x max_buffered_bytes + 20 MiB = {bound / MIB:.1f} MiB",
                       0 < peak <= bound, f"{peak / MIB:.1f} MiB"))

    # ---- memory bound under a full buffer (phase M)
    if "M" in phases and a.max_buffered_bytes:
        bound = 1.5 * a.max_buffered_bytes + 20 * MIB
        samples = read_samples(os.path.join(a.logs, "buffered-M.txt"))
        top = max(samples) if samples else None
        idle, peak = a.mem_idle_rss_kb * 1024, a.mem_peak_rss_kb * 1024
        summary["M_memory"] = {
            "idle_vmrss_bytes": idle, "peak_vmhwm_bytes": peak,
            "max_buffered_bytes": a.max_buffered_bytes, "bound_bytes": int(bound),
            "buffered_bytes_max_sampled": top, "buffered_samples": len(samples),
        }
        filled = top is not None and top >= 0.9 * a.max_buffered_bytes
        print(f"M inletd RSS: idle VmRSS {idle / MIB:.1f} MiB, peak VmHWM {peak / MIB:.1f} MiB; "
              f"inletd_buffered_bytes reached "
              f"{fmt(None if top is None else top / MIB)} MiB of {a.max_buffered_bytes / MIB:.1f} MiB")
        checks.append(("M fills the buffer (inletd_buffered_bytes >= 90% of max_buffered_bytes)",
                       filled, f"max sampled {fmt(None if top is None else top / MIB)} MiB"))
        checks.append((f"M peak RSS with a full buffer <= 1.5 x max_buffered_bytes + 20 MiB = "
                       f"{bound / MIB:.1f} MiB", 0 < peak <= bound, f"{peak / MIB:.1f} MiB"))

    print()
    failed = 0
    for what, ok, detail in checks:
        print(f"[{'PASS' if ok else 'FAIL'}] {what}: {detail}")
        failed += 0 if ok else 1
    print()

    doc = {
        "config": {
            "duration": a.duration, "warmup": a.warmup, "message_bytes": a.message_bytes,
            "linger": a.linger, "standin_latency": a.latency,
            "max_batch_messages": a.max_batch_messages, "cpus": a.cpus,
            "inletd_args": a.inletd_args, "mem_inletd_args": a.mem_inletd_args,
            "mem_standin_latency": a.mem_latency, "mem_message_bytes": a.mem_message_bytes,
        },
        "phases": {k: v for k, v in phases.items()},
        "summary": summary,
        "checks": [{"check": w, "pass": ok, "detail": d} for w, ok, d in checks],
    }
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print(f"results: {a.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
