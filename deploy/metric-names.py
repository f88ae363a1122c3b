#!/usr/bin/env python3
"""Print every inletd_* and process_* metric name that the dashboard and the alert rules use.

One name per line, sorted, histogram names without their _bucket/_sum/_count
suffix, so that an end-to-end test can check each one against inletd's
/metrics (where a histogram shows as `# TYPE inletd_batch_bytes histogram`).
The process_* names (process_start_time_seconds, ...) are inletd's too: it
exports them itself, so a name the alerts use must exist there as well.

    python3 deploy/metric-names.py
    python3 deploy/metric-names.py --with-sources   # name<TAB>where it is used

Only the Python standard library: the alert rules (YAML) are read by taking
the `expr:` values line by line, which is all this needs.
Exits non-zero when a file is missing, the dashboard is not valid JSON, or no
name is found at all.
"""

import argparse
import json
import re
import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent
DASHBOARD = DEPLOY / "grafana" / "inletd-dashboard.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"

# A metric name starting with inletd_ or process_, not part of a longer
# identifier (so `job:inletd_x` recording-rule names and `xinletd_` are not taken).
NAME = re.compile(r"(?<![A-Za-z0-9_:])(?:inletd|process)_[A-Za-z0-9_]*[A-Za-z0-9]")
HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")


def base_name(name):
    """inletd_batch_bytes_bucket -> inletd_batch_bytes."""
    return HISTOGRAM_SUFFIX.sub("", name)


def names_in(text):
    return {base_name(m.group(0)) for m in NAME.finditer(text)}


def dashboard_queries(dashboard):
    """(where, query) for every PromQL query in a Grafana dashboard: panel
    targets (also inside collapsed rows) and query variables."""
    out = []

    def panels(items):
        for panel in items or []:
            yield panel
            yield from panels(panel.get("panels"))

    for panel in panels(dashboard.get("panels")):
        for target in panel.get("targets") or []:
            expr = target.get("expr")
            if isinstance(expr, str) and expr.strip():
                where = "panel %s %r target %s" % (panel.get("id"), panel.get("title"), target.get("refId"))
                out.append((where, expr))
    for var in (dashboard.get("templating") or {}).get("list") or []:
        if var.get("type") != "query":
            continue
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if isinstance(query, str) and query.strip():
            out.append(("variable $%s" % var.get("name"), query))
    return out


def alert_exprs(text):
    """(where, expr) for every `expr:` in a Prometheus rule file, plain or
    block scalar (| or >), without a YAML library."""
    out = []
    lines = text.splitlines()
    key = re.compile(r"^(\s*)(?:-\s+)?expr:\s*(.*)$")
    i = 0
    while i < len(lines):
        m = key.match(lines[i])
        if not m:
            i += 1
            continue
        indent, value = len(m.group(1)), m.group(2).strip()
        start = i + 1
        if value[:1] in ("|", ">"):
            body = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                body.append(lines[i])
                i += 1
            value = "\n".join(body)
        else:
            if value[:1] in ("'", '"') and value[-1:] == value[:1]:
                value = value[1:-1]
            i += 1
        out.append(("%s line %d" % (ALERTS.name, start), value))
    return out


def collect(dashboard_path=DASHBOARD, alerts_path=ALERTS):
    """{name: [where, ...]} for the dashboard and the alert rules."""
    found = {}
    dashboard = json.loads(Path(dashboard_path).read_text(encoding="utf-8"))
    alerts = Path(alerts_path).read_text(encoding="utf-8")
    queries = [("dashboard " + w, q) for w, q in dashboard_queries(dashboard)]
    queries += [("alerts " + w, q) for w, q in alert_exprs(alerts)]
    for where, query in queries:
        for name in names_in(query):
            found.setdefault(name, []).append(where)
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dashboard", default=str(DASHBOARD))
    parser.add_argument("--alerts", default=str(ALERTS))
    parser.add_argument("--with-sources", action="store_true", help="print name<TAB>first place it is used")
    args = parser.parse_args()
    try:
        found = collect(args.dashboard, args.alerts)
    except (OSError, ValueError) as e:
        print("metric-names: %s" % e, file=sys.stderr)
        return 1
    if not found:
        print("metric-names: no inletd_* or process_* name found", file=sys.stderr)
        return 1
    for name in sorted(found):
        print("%s\t%s" % (name, found[name][0]) if args.with_sources else name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
