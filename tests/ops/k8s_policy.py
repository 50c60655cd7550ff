"""Deployment policy for rendered Kubernetes manifests.

`violations(docs)` returns one message per problem, each starting with a stable code in brackets
(tests/ops/test_policy.py feeds broken manifests and asserts on the codes):

  [probe-readiness] [probe-liveness] [probe-startup]  a container lacks that probe
  [resources]          a container lacks requests or limits for cpu or memory
  [root]               a pod or container may run as root (runAsNonRoot not true, or uid 0)
  [writable-rootfs]    readOnlyRootFilesystem is not true
  [privilege-escalation] allowPrivilegeEscalation is not false
  [capabilities]       capabilities do not drop ALL
  [image-tag]          an image is untagged or tagged :latest (a digest is fine)
  [pdb]                no PodDisruptionBudget selects the workload's pods
  [netpol]             no NetworkPolicy restricting Ingress selects the workload's pods
  [netpol-from]        a NetworkPolicy ingress rule admits any source: no `from` (or an empty
                       one), an empty peer `{}`, a peer selecting every namespace without a
                       podSelector, or an ipBlock of 0.0.0.0/0 or ::/0
"""
from __future__ import annotations

WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}


def _pod_template(doc: dict) -> dict | None:
    kind = doc.get("kind")
    if kind == "Pod":
        return doc
    if kind == "CronJob":
        return ((doc.get("spec") or {}).get("jobTemplate") or {}).get("spec", {}).get("template")
    return (doc.get("spec") or {}).get("template")


def _image_ok(image: str) -> bool:
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    return last.rsplit(":", 1)[1] not in ("", "latest")


def _selects(selector: dict, labels: dict) -> bool:
    match = (selector or {}).get("matchLabels") or {}
    exprs = (selector or {}).get("matchExpressions") or []
    if not match and not exprs:
        return False
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for e in exprs:
        op, key, values = e.get("operator"), e.get("key"), e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _empty(selector) -> bool:
    return isinstance(selector, dict) and not selector.get("matchLabels") and not selector.get("matchExpressions")


def _open_peer(peer: dict) -> str | None:
    """Why `peer` admits any source, or None."""
    if not peer:
        return "an empty peer {}"
    ns, pods, block = peer.get("namespaceSelector"), peer.get("podSelector"), peer.get("ipBlock")
    if ns is not None and _empty(ns) and (pods is None or _empty(pods)):
        return "a peer selecting every pod of every namespace"
    if block and block.get("cidr") in ("0.0.0.0/0", "::/0"):
        return f"ipBlock {block.get('cidr')}"
    return None


def _netpol_violations(docs: list[dict]) -> list[str]:
    out = []
    for np in (d for d in docs if d and d.get("kind") == "NetworkPolicy"):
        name = f"networkpolicy/{(np.get('metadata') or {}).get('name')}"
        for i, rule in enumerate((np.get("spec") or {}).get("ingress") or []):
            peers = rule.get("from")
            if not peers:
                out.append(f"[netpol-from] {name} ingress rule {i}: no `from`: every pod of every "
                           "namespace (and outside the cluster) may connect")
                continue
            for peer in peers:
                why = _open_peer(peer)
                if why:
                    out.append(f"[netpol-from] {name} ingress rule {i}: {why} admits any source")
    return out


def _ingress_policies(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d and d.get("kind") == "NetworkPolicy"
            and ("Ingress" in ((d.get("spec") or {}).get("policyTypes") or ["Ingress"]))]


def violations(docs: list[dict]) -> list[str]:
    out: list[str] = _netpol_violations(docs)
    pdbs = [d for d in docs if d and d.get("kind") == "PodDisruptionBudget"]
    netpols = _ingress_policies(docs)
    for doc in docs:
        if not doc or doc.get("kind") not in WORKLOADS:
            continue
        name = f"{doc['kind'].lower()}/{(doc.get('metadata') or {}).get('name')}"
        tpl = _pod_template(doc) or {}
        spec = tpl.get("spec") or {}
        pod_sc = spec.get("securityContext") or {}
        labels = (tpl.get("metadata") or {}).get("labels") or {}

        if doc["kind"] not in ("Job", "CronJob", "Pod") and not any(
                _selects((p.get("spec") or {}).get("selector"), labels) for p in pdbs):
            out.append(f"[pdb] {name}: no PodDisruptionBudget selects its pods")
        if doc["kind"] not in ("Job", "CronJob") and not any(
                _selects((p.get("spec") or {}).get("podSelector"), labels) for p in netpols):
            out.append(f"[netpol] {name}: no NetworkPolicy restricts ingress to its pods")

        containers = [(c, False) for c in spec.get("containers") or []]
        containers += [(c, True) for c in spec.get("initContainers") or []]
        if not spec.get("containers"):
            out.append(f"[resources] {name}: no containers")
        for c, init in containers:
            where = f"{name} container {c.get('name')}"
            if not init and doc["kind"] not in ("Job", "CronJob"):
                for probe in ("readiness", "liveness", "startup"):
                    if not c.get(f"{probe}Probe"):
                        out.append(f"[probe-{probe}] {where}: no {probe}Probe")
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if not (res.get(kind) or {}).get(r):
                        out.append(f"[resources] {where}: no resources.{kind}.{r}")
            sc = c.get("securityContext") or {}
            non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
            uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
            if non_root is not True:
                out.append(f"[root] {where}: runAsNonRoot is not true")
            if uid == 0 or sc.get("privileged") is True:
                out.append(f"[root] {where}: runs as uid 0 or privileged")
            if sc.get("readOnlyRootFilesystem") is not True:
                out.append(f"[writable-rootfs] {where}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                out.append(f"[privilege-escalation] {where}: allowPrivilegeEscalation is not false")
            drop = [str(x).upper() for x in ((sc.get("capabilities") or {}).get("drop") or [])]
            if "ALL" not in drop:
                out.append(f"[capabilities] {where}: capabilities.drop lacks ALL")
            image = str(c.get("image") or "")
            if not _image_ok(image):
                out.append(f"[image-tag] {where}: image {image!r} is untagged or :latest")
    return out
