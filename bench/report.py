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

def describe(name):
    """What a phase name (bench/run.sh) measures."""
    for prefix, what in (("direct", "stand-in single endpoint"), ("trivial", "trivial200 (ceiling)"),
                         ("inletd", "inletd -> stand-in")):
        if name.startswith(prefix):
            return what
    return {"mem": "inletd memory bound"}.get(name, name)


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


def cpu_per_msg(p):
    """Microseconds of the target's CPU per success in the measured window."""
    cpu = p.get("cpu_s", {}).get("target")
    ok = p["loadgen"].get("ok")
    return cpu / ok * 1e6 if cpu is not None and ok else None


def upstream_delta(p):
    """The stand-in's counters over a phase (warmup included): messages per batch request."""
    before, after = p.get("standin_before") or {}, p.get("standin_after") or {}
    d_req = delta(after, before, "requests")
    d_batch = delta(after, before, "batch_requests")
    d_deliv = delta(after, before, "delivered")
    return {
        "requests": d_req, "batch_requests": d_batch, "delivered": d_deliv,
        "msgs_per_batch_request": ratio(d_deliv, d_batch),
    }


def load_instr(logs):
    """bench/profile.sh's JSON line, if phase instr ran."""
    try:
        with open(os.path.join(logs, "instr.out")) as f:
            for raw in f:
                if raw.startswith("{"):
                    return json.loads(raw)
    except (OSError, ValueError):
        pass
    return None


def fmt(v, spec="{:.1f}"):
    return "-" if v is None else spec.format(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--logs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--phases", required=True)
    ap.add_argument("--duration", required=True)
    ap.add_argument("--warmup", required=True)
    ap.add_argument("--message-bytes", type=int, required=True)
    ap.add_argument("--few", type=int, default=16)
    ap.add_argument("--many", type=int, default=512)
    ap.add_argument("--flood", type=int, default=2048)
    ap.add_argument("--latency", required=True)
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

    order = a.phases.split()
    phases = {}
    for name in order:
        data = load(a.logs, name)
        if data is not None:
            phases[name] = data

    # ---- table
    rows = []
    header = ("phase", "target", "conns", "msgs/s", "p50 ms", "p90 ms", "p99 ms",
              "max ms", "ok", "errors", "target cpu s", "cpu us/msg", "upstream cpu s",
              "loadgen cpu s", "other cpu s")
    for name in order:
        p = phases.get(name)
        if p is None:
            continue
        lg = p["loadgen"]
        cpu = p.get("cpu_s", {})
        rows.append((
            name, describe(name), str(lg["connections"]), fmt(lg["msgs_per_s"]),
            fmt(lg["p50_ms"], "{:.2f}"), fmt(lg["p90_ms"], "{:.2f}"),
            fmt(lg["p99_ms"], "{:.2f}"), fmt(lg["max_ms"], "{:.2f}"),
            str(lg["ok"]), str(lg["errors"]),
            fmt(cpu.get("target"), "{:.2f}"),
            fmt(cpu_per_msg(p), "{:.1f}"),
            fmt(cpu.get("standin"), "{:.2f}") if name.startswith("inletd") or name == "mem" else "",
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
    print(f"inletd {a.inletd_args or '(not run)'}")
    if "mem" in phases:
        print(f"phase mem: {a.mem_message_bytes}-byte messages, stand-in latency {a.mem_latency}, "
              f"inletd {a.mem_inletd_args}")
    print()
    if rows:
        print(line(header))
        print(line(tuple("-" * w for w in widths)))
        for r in rows:
            print(line(r))
    for name, p in phases.items():
        o = other_cpu(p)
        if o is not None and p.get("wall_s") and a.cpus and o > 0.1 * a.cpus * p["wall_s"]:
            print(f"  WARNING: phase {name}: other processes used {o:.1f} CPU s of "
                  f"{a.cpus * p['wall_s']:.1f} available: the machine was not quiet")
        if p["loadgen"]["errors"]:
            lg = p["loadgen"]
            note = " (429s expected: the buffer is meant to be full)" if name == "mem" else ""
            print(f"  {name} answers: status {lg['status_counts']} "
                  f"error kinds {lg['error_kinds']}{note}")
    print()

    checks = []
    summary = {}

    def lg(name, key):
        p = phases.get(name)
        return p["loadgen"][key] if p else None

    def check(what, ok, detail):
        checks.append((what, ok, detail))

    # ---- inletd's own view (its /metrics, deltas over the phase) and upstream requests
    for name in order:
        if name not in phases or not (name.startswith("inletd") or name == "mem"):
            continue
        up = upstream_delta(phases[name])
        summary[f"{name}_upstream"] = up
        m = metrics_delta(a.logs, name)
        if m:
            m["loadgen_mean_ms"] = phases[name]["loadgen"]["mean_ms"]
            summary[f"{name}_inletd_metrics"] = m
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(m["batches_by_reason"].items()) if v)
            print(f"{name} inside inletd (incl. warmup): {m['batches']} batches ({reasons}), "
                  f"avg {fmt(m['batch_messages_avg'])} msgs / {fmt(m['batch_kib_avg'])} KiB; "
                  f"upstream request avg {fmt(m['upstream_avg_ms'], '{:.2f}')} ms; message wait "
                  f"avg {fmt(m['message_wait_avg_ms'], '{:.2f}')} ms vs loadgen mean "
                  f"{m['loadgen_mean_ms']:.2f} ms")
        if name != "mem":
            errs = phases[name]["loadgen"]["errors"]
            check(f"{name} has no errors", errs == 0, f"{errs} errors")

    # ---- 1. a few producers: latency next to direct
    few_i, few_d = f"inletd{a.few}", f"direct{a.few}"
    if few_i in phases and few_d in phases:
        for q, margin in (("p50_ms", 3.0), ("p99_ms", 5.0)):
            vi, vd = lg(few_i, q), lg(few_d, q)
            summary[f"few_{q}"] = {"inletd": vi, "direct": vd, "bound": vd + margin}
            check(f"{a.few} producers: inletd {q[:3]} <= direct {q[:3]} + {margin:.0f} ms",
                  vi <= vd + margin, f"{vi:.2f} ms vs {vd:.2f} + {margin:.0f} = {vd + margin:.2f} ms")

    # ---- 2. many producers: throughput next to direct, and batches
    many_i, many_d = f"inletd{a.many}", f"direct{a.many}"
    if many_i in phases and many_d in phases:
        r = ratio(lg(many_i, "msgs_per_s"), lg(many_d, "msgs_per_s"))
        summary["many_rate_ratio"] = r
        check(f"{a.many} producers: inletd msgs/s >= 0.9 x direct", r is not None and r >= 0.9,
              f"{fmt(lg(many_i, 'msgs_per_s'))} / {fmt(lg(many_d, 'msgs_per_s'))} = {fmt(r, '{:.3f}')}")
    if many_i in phases:
        per = summary[f"{many_i}_upstream"]["msgs_per_batch_request"]
        check(f"{a.many} producers: >= 50 messages per upstream request",
              per is not None and per >= 50, f"{fmt(per)}")

    # ---- 3. a flood (CPU-bound): next to the trivial server
    fl_i, fl_t = f"inletd{a.flood}", f"trivial{a.flood}"
    if fl_i in phases and fl_t in phases:
        r = ratio(lg(fl_i, "msgs_per_s"), lg(fl_t, "msgs_per_s"))
        ci, ct = cpu_per_msg(phases[fl_i]), cpu_per_msg(phases[fl_t])
        rc = ratio(ci, ct)
        summary["flood"] = {"rate_ratio": r, "cpu_us_per_msg": ci, "trivial_cpu_us_per_request": ct,
                            "cpu_ratio": rc}
        check(f"{a.flood} producers: inletd msgs/s >= 0.8 x trivial200", r is not None and r >= 0.8,
              f"{fmt(lg(fl_i, 'msgs_per_s'))} / {fmt(lg(fl_t, 'msgs_per_s'))} = {fmt(r, '{:.3f}')}")
        check(f"{a.flood} producers: inletd CPU/msg <= 1.3 x trivial200 CPU/request",
              rc is not None and rc <= 1.3,
              f"{fmt(ci, '{:.1f}')} us / {fmt(ct, '{:.1f}')} us = {fmt(rc, '{:.3f}')}")
    if fl_i in phases:
        per = summary[f"{fl_i}_upstream"]["msgs_per_batch_request"]
        check(f"{a.flood} producers: >= 200 messages per upstream request",
              per is not None and per >= 200, f"{fmt(per)}")

    # ---- 4. memory
    bound = 1.5 * a.max_buffered_bytes + 20 * MIB
    if a.idle_rss_kb:
        idle, peak = a.idle_rss_kb * 1024, a.peak_rss_kb * 1024
        summary["inletd_memory"] = {
            "idle_vmrss_bytes": idle, "peak_vmhwm_bytes": peak,
            "max_buffered_bytes": a.max_buffered_bytes, "bound_bytes": int(bound),
        }
        check("idle inletd RSS <= 15 MiB", 0 < idle <= 15 * MIB, f"{idle / MIB:.1f} MiB")
        check(f"inletd peak RSS under load <= 1.5 x max_buffered_bytes + 20 MiB = {bound / MIB:.1f} MiB",
              0 < peak <= bound, f"{peak / MIB:.1f} MiB")
    if "mem" in phases and a.max_buffered_bytes:
        samples = read_samples(os.path.join(a.logs, "buffered-mem.txt"))
        top = max(samples) if samples else None
        idle, peak = a.mem_idle_rss_kb * 1024, a.mem_peak_rss_kb * 1024
        summary["mem"] = {
            "idle_vmrss_bytes": idle, "peak_vmhwm_bytes": peak,
            "max_buffered_bytes": a.max_buffered_bytes, "bound_bytes": int(bound),
            "buffered_bytes_max_sampled": top, "buffered_samples": len(samples),
        }
        check("mem: the buffer fills (inletd_buffered_bytes >= 90% of max_buffered_bytes)",
              top is not None and top >= 0.9 * a.max_buffered_bytes,
              f"max sampled {fmt(None if top is None else top / MIB)} MiB")
        check(f"mem: peak RSS with a full buffer <= 1.5 x max_buffered_bytes + 20 MiB = "
              f"{bound / MIB:.1f} MiB", 0 < peak <= bound, f"{peak / MIB:.1f} MiB")

    # ---- instructions per message (callgrind; the regression figure)
    if "instr" in order:
        instr = load_instr(a.logs)
        summary["instr"] = instr
        if instr:
            print(f"instr (callgrind, defaults): {fmt(instr.get('instructions_per_message'), '{}')} "
                  f"instructions per message over {instr.get('messages')} messages, "
                  f"{fmt(instr.get('messages_per_batch'))} messages per batch")
        else:
            print("instr: no result (see target/bench-logs/instr.log)")

    print()
    failed = 0
    for what, ok, detail in checks:
        print(f"[{'PASS' if ok else 'FAIL'}] {what}: {detail}")
        failed += 0 if ok else 1
    print()

    doc = {
        "config": {
            "duration": a.duration, "warmup": a.warmup, "message_bytes": a.message_bytes,
            "few": a.few, "many": a.many, "flood": a.flood,
            "standin_latency": a.latency, "cpus": a.cpus,
            "inletd_args": a.inletd_args, "mem_inletd_args": a.mem_inletd_args,
            "mem_standin_latency": a.mem_latency, "mem_message_bytes": a.mem_message_bytes,
        },
        "phases": phases,
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
