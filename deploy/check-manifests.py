#!/usr/bin/env python3
"""Consistency checks across the deploy files that no schema sees.

    python3 deploy/check-manifests.py --inletd target/debug/inletd   (needs PyYAML)

JSON-schema validation (kubernetes-validate) says each object is well formed;
this says they fit together and fit inletd:
  * every INLETD_* variable (Dockerfile, Kubernetes, compose, docs) and every
    key of a TOML config (config/inletd.toml included, which must name every
    key) is one the built binary knows: the list of keys is what
    `inletd check-config` prints, not a list kept here (inletd refuses to
    start on an unknown TOML key and only warns about an unknown INLETD_*
    variable); so is every `snake_case` name in backticks in
    docs/operations.md, config comments and manifests;
  * a TOML config does not set listen/admin_listen (the image's environment
    overrides the file);
  * Kubernetes: kustomization resources exist and list every manifest of the
    folder; selectors match pod labels; probes and Service target ports name
    ports the container has; liveness is /healthz and readiness /readyz;
    HPA (also the optional ones) and PDB point at the Deployment; a
    NetworkPolicy selects its pods and names its ports; ConfigMap volumes
    exist (from a manifest or kustomize's configMapGenerator); the
    restrictive securityContext is there; terminationGracePeriodSeconds >=
    preStop sleep + shutdown_grace + 10s; the memory limit >= 1.5 x
    max_buffered_bytes + 20 MB;
  * compose: bind-mount sources and build contexts exist, inletd's upstream
    is the stand-in service, stop_grace_period > shutdown_grace, Prometheus
    scrapes the inletd service, Grafana's dashboard provider path is mounted;
  * the expressions that deploy/metric-names.py reads from alerts.yml without
    a YAML parser are exactly those PyYAML finds.
Exits 1 with one line per problem.
"""

import argparse
import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

# Importing metric-names.py must not leave a __pycache__ in the repository.
sys.dont_write_bytecode = True

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
K8S = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"

# Filled in by main() from `inletd check-config`. `config` is INLETD_CONFIG.
CONFIG_KEYS = set()
DEFAULTS = {"shutdown_grace": "20s", "max_buffered_bytes": "67108864"}
# `snake_case` words in backticks that the docs may use although they are no
# configuration keys (the log line's fields among them); metric names
# (inletd_*, process_*) are recognised apart.
NOT_KEYS = {"runbook_url", "stop_grace_period", "connection_id", "suppressed_messages"}
QUOTED_NAME = re.compile(r"`([a-z][a-z0-9]*(?:_[a-z0-9]+)+)`")
MARGIN_SECONDS = 10
ENV_NAME = re.compile(r"\bINLETD_[A-Z0-9_]*[A-Z0-9]\b")

problems = []


def problem(where, text):
    problems.append("%s: %s" % (where, text))


def rel(path):
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def seconds(text):
    """humantime-style duration ("20s", "1m30s", "500ms") in seconds."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total, pos, text = 0.0, 0, str(text).replace(" ", "")
    for m in re.finditer(r"(\d+(?:\.\d+)?)([a-z]+)", text):
        if m.start() != pos or m.group(2) not in units:
            raise ValueError("not a duration: %r" % text)
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError("not a duration: %r" % text)
    return total


def quantity_bytes(text):
    """Kubernetes memory quantity ("192Mi", "200M", "1Gi") in bytes."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(text))
    if not m:
        raise ValueError("not a quantity: %r" % text)
    mult = {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
            "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}[m.group(2)]
    return float(m.group(1)) * mult


def load_yaml_docs(path):
    try:
        return [d for d in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")) if d]
    except yaml.YAMLError as e:
        problem(rel(path), "not valid YAML: %s" % e)
        return []


def keys_of(binary):
    """Every key inletd knows, from `inletd check-config` on built-in defaults
    (it prints each effective key as `key = value`)."""
    out = subprocess.run([binary, "check-config"], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin"})
    if out.returncode != 0:
        raise RuntimeError("%s check-config failed: %s" % (binary, out.stderr.strip()))
    keys = set(re.findall(r"^([a-z][a-z0-9_]*) = ", out.stdout, re.M))
    if len(keys) < 5:
        raise RuntimeError("%s check-config printed too few keys: %r" % (binary, out.stdout))
    return keys


def check_example_config():
    """config/inletd.toml documents every key, and only keys."""
    path = ROOT / "config" / "inletd.toml"
    conf = check_toml(path.read_text(encoding="utf-8"), rel(path), allow_listen=True)
    for key in sorted(CONFIG_KEYS - set(conf)):
        problem(rel(path), "does not set %r (it lists every key with its default)" % key)


def check_env_names():
    """Every INLETD_* name anywhere in the files this repo's deploy owns."""
    files = [ROOT / "Dockerfile", ROOT / "docs" / "operations.md"]
    files += [p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml", ".toml", ".md", ".json")]
    for path in files:
        if not path.is_file():
            continue
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for name in ENV_NAME.findall(line):
                key = name[len("INLETD_"):].lower()
                # The IMS client secret is no key (never a flag or TOML) but may be set in the env.
                if key not in ("config", "ims_client_secret") and key not in CONFIG_KEYS:
                    problem("%s:%d" % (rel(path), lineno), "%s is not an inletd setting" % name)


def check_quoted_keys():
    """A `snake_case` name in backticks in the docs, config comments or
    manifests is a key the binary knows (a key from the spec that inletd does
    not implement yet must not be documented as if it were there)."""
    files = [ROOT / "docs" / "operations.md", ROOT / "config" / "inletd.toml", ROOT / "Dockerfile"]
    files += sorted(p for p in K8S.rglob("*") if p.suffix in (".yaml", ".toml"))
    for path in files:
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for name in QUOTED_NAME.findall(line):
                if name not in CONFIG_KEYS and name not in NOT_KEYS and not name.startswith(("inletd_", "process_")):
                    problem("%s:%d" % (rel(path), lineno), "`%s` is not an inletd setting" % name)


def check_toml(text, where, allow_listen=False):
    try:
        conf = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        problem(where, "inletd.toml does not parse: %s" % e)
        return {}
    for key in conf:
        if key not in CONFIG_KEYS:
            problem(where, "inletd.toml key %r is not an inletd setting" % key)
    for key in () if allow_listen else ("listen", "admin_listen"):
        if key in conf:
            problem(where, "inletd.toml sets %r, but the image's INLETD_%s overrides it: set it in the env"
                    % (key, key.upper()))
    return conf


def settings_of(container, configmaps):
    """Effective inletd settings for a container: defaults < mounted TOML < env."""
    settings = dict(DEFAULTS)
    env = {e["name"]: e.get("value") for e in container.get("env") or [] if "name" in e}
    config_path = env.get("INLETD_CONFIG")
    if config_path:
        found = False
        for mount in container.get("volumeMounts") or []:
            directory = mount["mountPath"].rstrip("/") + "/"
            if config_path.startswith(directory):
                source = configmaps.get(("volume", mount["name"]))
                if source is not None:
                    settings.update({k: str(v) for k, v in source.get(config_path[len(directory):], {}).items()})
                    found = True
        if not found:
            problem(container["name"], "INLETD_CONFIG=%s is not a file from a mounted ConfigMap" % config_path)
    for name, value in env.items():
        if name.startswith("INLETD_") and value is not None:
            settings[name[len("INLETD_"):].lower()] = value
    return settings


def check_security(where, pod, container):
    psc = pod.get("securityContext") or {}
    sc = container.get("securityContext") or {}

    def either(key):
        return sc.get(key, psc.get(key))

    if either("runAsNonRoot") is not True:
        problem(where, "runAsNonRoot is not true")
    if sc.get("readOnlyRootFilesystem") is not True:
        problem(where, "readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        problem(where, "allowPrivilegeEscalation is not false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        problem(where, "capabilities do not drop ALL")
    if (either("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problem(where, "seccompProfile is not RuntimeDefault")


def check_inletd_container(where, pod, container, configmaps):
    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
    for probe_name, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        probe = container.get(probe_name)
        if not probe or (probe.get("httpGet") or {}).get("path") != path:
            problem(where, "%s must be an httpGet on %s" % (probe_name, path))
    for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
        port = ((container.get(probe_name) or {}).get("httpGet") or {}).get("port")
        if isinstance(port, str) and port not in ports:
            problem(where, "%s port %r is not a named port of the container" % (probe_name, port))
        if port is not None and port not in ("admin", 9464) and ports.get(port) != 9464:
            problem(where, "%s does not probe the admin port 9464" % probe_name)

    settings = settings_of(container, configmaps)
    try:
        grace = seconds(settings["shutdown_grace"])
        pre_stop = (((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
        pod_grace = pod.get("terminationGracePeriodSeconds", 30)
        if pod_grace < pre_stop + grace + MARGIN_SECONDS:
            problem(where, "terminationGracePeriodSeconds %s < preStop %ss + shutdown_grace %ss + %ss margin"
                    % (pod_grace, pre_stop, grace, MARGIN_SECONDS))
    except ValueError as e:
        problem(where, "shutdown_grace: %s" % e)
    try:
        limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
        need = 1.5 * float(settings["max_buffered_bytes"]) + 20e6
        if limit is None:
            problem(where, "no memory limit (inletd needs ~1.5 x max_buffered_bytes + 20 MB)")
        elif quantity_bytes(limit) < need:
            problem(where, "memory limit %s < 1.5 x max_buffered_bytes + 20 MB = %.0f MB" % (limit, need / 1e6))
    except ValueError as e:
        problem(where, str(e))


def check_kubernetes():
    for folder in sorted(p for p in K8S.iterdir() if p.is_dir()):
        objects = []
        for path in sorted(folder.glob("*.y*ml")):
            if path.name == "kustomization.yaml":
                continue
            objects += [(rel(path), o) for o in load_yaml_docs(path)]
        kustomization = folder / "kustomization.yaml"
        if kustomization.is_file():
            docs = load_yaml_docs(kustomization)
            listed = (docs[0].get("resources") or []) if docs else []
            for name in listed:
                if not (folder / name).is_file():
                    problem(rel(kustomization), "resource %s does not exist" % name)
            for path in sorted(folder.glob("*.y*ml")):
                if path.name != "kustomization.yaml" and path.name not in listed:
                    problem(rel(kustomization), "%s is not listed in resources" % path.name)

        by_kind = {}
        for where, o in objects:
            by_kind.setdefault(o.get("kind"), []).append((where, o))
        configmaps = {}
        for where, cm in by_kind.get("ConfigMap", []):
            configmaps[cm["metadata"]["name"]] = {
                key: check_toml(value, "%s %s" % (where, key))
                for key, value in (cm.get("data") or {}).items() if key.endswith(".toml")}
        if kustomization.is_file():
            for gen in (load_yaml_docs(kustomization) or [{}])[0].get("configMapGenerator") or []:
                files = {}
                for entry in gen.get("files") or []:
                    key, _, source = entry.rpartition("=") if "=" in entry else (entry, "", entry)
                    path = folder / source
                    if not path.is_file():
                        problem(rel(kustomization), "configMapGenerator file %s does not exist" % source)
                    elif key.endswith(".toml"):
                        files[Path(key).name] = check_toml(path.read_text(encoding="utf-8"), rel(path))
                configmaps[gen["name"]] = files

        deployments = {}
        for where, d in by_kind.get("Deployment", []):
            name = d["metadata"]["name"]
            pod = d["spec"]["template"]["spec"]
            labels = d["spec"]["template"]["metadata"].get("labels") or {}
            deployments[name] = (labels, pod)
            selector = d["spec"]["selector"].get("matchLabels") or {}
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                problem(where, "deployment %s: selector %s does not match the pod labels" % (name, selector))
            volume_sources = {}
            for volume in pod.get("volumes") or []:
                cm = (volume.get("configMap") or {}).get("name")
                if cm:
                    if cm not in configmaps:
                        problem(where, "volume %s: ConfigMap %s is not in %s" % (volume["name"], cm, rel(folder)))
                    volume_sources[("volume", volume["name"])] = configmaps.get(cm, {})
            containers = (pod.get("initContainers") or []) + (pod.get("containers") or [])
            inletd_seen = False
            for c in containers:
                cwhere = "%s container %s" % (where, c["name"])
                check_security(cwhere, pod, c)
                if c["name"] == "inletd":
                    inletd_seen = True
                    if c in (pod.get("initContainers") or []) and c.get("restartPolicy") != "Always":
                        problem(cwhere, "an inletd init container must be a native sidecar (restartPolicy: Always)")
                    check_inletd_container(cwhere, pod, c, volume_sources)
            if not inletd_seen:
                problem(where, "deployment %s has no container named inletd" % name)

        def matches(selector):
            return any(all(labels.get(k) == v for k, v in selector.items()) for labels, _ in deployments.values())

        for where, s in by_kind.get("Service", []):
            selector = s["spec"].get("selector") or {}
            if not selector or not matches(selector):
                problem(where, "service %s selects no Deployment's pods" % s["metadata"]["name"])
            names = {p.get("name") for _, pod in deployments.values()
                     for c in pod.get("containers") or [] for p in c.get("ports") or []}
            for port in s["spec"].get("ports") or []:
                target = port.get("targetPort")
                if isinstance(target, str) and target not in names:
                    problem(where, "service port %s: targetPort %r is no container port name" % (port.get("name"), target))
        optional = [(rel(p), o) for p in sorted(folder.glob("optional/*.y*ml")) for o in load_yaml_docs(p)]
        for where, h in by_kind.get("HorizontalPodAutoscaler", []) + [x for x in optional if x[1].get("kind") == "HorizontalPodAutoscaler"]:
            ref = h["spec"]["scaleTargetRef"]
            if ref.get("kind") != "Deployment" or ref.get("name") not in deployments:
                problem(where, "HPA targets %s/%s, not a Deployment here" % (ref.get("kind"), ref.get("name")))
        for where, n in by_kind.get("NetworkPolicy", []):
            if not matches(n["spec"]["podSelector"].get("matchLabels") or {}):
                problem(where, "NetworkPolicy selects no Deployment's pods")
            names = {p.get("name") for _, pod in deployments.values()
                     for c in pod.get("containers") or [] for p in c.get("ports") or []}
            for rule in n["spec"].get("ingress") or []:
                for port in rule.get("ports") or []:
                    if isinstance(port.get("port"), str) and port["port"] not in names:
                        problem(where, "NetworkPolicy port %r is no container port name" % port["port"])
        for where, p in by_kind.get("PodDisruptionBudget", []):
            if not matches(p["spec"]["selector"].get("matchLabels") or {}):
                problem(where, "PDB selects no Deployment's pods")
        if by_kind.get("HorizontalPodAutoscaler"):
            for where, d in by_kind.get("Deployment", []):
                if "replicas" in d["spec"]:
                    problem(where, "deployment sets replicas although an HPA owns the count")


def check_compose():
    docs = load_yaml_docs(COMPOSE)
    if not docs:
        problem(rel(COMPOSE), "empty")
        return
    compose, base = docs[0], COMPOSE.parent
    services = compose.get("services") or {}
    for name, svc in services.items():
        where = "%s service %s" % (rel(COMPOSE), name)
        build = svc.get("build")
        if build:
            context = base / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = context / ((build.get("dockerfile") if isinstance(build, dict) else None) or "Dockerfile")
            if not dockerfile.is_file():
                problem(where, "build file %s does not exist" % rel(dockerfile))
        for volume in svc.get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")) and not (base / source).exists():
                problem(where, "bind-mount source %s does not exist" % source)
        deps = svc.get("depends_on") or []
        for dep in deps if isinstance(deps, list) else deps.keys():
            if dep not in services:
                problem(where, "depends_on %s: no such service" % dep)
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env)
        if name == "inletd":
            upstream = env.get("INLETD_UPSTREAM", "")
            standin = services.get("aep-standin") or {}
            command = standin.get("command") or []
            listen = command[command.index("--listen") + 1] if "--listen" in command else ""
            if upstream != "http://aep-standin:%s" % listen.rsplit(":", 1)[-1]:
                problem(where, "INLETD_UPSTREAM %r is not the aep-standin service (listening on %r)" % (upstream, listen))
            grace = seconds(env.get("INLETD_SHUTDOWN_GRACE", DEFAULTS["shutdown_grace"]))
            stop = seconds(svc.get("stop_grace_period", "10s"))
            if stop <= grace:
                problem(where, "stop_grace_period %ss <= shutdown_grace %ss: Docker kills inletd mid-drain" % (stop, grace))

    prom_conf = load_yaml_docs(base / "prometheus.yml")
    targets = [t for sc in (prom_conf[0].get("scrape_configs") if prom_conf else []) or []
               for st in sc.get("static_configs") or [] for t in st.get("targets") or []
               if sc.get("job_name") == "inletd"]
    if "inletd:9464" not in targets:
        problem(rel(base / "prometheus.yml"), "job inletd does not scrape inletd:9464 (got %s)" % targets)

    grafana = services.get("grafana") or {}
    mounted = {v.split(":")[1] for v in grafana.get("volumes") or [] if isinstance(v, str) and v.count(":") >= 1}
    for provider_file in sorted((base / "grafana" / "provisioning" / "dashboards").glob("*.y*ml")):
        for doc in load_yaml_docs(provider_file):
            for provider in doc.get("providers") or []:
                path = (provider.get("options") or {}).get("path")
                if path not in mounted:
                    problem(rel(provider_file), "dashboard path %s is not mounted into grafana" % path)


def check_alert_parser():
    spec = importlib.util.spec_from_file_location("metric_names", DEPLOY / "metric-names.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.ALERTS.read_text(encoding="utf-8")
    ours = [" ".join(e.split()) for _, e in module.alert_exprs(text)]
    theirs = [" ".join(str(r["expr"]).split()) for g in (yaml.safe_load(text) or {}).get("groups") or []
              for r in g.get("rules") or []]
    if ours != theirs:
        problem("deploy/metric-names.py", "reads other expressions from alerts.yml than a YAML parser does")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inletd", required=True, metavar="BINARY",
                        help="a built inletd (cargo build --bin inletd): its check-config lists the keys")
    args = parser.parse_args()
    try:
        CONFIG_KEYS.update(keys_of(args.inletd))
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
        print("check-manifests: %s" % e)
        return 1
    check_example_config()
    check_env_names()
    check_quoted_keys()
    check_kubernetes()
    check_compose()
    check_alert_parser()
    for p in problems:
        print("check-manifests: %s" % p)
    if problems:
        return 1
    print("check-manifests: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
