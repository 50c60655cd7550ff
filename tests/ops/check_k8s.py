#!/usr/bin/env python3
"""Render the kustomize base (and the example overlay) and check it.

1. `kubectl kustomize k8s/` (or `kustomize build`) renders, and so does deploy/k8s-overlay;
2. the built-in kinds pass `kubernetes-validate --strict` against every Kubernetes version from
   MIN_KUBE (1.27, the oldest the manifests claim; README "Deploy") to the newest schema
   kubernetes-validate knows; the CRD kinds (ServiceMonitor, PrometheusRule) have no schema
   there and are checked here instead: ServiceMonitor spec.selector + endpoints;
   PrometheusRule spec.groups[].rules[] with alert or record + expr, and its groups must pass
   `promtool check rules`; both carry the `release` label kube-prometheus-stack's default
   selectors match;
3. the deployment policy of k8s_policy.py (probes, resources, non-root, read-only root fs,
   pinned images, a PodDisruptionBudget, a NetworkPolicy whose every ingress rule has a `from`);
4. MiniDB specifics: one replica, a 10Gi volumeClaimTemplate on /data, readiness /api/ready,
   liveness /api/health, startup probe budget >= 10 min, MINIDB_MEMORY__CONTAINER_LIMIT_BYTES from
   limits.memory, terminationGracePeriodSeconds > 30 + preStop, a preStop exec of /bin/sleep 5
   (which the Dockerfile's Debian runtime image has), a headless and a client Service with port
   6866 "http", a NetworkPolicy admitting only TCP 6866 from pods labelled minidb-client: "true"
   and from the monitoring namespace, the ServiceMonitor selecting the client Service, the
   Grafana dashboard ConfigMap, the checksum/config annotation == sha256(k8s/minidb.toml), and
   k8s/minidb.toml == config/minidb.toml (skipped while config/minidb.toml does not exist);
5. the image tag is the same in k8s, docker-compose.yml and Cargo.toml's version;
6. deploy/k8s-secure (the base with the components k8s/components/auth and tls) renders,
   validates, keeps the policy and the MiniDB checks, and: the keys Secret and the
   cert-manager Certificate's Secret are mounted as directories (no subPath: the kubelet must
   be able to swap the files) at the paths MINIDB_AUTH__KEYS_FILE / MINIDB_TLS__* name, every
   probe uses scheme HTTPS, and the ServiceMonitor scrapes https with a tlsConfig whose CA is
   the Certificate's Secret.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import yaml  # noqa: E402

import k8s_policy  # noqa: E402
from opslib import ROOT, fail, run, tool  # noqa: E402

K8S = ROOT / "k8s"
OVERLAY = ROOT / "deploy/k8s-overlay"
SECURE = ROOT / "deploy/k8s-secure"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "Certificate"}
# The oldest Kubernetes the manifests claim (README "Deploy", k8s/kustomization.yaml).
MIN_KUBE = (1, 27)
IMAGE_REPO = "ghcr.io/minidb/minidb"
# The label kube-prometheus-stack's default serviceMonitorSelector and ruleSelector match.
RELEASE_LABEL = "release"
RELEASE_DEFAULT = "kube-prometheus-stack"
PRESTOP = ["/bin/sleep", "5"]


def kube_versions() -> list[str]:
    """Every version kubernetes-validate has schemas for, from MIN_KUBE on."""
    try:
        from kubernetes_validate.utils import all_versions
    except ImportError:
        fail("kubernetes-validate is not installed for this python (see .ci/run)")
        sys.exit(2)
    out = sorted({v for v in all_versions() if tuple(int(x) for x in v.split(".")[:2]) >= MIN_KUBE},
                 key=lambda v: tuple(int(x) for x in v.split(".")))
    if not out or tuple(int(x) for x in out[0].split(".")[:2]) != MIN_KUBE:
        fail(f"kubernetes-validate has no schema for {MIN_KUBE}: {out}")
        sys.exit(2)
    return out


def render(kdir: Path = K8S) -> list[dict]:
    kubectl = shutil.which("kubectl") or next(
        (p for p in ("/usr/local/bin/kubectl", "/usr/bin/kubectl") if Path(p).exists()), None)
    if kubectl:
        res = run([kubectl, "kustomize", str(kdir)])
    elif shutil.which("kustomize"):
        res = run(["kustomize", "build", str(kdir)])
    else:
        print("WARNING: neither kubectl nor kustomize is installed: loading the resources listed in "
              "kustomization.yaml directly (no name hashes, no transformers)", file=sys.stderr)
        return _render_by_hand(kdir)
    if res.returncode != 0:
        raise SystemExit(f"kustomize failed:\n{res.stderr}")
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def _render_by_hand(kdir: Path) -> list[dict]:
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    docs = [d for r in k.get("resources", []) for d in yaml.safe_load_all((kdir / r).read_text()) if d]
    for g in k.get("configMapGenerator", []):
        data = {Path(f).name: (kdir / f).read_text() for f in g.get("files", [])}
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": g["name"]}, "data": data})
    return docs


def kubernetes_validate(docs: list[dict], versions: list[str], what: str = "k8s/") -> list[str]:
    core = [d for d in docs if d.get("kind") not in CRD_KINDS]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump_all(core, f, sort_keys=False)
    errors = []
    exe = tool("kubernetes-validate")
    ok = []
    for v in versions:
        res = run([exe, "--strict", "--quiet", "-k", v, f.name])
        if res.returncode != 0:
            errors.append(f"kubernetes-validate --strict {v} ({what}):\n{res.stdout}{res.stderr}")
        else:
            ok.append(v)
    if ok:
        print(f"kubernetes-validate --strict ({what}): {len(core)} resources OK for {', '.join(ok)}")
    Path(f.name).unlink()
    return errors


def release_label_checks(docs: list[dict], want: str | None = RELEASE_DEFAULT) -> list[str]:
    """The ServiceMonitor and PrometheusRule carry `release` (== `want` unless None)."""
    e = []
    for d in docs:
        if d.get("kind") not in CRD_KINDS:
            continue
        got = ((d.get("metadata") or {}).get("labels") or {}).get(RELEASE_LABEL)
        where = f"{d['kind']} {d['metadata'].get('name')}"
        if not got:
            e.append(f"{where}: no `{RELEASE_LABEL}` label, so kube-prometheus-stack's default "
                     "selectors ignore it")
        elif want is not None and got != want:
            e.append(f"{where}: label {RELEASE_LABEL}={got!r}, want {want!r}")
    return e


def network_policy_checks(docs: list[dict]) -> list[str]:
    """MiniDB's ingress: TCP 6866 from minidb-client pods (same namespace) and from the
    monitoring namespace, nothing else."""
    e = []
    want = [
        [{"podSelector": {"matchLabels": {"minidb-client": "true"}}}],
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
    ]
    for np in (d for d in docs if d.get("kind") == "NetworkPolicy"):
        got = [r.get("from") for r in np["spec"].get("ingress") or []]
        if sorted(map(str, got)) != sorted(map(str, want)):
            e.append(f"NetworkPolicy {np['metadata']['name']}: ingress from {got}, want {want}")
    return e


def crd_checks(docs: list[dict]) -> list[str]:
    e = []
    sms = [d for d in docs if d.get("kind") == "ServiceMonitor"]
    prs = [d for d in docs if d.get("kind") == "PrometheusRule"]
    if not sms:
        e.append("no ServiceMonitor")
    if not prs:
        e.append("no PrometheusRule")
    for sm in sms:
        spec = sm.get("spec") or {}
        n = sm["metadata"]["name"]
        if sm.get("apiVersion") != "monitoring.coreos.com/v1":
            e.append(f"ServiceMonitor {n}: apiVersion {sm.get('apiVersion')}")
        if not (spec.get("selector") or {}).get("matchLabels") and not (spec.get("selector") or {}).get("matchExpressions"):
            e.append(f"ServiceMonitor {n}: spec.selector is empty")
        eps = spec.get("endpoints") or []
        if not eps:
            e.append(f"ServiceMonitor {n}: no spec.endpoints")
        for ep in eps:
            if not (ep.get("port") or ep.get("targetPort")):
                e.append(f"ServiceMonitor {n}: an endpoint has neither port nor targetPort")
            if ep.get("path", "/metrics") != "/metrics":
                e.append(f"ServiceMonitor {n}: endpoint path {ep.get('path')} is not /metrics")
            if ep.get("interval") != "15s":
                e.append(f"ServiceMonitor {n}: endpoint interval {ep.get('interval')} is not 15s")
    for pr in prs:
        n = pr["metadata"]["name"]
        groups = (pr.get("spec") or {}).get("groups") or []
        if pr.get("apiVersion") != "monitoring.coreos.com/v1":
            e.append(f"PrometheusRule {n}: apiVersion {pr.get('apiVersion')}")
        if not groups:
            e.append(f"PrometheusRule {n}: no spec.groups")
        for g in groups:
            if not g.get("name"):
                e.append(f"PrometheusRule {n}: a group has no name")
            if not g.get("rules"):
                e.append(f"PrometheusRule {n} group {g.get('name')}: no rules")
            for r in g.get("rules") or []:
                if not r.get("expr") or not (r.get("alert") or r.get("record")):
                    e.append(f"PrometheusRule {n} group {g.get('name')}: rule without alert/record + expr: {r}")
        if groups:
            with tempfile.NamedTemporaryFile("w", suffix=".rules.yml", delete=False) as f:
                yaml.safe_dump({"groups": groups}, f, sort_keys=False)
            res = run([tool("promtool"), "check", "rules", f.name])
            Path(f.name).unlink()
            if res.returncode != 0:
                e.append(f"PrometheusRule {n}: promtool check rules:\n{res.stdout}{res.stderr}")
    return e


def _one(docs, kind, name=None):
    found = [d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]
    return found[0] if len(found) == 1 else None


def minidb_checks(docs: list[dict]) -> list[str]:
    e = []
    sts = _one(docs, "StatefulSet")
    if not sts:
        return ["expected exactly one StatefulSet"]
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels") or {}
    c = next((c for c in pod.get("containers", []) if c.get("name") == "minidb"), None)
    if not c:
        return ["StatefulSet has no container named minidb"]
    if spec.get("replicas") != 1:
        e.append(f"StatefulSet replicas is {spec.get('replicas')}, want 1 (single writer)")
    vcts = {v["metadata"]["name"]: v for v in spec.get("volumeClaimTemplates") or []}
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts") or []}
    if mounts.get("/data") not in vcts:
        e.append("/data is not mounted from a volumeClaimTemplate")
    elif (vcts[mounts["/data"]]["spec"].get("resources") or {}).get("requests", {}).get("storage") != "10Gi":
        e.append("the data volumeClaimTemplate does not request 10Gi")
    for probe, path in (("readinessProbe", "/api/ready"), ("livenessProbe", "/api/health"),
                        ("startupProbe", None)):
        p = c.get(probe) or {}
        got = (p.get("httpGet") or {}).get("path")
        if path and got != path:
            e.append(f"{probe} path is {got}, want {path}")
    sp = c.get("startupProbe") or {}
    budget = sp.get("failureThreshold", 3) * sp.get("periodSeconds", 10)
    if budget < 600:
        e.append(f"startupProbe allows {budget}s, want >= 600s for long WAL replays")
    env = {x["name"]: x for x in c.get("env") or []}
    rf = ((env.get("MINIDB_MEMORY__CONTAINER_LIMIT_BYTES") or {}).get("valueFrom") or {}).get("resourceFieldRef") or {}
    if rf.get("resource") != "limits.memory":
        e.append("MINIDB_MEMORY__CONTAINER_LIMIT_BYTES does not come from resourceFieldRef limits.memory")
    pre = ((c.get("lifecycle") or {}).get("preStop") or {})
    if "sleep" in pre:
        e.append("preStop.sleep needs Kubernetes 1.30; use an exec (the manifests claim 1.27+)")
    cmd = (pre.get("exec") or {}).get("command")
    if cmd != PRESTOP:
        e.append(f"preStop exec command is {cmd}, want {PRESTOP}")
    pre_s = int(cmd[-1]) if cmd == PRESTOP else 0
    runtime = [ln.split()[1] for ln in (ROOT / "Dockerfile").read_text().splitlines()
               if ln.upper().startswith("FROM ")][-1:]
    if not runtime or not runtime[0].startswith("debian:"):
        e.append(f"the Dockerfile's runtime stage is {runtime}: preStop needs its /bin/sleep (Debian)")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace != 60 or grace <= 30 + (pre_s or 0):
        e.append(f"terminationGracePeriodSeconds is {grace}, want 60 (> 30s drain + preStop)")
    sa = _one(docs, "ServiceAccount", pod.get("serviceAccountName"))
    if not sa or sa.get("automountServiceAccountToken") is not False:
        e.append("the pod's ServiceAccount does not set automountServiceAccountToken: false")
    psc = pod.get("securityContext") or {}
    for k, want in (("runAsNonRoot", True), ("runAsUser", 1000), ("runAsGroup", 1000), ("fsGroup", 1000)):
        if psc.get(k) != want:
            e.append(f"pod securityContext.{k} is {psc.get(k)!r}, want {want!r}")
    for sc, where in ((psc, "pod"), (c.get("securityContext") or {}, "container")):
        if (sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            e.append(f"{where} securityContext.seccompProfile is not RuntimeDefault")

    # config: checksum annotation and drift from config/minidb.toml
    toml = (K8S / "minidb.toml").read_text()
    want = hashlib.sha256(toml.encode()).hexdigest()
    got = (spec["template"]["metadata"].get("annotations") or {}).get("checksum/config")
    if got != want:
        e.append(f"checksum/config annotation is {got}, want sha256(k8s/minidb.toml) = {want}")
    cfg = ROOT / "config/minidb.toml"
    if cfg.exists():
        if cfg.read_text() != toml:
            e.append("k8s/minidb.toml differs from config/minidb.toml (run `make ops-generate`)")
    else:
        print("note: config/minidb.toml does not exist yet: drift check of k8s/minidb.toml skipped")
    cms = [d for d in docs if d.get("kind") == "ConfigMap" and "minidb.toml" in (d.get("data") or {})]
    if len(cms) != 1 or cms[0]["data"]["minidb.toml"] != toml:
        e.append("no ConfigMap carries k8s/minidb.toml")
    elif not any((v.get("configMap") or {}).get("name") == cms[0]["metadata"]["name"] for v in pod.get("volumes") or []):
        e.append("the config ConfigMap is not mounted by the pod")

    # services
    svcs = [d for d in docs if d.get("kind") == "Service"]
    headless = [s for s in svcs if s["spec"].get("clusterIP") == "None"]
    client = [s for s in svcs if s["spec"].get("clusterIP") != "None"]
    if not headless or spec.get("serviceName") not in [s["metadata"]["name"] for s in headless]:
        e.append("StatefulSet serviceName is not a headless Service")
    if not client:
        e.append("no client (ClusterIP) Service")
    for s in svcs:
        if not k8s_policy._selects({"matchLabels": s["spec"].get("selector") or {}}, labels):
            e.append(f"Service {s['metadata']['name']} does not select the MiniDB pods")
        if not any(p.get("name") == "http" and p.get("port") == 6866 for p in s["spec"].get("ports") or []):
            e.append(f"Service {s['metadata']['name']} has no port 6866 named http")
    # ServiceMonitor selects exactly the client Service(s), and its port exists there
    for sm in (d for d in docs if d.get("kind") == "ServiceMonitor"):
        chosen = [s for s in svcs if k8s_policy._selects(sm["spec"].get("selector"), s["metadata"].get("labels") or {})]
        if len(chosen) != 1 or chosen[0]["spec"].get("clusterIP") == "None":
            e.append(f"ServiceMonitor selects {[s['metadata']['name'] for s in chosen]}, want only the client Service")
        for ep in sm["spec"].get("endpoints") or []:
            if chosen and ep.get("port") not in [p.get("name") for p in chosen[0]["spec"].get("ports") or []]:
                e.append(f"ServiceMonitor endpoint port {ep.get('port')} is not a port of the Service")
    # NetworkPolicy: ingress only on TCP 6866
    nps = [d for d in docs if d.get("kind") == "NetworkPolicy"]
    if not nps:
        e.append("no NetworkPolicy")
    for np in nps:
        nspec = np["spec"]
        if not k8s_policy._selects(nspec.get("podSelector"), labels):
            e.append(f"NetworkPolicy {np['metadata']['name']} does not select the MiniDB pods")
        if "Ingress" not in (nspec.get("policyTypes") or []):
            e.append("NetworkPolicy does not restrict Ingress")
        for rule in nspec.get("ingress") or []:
            ports = rule.get("ports") or []
            if not ports or any(p.get("protocol", "TCP") != "TCP" or p.get("port") not in (6866, "http") for p in ports):
                e.append(f"NetworkPolicy ingress rule admits more than TCP 6866: {rule}")
    # Grafana dashboard ConfigMap
    dash = [d for d in docs if d.get("kind") == "ConfigMap"
            and (d["metadata"].get("labels") or {}).get("grafana_dashboard") == "1"]
    if len(dash) != 1 or "minidb.json" not in (dash[0].get("data") or {}):
        e.append('no ConfigMap labelled grafana_dashboard: "1" with minidb.json')
    return e


def image_checks(docs: list[dict]) -> list[str]:
    e = []
    cargo = (ROOT / "Cargo.toml").read_text()
    m = re.search(r'^\[package\][^\[]*?^version\s*=\s*"([^"]+)"', cargo, re.M | re.S)
    version = m.group(1) if m else None
    want = f"{IMAGE_REPO}:{version}"
    images = [c["image"] for d in docs if d.get("kind") in k8s_policy.WORKLOADS
              for c in (k8s_policy._pod_template(d) or {}).get("spec", {}).get("containers", [])]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    images.append(compose["services"]["minidb"]["image"])
    for img in images:
        if img != want:
            e.append(f"image {img} != {want} (Cargo.toml version); keep k8s, compose and Cargo in step")
    return e


def main() -> int:
    docs = render()
    kinds = sorted({f"{d['kind']}/{d['metadata']['name']}" for d in docs})
    print(f"kustomize: {len(docs)} resources: {', '.join(kinds)}")
    versions = kube_versions()
    errors = kubernetes_validate(docs, versions) + crd_checks(docs) + release_label_checks(docs)
    policy = k8s_policy.violations(docs)
    errors += [f"policy {p}" for p in policy]
    errors += minidb_checks(docs) + network_policy_checks(docs) + image_checks(docs)
    # The example overlay: renders, validates (oldest and newest schema), keeps the policy,
    # and really changes the labels it documents.
    if not (shutil.which("kubectl") or shutil.which("kustomize")):
        print(f"WARNING: no kustomize: {OVERLAY.relative_to(ROOT)} is not checked", file=sys.stderr)
        over = None
    else:
        try:
            over = render(OVERLAY)
            print(f"kustomize {OVERLAY.relative_to(ROOT)}: {len(over)} resources")
        except SystemExit as e:
            errors.append(f"overlay {OVERLAY.relative_to(ROOT)}: {e}")
            over = None
    errors += overlay_checks(over, versions) if over is not None else []
    if shutil.which("kubectl") or shutil.which("kustomize"):
        try:
            secure = render(SECURE)
            print(f"kustomize {SECURE.relative_to(ROOT)}: {len(secure)} resources")
            errors += [f"{SECURE.name}: {x}" for x in secure_checks(secure, versions)]
        except SystemExit as e:
            errors.append(f"overlay {SECURE.relative_to(ROOT)}: {e}")
    else:
        print(f"WARNING: no kustomize: {SECURE.relative_to(ROOT)} is not checked", file=sys.stderr)
    for err in errors:
        fail(err)
    print("check_k8s: " + ("FAILED" if errors else "OK"))
    return 1 if errors else 0


def overlay_checks(over: list[dict], versions: list[str]) -> list[str]:
    errors = []
    errors += [f"overlay: {x}" for x in kubernetes_validate(over, [versions[0], versions[-1]], "overlay")]
    errors += [f"overlay: {x}" for x in release_label_checks(over, want=None)]
    errors += [f"overlay policy {p}" for p in k8s_policy.violations(over)]
    if not release_label_checks(over) or not network_policy_checks(over):
        errors.append("overlay: the example overlay no longer patches the release label and the "
                      "NetworkPolicy peers it documents")
    return errors


def secure_checks(docs: list[dict], versions: list[str]) -> list[str]:
    """deploy/k8s-secure: the auth and tls components on the base."""
    e = kubernetes_validate(docs, [versions[0], versions[-1]], "k8s-secure")
    e += [f"policy {p}" for p in k8s_policy.violations(docs)]
    e += crd_checks(docs) + minidb_checks(docs)
    sts = _one(docs, "StatefulSet")
    if not sts:
        return e + ["no StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    c = next((c for c in pod.get("containers", []) if c.get("name") == "minidb"), {})
    env = {x["name"]: x.get("value") for x in c.get("env") or []}
    vols = {v["name"]: v for v in pod.get("volumes") or []}
    mounts = c.get("volumeMounts") or []

    def secret_dir(secret: str) -> str | None:
        """The mount path of the Secret `secret`, mounted whole."""
        for m in mounts:
            v = vols.get(m["name"]) or {}
            if (v.get("secret") or {}).get("secretName") == secret:
                if m.get("subPath"):
                    e.append(f"Secret {secret} is mounted with subPath: its updates never reach the pod")
                return m["mountPath"]
        e.append(f"Secret {secret} is not mounted")
        return None

    keys_dir = secret_dir("minidb-api-keys")
    if keys_dir and env.get("MINIDB_AUTH__KEYS_FILE") != f"{keys_dir}/keys":
        e.append(f"MINIDB_AUTH__KEYS_FILE is {env.get('MINIDB_AUTH__KEYS_FILE')}, want {keys_dir}/keys")
    certs = [d for d in docs if d.get("kind") == "Certificate"]
    if len(certs) != 1 or certs[0].get("apiVersion") != "cert-manager.io/v1":
        e.append("want one cert-manager.io/v1 Certificate")
        return e
    cert = certs[0]["spec"]
    if not cert.get("secretName") or not cert.get("dnsNames") or not (cert.get("issuerRef") or {}).get("name"):
        e.append("the Certificate needs secretName, dnsNames and issuerRef.name")
    tls_dir = secret_dir(cert.get("secretName", ""))
    if tls_dir:
        for var, f in (("MINIDB_TLS__CERT_FILE", "tls.crt"), ("MINIDB_TLS__KEY_FILE", "tls.key")):
            if env.get(var) != f"{tls_dir}/{f}":
                e.append(f"{var} is {env.get(var)}, want {tls_dir}/{f}")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        if ((c.get(probe) or {}).get("httpGet") or {}).get("scheme") != "HTTPS":
            e.append(f"{probe} does not use scheme HTTPS")
    for sm in (d for d in docs if d.get("kind") == "ServiceMonitor"):
        for ep in sm["spec"].get("endpoints") or []:
            tc = ep.get("tlsConfig") or {}
            if ep.get("scheme") != "https":
                e.append("ServiceMonitor endpoint scheme is not https")
            if ((tc.get("ca") or {}).get("secret") or {}).get("name") != cert.get("secretName"):
                e.append("ServiceMonitor tlsConfig.ca is not the Certificate's Secret")
            if tc.get("serverName") not in cert.get("dnsNames", []):
                e.append(f"ServiceMonitor tlsConfig.serverName {tc.get('serverName')} is not a dnsName of the Certificate")
            if tc.get("insecureSkipVerify"):
                e.append("ServiceMonitor skips certificate verification")
    return e


if __name__ == "__main__":
    sys.exit(main())
