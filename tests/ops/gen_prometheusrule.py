#!/usr/bin/env python3
"""Generate the Kubernetes files derived from other sources, or check them for drift.

    k8s/prometheusrule.yaml      PrometheusRule (monitoring.coreos.com/v1) from alerts/minidb.rules.yml
    k8s/grafana-dashboard.yaml   ConfigMap labelled grafana_dashboard: "1" from dashboards/minidb.json
    k8s/minidb.toml              copy of config/minidb.toml (skipped while config/minidb.toml is absent)
    k8s/statefulset.yaml         its checksum/config annotation: sha256 of k8s/minidb.toml

Usage: gen_prometheusrule.py           rewrite the files
       gen_prometheusrule.py --check   exit 1 if any file differs from what would be generated
"""
from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import yaml  # noqa: E402

from opslib import ROOT, fail  # noqa: E402

K8S = ROOT / "k8s"
RULES = ROOT / "alerts/minidb.rules.yml"
DASHBOARD = ROOT / "dashboards/minidb.json"
CONFIG = ROOT / "config/minidb.toml"
LABELS = {"app.kubernetes.io/name": "minidb"}
# kube-prometheus-stack's default ruleSelector matches `release: <helm release name>`; the
# chart's usual release name is kube-prometheus-stack. Overlays set theirs (deploy/k8s-overlay).
RELEASE_LABEL = {"release": "kube-prometheus-stack"}


class _Dumper(yaml.SafeDumper):
    """Block style, sequences indented under their key (the style of the hand-written files)."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def _str(dumper, s):
    style = "|" if "\n" in s else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style=style)


_Dumper.add_representer(str, _str)


def dump(header: str, doc: dict) -> str:
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1 << 16, allow_unicode=True)
    return header + body


def header(source: str) -> str:
    return (f"# GENERATED from {source} by tests/ops/gen_prometheusrule.py: do not edit.\n"
            f"# Regenerate with `make ops-generate`; `make check-ops` fails when this file drifts.\n")


def prometheusrule() -> str:
    rules = yaml.safe_load(RULES.read_text())
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "minidb", "labels": {**LABELS, **RELEASE_LABEL}},
        "spec": {"groups": rules["groups"]},
    }
    return dump(header("alerts/minidb.rules.yml"), doc)


def grafana_dashboard() -> str:
    dash = DASHBOARD.read_text()
    json.loads(dash)  # must be valid JSON
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "minidb-grafana-dashboard",
            "labels": {**LABELS, "grafana_dashboard": "1"},
            "annotations": {"grafana_folder": "MiniDB"},
        },
        "data": {"minidb.json": dash if dash.endswith("\n") else dash + "\n"},
    }
    return dump(header("dashboards/minidb.json"), doc)


def statefulset_with_checksum(toml_text: str) -> str:
    sts = (K8S / "statefulset.yaml").read_text()
    digest = hashlib.sha256(toml_text.encode()).hexdigest()
    new, n = re.subn(r"(checksum/config:\s*)\S+", rf"\g<1>{digest}", sts)
    if n != 1:
        raise SystemExit("k8s/statefulset.yaml: expected exactly one checksum/config annotation")
    return new


def expected() -> dict[Path, str]:
    out = {K8S / "prometheusrule.yaml": prometheusrule(),
           K8S / "grafana-dashboard.yaml": grafana_dashboard()}
    if CONFIG.exists():
        toml = CONFIG.read_text()
        out[K8S / "minidb.toml"] = toml
    else:
        print(f"note: {CONFIG.relative_to(ROOT)} does not exist yet: k8s/minidb.toml is not compared")
        toml = (K8S / "minidb.toml").read_text()
    out[K8S / "statefulset.yaml"] = statefulset_with_checksum(toml)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="fail on drift instead of writing")
    args = ap.parse_args(argv)
    drift = 0
    for path, text in expected().items():
        current = path.read_text() if path.exists() else ""
        rel = path.relative_to(ROOT)
        if current == text:
            print(f"{rel}: up to date")
            continue
        if args.check:
            drift += 1
            fail(f"{rel} is out of date; run `make ops-generate` (or tests/ops/gen_prometheusrule.py)")
            diff = difflib.unified_diff(current.splitlines(), text.splitlines(), f"{rel} (current)",
                                        f"{rel} (generated)", lineterm="", n=1)
            print("\n".join(list(diff)[:40]), file=sys.stderr)
        else:
            path.write_text(text)
            print(f"{rel}: written")
    return 1 if drift else 0


if __name__ == "__main__":
    sys.exit(main())
