#!/usr/bin/env python3
"""Turn alerts.yml into the Prometheus Operator's PrometheusRule, and render
copies of both for another job selector or runbook base URL. Needs PyYAML.

    python3 deploy/prometheus/render-rules.py            # rewrite the PrometheusRule
    python3 deploy/prometheus/render-rules.py --check    # CI: fail on any difference
    python3 deploy/prometheus/render-rules.py --out-dir DIR \\
        [--job-selector 'job=~"inletd|gw"'] [--runbook-base URL]

alerts.yml is the one source of the rules. It selects every inletd series with
exactly `job="inletd"` and links each alert to `<runbook base>#<alert name in
lower case>`; this script checks both, so that replacing them in a rendered
copy cannot miss a rule. --check also checks what no schema checks here (the
CRDs are not in kubernetes-validate): each file under
deploy/kubernetes/monitoring is YAML with the right apiVersion and kind, the
PrometheusRule carries exactly the groups of alerts.yml, and the PodMonitor and
ServiceMonitor select the pods, Service and port names of the manifests, and
label their targets with the job the rules select.
"""

import argparse
import re
import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
MONITORING = DEPLOY / "kubernetes" / "monitoring"
RULE_FILE = MONITORING / "prometheusrule.yaml"
SELECTOR = 'job="inletd"'
JOB = "inletd"
RUNBOOK_BASE = "https://github.com/example/inletd/blob/main/docs/operations.md"
API_VERSION = "monitoring.coreos.com/v1"

HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml by deploy/prometheus/render-rules.py:
# do not edit; change alerts.yml and run the script (CI fails on a difference).
#
# The Prometheus Operator loads PrometheusRule objects its Prometheus selects
# with `ruleSelector` (kube-prometheus-stack: the label `release: <its release
# name>` unless ruleSelectorNilUsesHelmValues is false): add that label here
# if your Prometheus needs it.
"""


class Literal(str):
    """A string dumped as a YAML block scalar (`|`), so expressions stay readable."""


yaml.SafeDumper.add_representer(
    Literal, lambda dumper, s: dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|"))


def problems_in_source(text):
    """What would make a rendered copy wrong: a selector or runbook link that
    does not have the one form the script replaces."""
    out = []
    for group in yaml.safe_load(text)["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            for selector in re.findall(r"\{[^{}]*\}", str(rule["expr"])):
                if SELECTOR not in selector:
                    out.append("%s: selector %s lacks %s" % (name, selector, SELECTOR))
            for bare in re.findall(r"(?<![\w:])(?:inletd_\w+|process_\w+|up)\b(?!\{)", str(rule["expr"])):
                out.append("%s: %s without a {%s} selector" % (name, bare, SELECTOR))
            url = (rule.get("annotations") or {}).get("runbook_url")
            if url != "%s#%s" % (RUNBOOK_BASE, name.lower()):
                out.append("%s: runbook_url %r is not %s#%s" % (name, url, RUNBOOK_BASE, name.lower()))
    return out


def customise(text, job_selector, runbook_base):
    return text.replace(SELECTOR, job_selector).replace(RUNBOOK_BASE + "#", runbook_base.rstrip("/") + "#")


def blocks(value):
    """Multi-line strings as block scalars, recursively."""
    if isinstance(value, dict):
        return {k: blocks(v) for k, v in value.items()}
    if isinstance(value, list):
        return [blocks(v) for v in value]
    if isinstance(value, str) and "\n" in value:
        return Literal(value)
    return value


def prometheus_rule(text):
    groups = yaml.safe_load(text)["groups"]
    rule = {
        "apiVersion": API_VERSION,
        "kind": "PrometheusRule",
        "metadata": {"name": "inletd", "labels": {"app.kubernetes.io/name": "inletd",
                                                  "app.kubernetes.io/part-of": "inletd"}},
        "spec": {"groups": groups},
    }
    return HEADER + yaml.safe_dump(blocks(rule), sort_keys=False, width=120, allow_unicode=True)


def load_all(path, problems):
    try:
        return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    except (OSError, yaml.YAMLError) as e:
        problems.append("%s: %s" % (path.name, e))
        return []


def pod_templates():
    """(labels, containers) of every Deployment's pod template in deploy/kubernetes."""
    out = []
    for path in sorted((DEPLOY / "kubernetes").glob("*/*.yaml")):
        for doc in load_all(path, []):
            if doc.get("kind") == "Deployment":
                tpl = doc["spec"]["template"]
                out.append((tpl["metadata"].get("labels") or {},
                            (tpl["spec"].get("initContainers") or []) + tpl["spec"].get("containers", [])))
    return out


def services():
    return [d for p in sorted((DEPLOY / "kubernetes").glob("*/*.yaml")) for d in load_all(p, [])
            if d.get("kind") == "Service"]


def sets_job(endpoint):
    return any(r.get("targetLabel") == "job" and r.get("replacement") == JOB
               and r.get("action", "replace") == "replace" for r in endpoint.get("relabelings") or [])


def check_monitors(problems):
    kinds = {}
    for path in sorted(MONITORING.glob("*.yaml")):
        for doc in load_all(path, problems):
            where = "%s %s" % (path.name, doc.get("kind"))
            if doc.get("apiVersion") != API_VERSION:
                problems.append("%s: apiVersion is not %s" % (where, API_VERSION))
            if not (doc.get("metadata") or {}).get("name"):
                problems.append("%s: no metadata.name" % where)
            kinds.setdefault(doc.get("kind"), []).append((where, doc))
    for kind in ("PodMonitor", "ServiceMonitor", "PrometheusRule"):
        if len(kinds.get(kind, [])) != 1:
            problems.append("monitoring: expected one %s, found %d" % (kind, len(kinds.get(kind, []))))
    unknown = set(kinds) - {"PodMonitor", "ServiceMonitor", "PrometheusRule"}
    if unknown:
        problems.append("monitoring: unexpected kinds %s" % sorted(unknown))

    for where, pm in kinds.get("PodMonitor", []):
        match = pm["spec"]["selector"].get("matchLabels") or {}
        endpoints = pm["spec"].get("podMetricsEndpoints") or []
        pods = [(labels, cs) for labels, cs in pod_templates() if match and all(labels.get(k) == v for k, v in match.items())]
        if not pods:
            problems.append("%s: selector %s matches no pod template" % (where, match))
        for ep in endpoints:
            for labels, containers in pods:
                ports = {p.get("name") for c in containers if c["name"] == "inletd" for p in c.get("ports") or []}
                if ep.get("port") not in ports:
                    problems.append("%s: port %r is not a port of inletd in pods %s" % (where, ep.get("port"), labels))
            if not sets_job(ep):
                problems.append("%s: endpoint does not set job=%s (the rules select %s)" % (where, JOB, SELECTOR))
        if not endpoints:
            problems.append("%s: no podMetricsEndpoints" % where)
    for where, sm in kinds.get("ServiceMonitor", []):
        match = sm["spec"]["selector"].get("matchLabels") or {}
        svcs = [s for s in services() if match and all((s["metadata"].get("labels") or {}).get(k) == v
                                                       for k, v in match.items())]
        if not svcs:
            problems.append("%s: selector %s matches no Service" % (where, match))
        for ep in sm["spec"].get("endpoints") or []:
            for svc in svcs:
                if ep.get("port") not in {p.get("name") for p in svc["spec"].get("ports") or []}:
                    problems.append("%s: port %r is not a port of Service %s" % (where, ep.get("port"), svc["metadata"]["name"]))
            if not sets_job(ep):
                problems.append("%s: endpoint does not set job=%s (the rules select %s)" % (where, JOB, SELECTOR))
    for where, pr in kinds.get("PrometheusRule", []):
        if pr["spec"].get("groups") != yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]:
            problems.append("%s: rule groups differ from alerts.yml" % where)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    parser.add_argument("--out-dir", help="write alerts.yml and prometheusrule.yaml for the options below here")
    parser.add_argument("--job-selector", default=SELECTOR, help="replaces %s in every expression" % SELECTOR)
    parser.add_argument("--runbook-base", default=RUNBOOK_BASE, help="URL of docs/operations.md as you publish it")
    args = parser.parse_args()

    text = ALERTS.read_text(encoding="utf-8")
    problems = ["alerts.yml: %s" % p for p in problems_in_source(text)]
    if args.out_dir:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        custom = customise(text, args.job_selector, args.runbook_base)
        (out / "alerts.yml").write_text(custom, encoding="utf-8")
        (out / "prometheusrule.yaml").write_text(prometheus_rule(custom), encoding="utf-8")
    elif args.check:
        if not RULE_FILE.is_file() or RULE_FILE.read_text(encoding="utf-8") != prometheus_rule(text):
            problems.append("%s is not what render-rules.py makes of alerts.yml: run it and commit"
                            % RULE_FILE.relative_to(DEPLOY.parent))
        check_monitors(problems)
    else:
        RULE_FILE.write_text(prometheus_rule(text), encoding="utf-8")
    for p in problems:
        print("render-rules: %s" % p)
    if problems:
        return 1
    print("render-rules: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
