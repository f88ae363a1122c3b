#!/usr/bin/env python3
"""Check deploy/grafana/inletd-dashboard.json and the metric names that the
dashboard and deploy/prometheus/alerts.yml use. Standard library only.

    python3 deploy/check-dashboard.py [--promql-rules OUT.json]

Checks:
  * the dashboard is valid JSON with the fields Grafana needs (uid, title,
    schemaVersion, panels), unique panel ids, a 24-column grid without
    overlapping panels, every panel with a title, a data source and queries
    with unique refIds;
  * every $variable in a query is one the dashboard defines (or a Grafana
    built-in), and every panel's data source is the `datasource` variable;
  * every inletd_* name used (dashboard and alert rules) is one inletd
    documents, and every documented metric is
    on the dashboard;
  * with --promql-rules, writes every query (variables replaced by sample
    values) as a Prometheus recording-rule file, so that
    `promtool check rules OUT.json` parses each one: a typo in a query fails CI.
Exits 1 with one line per problem.
"""

import argparse
import importlib.util
import json
import re
import sys
from pathlib import Path

# Importing metric-names.py must not leave a __pycache__ in the repository.
sys.dont_write_bytecode = True

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent

_spec = importlib.util.spec_from_file_location("metric_names", DEPLOY / "metric-names.py")
metric_names = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(metric_names)

# The metrics inletd exposes (README.md's metrics table, plus inletd_max_buffered_bytes
# and inletd_shed_total from issue 3, and the build and configuration gauges of
# the operability issue: build_info, max_in_flight, request_timeout_seconds).
# Histograms by their base name. tests/it/prometheus.rs checks each against a
# running inletd's /metrics.
DOCUMENTED = {
    "inletd_messages_received_total",
    "inletd_message_results_total",
    "inletd_batches_sent_total",
    "inletd_batch_messages",
    "inletd_batch_bytes",
    "inletd_upstream_requests_total",
    "inletd_upstream_request_duration_seconds",
    "inletd_upstream_retries_total",
    "inletd_buffered_messages",
    "inletd_buffered_bytes",
    "inletd_in_flight_requests",
    "inletd_message_wait_seconds",
    "inletd_max_buffered_bytes",
    "inletd_shed_total",
    "inletd_build_info",
    # IMS credentials held by inletd (issue 11).
    "inletd_ims_token_fetches_total",
    "inletd_ims_token_expiry_seconds",
    "inletd_ims_token_refresh_failing",
    "inletd_max_in_flight",
    "inletd_request_timeout_seconds",
    # The spool (issue 10), with spool_dir set. inletd_spool_max_bytes is
    # max_spool_bytes as a gauge (the spool alert's bound).
    "inletd_spool_bytes",
    "inletd_spool_max_bytes",
    "inletd_spool_messages",
    "inletd_spool_waiting_on_disk_messages",
    "inletd_spool_sync_seconds",
    "inletd_spool_syncs_total",
    "inletd_spool_synced_messages_total",
    "inletd_dead_letters_total",
    "inletd_spool_corrupt_records_total",
}

# Grafana's own variables, and the sample value each gets for promtool.
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
    "__range_s": "3600",
    "__interval_ms": "60000",
}
VAR = re.compile(r"\$\{([A-Za-z0-9_]+)(?::[A-Za-z]+)?\}|\[\[([A-Za-z0-9_]+)\]\]|\$([A-Za-z0-9_]+)")
PANEL_TYPES = {"row", "timeseries", "stat", "gauge", "bargauge", "heatmap", "table", "text", "histogram",
               "piechart", "state-timeline", "status-history"}
LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$", re.S)


def all_panels(items):
    for panel in items or []:
        yield panel
        yield from all_panels(panel.get("panels"))


def check_dashboard(dash, problems):
    for key, kind in (("uid", str), ("title", str), ("schemaVersion", int), ("panels", list)):
        if not isinstance(dash.get(key), kind):
            problems.append("dashboard: `%s` missing or not a %s" % (key, kind.__name__))
    variables = {}
    for var in (dash.get("templating") or {}).get("list") or []:
        name = var.get("name")
        if not name or name in variables:
            problems.append("dashboard: variable without a name or defined twice: %r" % name)
        variables[name] = var
    if variables.get("datasource", {}).get("type") != "datasource":
        problems.append("dashboard: no `datasource` variable of type datasource (panels select Prometheus with it)")

    ids, boxes = set(), []
    for panel in all_panels(dash.get("panels")):
        pid, title, ptype = panel.get("id"), panel.get("title"), panel.get("type")
        label = "panel %s %r" % (pid, title)
        if not isinstance(pid, int) or pid in ids:
            problems.append("%s: id missing, not an integer or not unique" % label)
        ids.add(pid)
        if ptype not in PANEL_TYPES:
            problems.append("%s: unknown panel type %r" % (label, ptype))
        if not title:
            problems.append("%s: no title" % label)
        grid = panel.get("gridPos") or {}
        if not all(isinstance(grid.get(k), int) for k in "hwxy"):
            problems.append("%s: gridPos needs integer h, w, x, y" % label)
        else:
            if grid["w"] <= 0 or grid["h"] <= 0 or grid["x"] < 0 or grid["y"] < 0 or grid["x"] + grid["w"] > 24:
                problems.append("%s: gridPos %s outside the 24-column grid" % (label, grid))
            for other, box in boxes:
                if (grid["x"] < box["x"] + box["w"] and box["x"] < grid["x"] + grid["w"]
                        and grid["y"] < box["y"] + box["h"] and box["y"] < grid["y"] + grid["h"]):
                    problems.append("%s: overlaps %s" % (label, other))
            boxes.append((label, grid))
        if ptype in ("row", "text"):
            continue
        if (panel.get("datasource") or {}).get("uid") != "${datasource}":
            problems.append("%s: data source is not ${datasource}" % label)
        targets = panel.get("targets") or []
        if not targets:
            problems.append("%s: no queries" % label)
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or not all(refs):
            problems.append("%s: refIds missing or not unique: %s" % (label, refs))
        for target in targets:
            if not (target.get("expr") or "").strip():
                problems.append("%s target %s: empty expr" % (label, target.get("refId")))
    return variables


def substitute(query, variables, where, problems):
    """Replace $vars with sample values promtool can parse."""
    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name in BUILTINS:
            return BUILTINS[name]
        if name in variables:
            return ".*"  # job/instance are used in =~ matchers
        problems.append("%s: uses undefined variable $%s" % (where, name))
        return ".*"
    return VAR.sub(repl, query)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dashboard", default=str(metric_names.DASHBOARD))
    parser.add_argument("--alerts", default=str(metric_names.ALERTS))
    parser.add_argument("--promql-rules", metavar="OUT", help="write every dashboard query as a rule file")
    args = parser.parse_args()
    problems = []

    try:
        dash = json.loads(Path(args.dashboard).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        print("check-dashboard: %s: %s" % (args.dashboard, e))
        return 1
    variables = check_dashboard(dash, problems)

    rules = []
    for where, query in metric_names.dashboard_queries(dash):
        expr = substitute(query, variables, where, problems)
        m = LABEL_VALUES.match(expr)
        if m:  # label_values(selector, label): the selector is PromQL
            expr = m.group(1)
        rules.append({"record": "dashboard_query_%d" % (len(rules) + 1), "expr": expr,
                      "labels": {"source": where}})

    # process_* names are the standard process metrics, not inletd's own documented set.
    used = {n: w for n, w in metric_names.collect(args.dashboard, args.alerts).items()
            if n.startswith("inletd_")}
    for name in sorted(set(used) - DOCUMENTED):
        problems.append("%s: %s is not a documented inletd metric" % (used[name][0], name))
    on_dashboard = {n for n, where in used.items() if any(w.startswith("dashboard ") for w in where)}
    for name in sorted(DOCUMENTED - on_dashboard):
        problems.append("dashboard: no panel shows %s" % name)

    # Not fatal: the names may be built in src/ in a way a text search misses.
    metrics_rs = [ROOT / "src" / "metrics.rs"] + sorted((ROOT / "src" / "metrics").glob("*.rs"))
    if metrics_rs[0].is_file():
        source = "".join(f.read_text(encoding="utf-8") for f in metrics_rs)
        for name in sorted(used):
            if name not in source:
                print("check-dashboard: note: %s does not appear in src/metrics.rs or src/metrics/" % name)

    if args.promql_rules:
        doc = {"groups": [{"name": "inletd-dashboard-queries", "rules": rules}]}
        Path(args.promql_rules).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")

    for p in problems:
        print("check-dashboard: %s" % p)
    if problems:
        return 1
    print("check-dashboard: %d panels, %d queries, %d inletd metrics: ok"
          % (sum(1 for p in all_panels(dash.get("panels")) if p.get("type") != "row"), len(rules), len(used)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
