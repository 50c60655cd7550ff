#!/usr/bin/env python3
"""Check the Grafana dashboard and the alert rules against PromQL and the metrics contract.

1. The dashboard has a `datasource` template variable (type datasource, query prometheus) and
   every panel and every query uses it.
2. Every PromQL expression of the dashboard (panel targets and variable queries) is written as a
   recording rule into a temporary rule file that `promtool check rules` must accept.
3. Every metric name used by the dashboard and by the alert rules is in docs/METRICS.md (or is
   Prometheus' `up`); `_bucket/_sum/_count` are accepted for histograms only.
4. With `--scrape FILE_OR_URL` (exposition text: a file, `-` for stdin, or an http(s) URL such
   as http://127.0.0.1:6866/metrics), every used name must also appear in that scrape.

Usage: python3 tests/ops/check_dashboard.py [--scrape FILE_OR_URL] [--allow-missing NAME]...
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import yaml  # noqa: E402

from opslib import (ROOT, alert_rules, fail, in_contract, load_contract, metric_names,  # noqa: E402
                    run, substitute_grafana_vars, tool)

DS_REFS = {"${datasource}", "$datasource"}


def iter_panels(panels):
    for p in panels:
        yield p
        yield from iter_panels(p.get("panels", []))


def check_datasources(dash: dict) -> list[str]:
    errors = []
    variables = dash.get("templating", {}).get("list", [])
    dsvars = [v for v in variables if v.get("name") == "datasource"]
    if not dsvars or dsvars[0].get("type") != "datasource" or dsvars[0].get("query") != "prometheus":
        errors.append("no `datasource` template variable of type datasource/prometheus")
    for v in variables:
        if v.get("type") == "query" and (v.get("datasource") or {}).get("uid") not in DS_REFS:
            errors.append(f"variable {v.get('name')!r} does not use ${{datasource}}")
    for p in iter_panels(dash.get("panels", [])):
        where = f"panel {p.get('id')} {p.get('title')!r}"
        ds = p.get("datasource")
        if not isinstance(ds, dict) or ds.get("uid") not in DS_REFS or ds.get("type") != "prometheus":
            errors.append(f"{where}: datasource is {ds!r}, not the ${{datasource}} variable")
        if p.get("type") != "row" and not p.get("targets"):
            errors.append(f"{where}: has no queries")
        for t in p.get("targets", []):
            tds = t.get("datasource")
            if not isinstance(tds, dict) or tds.get("uid") not in DS_REFS:
                errors.append(f"{where} target {t.get('refId')}: datasource is {tds!r}")
            if not (t.get("expr") or "").strip():
                errors.append(f"{where} target {t.get('refId')}: empty expr")
    return errors


def dashboard_exprs(dash: dict) -> list[tuple[str, str]]:
    """(where, expr) for every PromQL expression in the dashboard."""
    out = []
    for p in iter_panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("expr"):
                out.append((f"panel {p.get('id')} {p.get('title')!r} {t.get('refId')}", t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = re.fullmatch(r"\s*(?:label_values\((.*),\s*\w+\s*\)|query_result\((.*)\))\s*", q, re.S)
        if m:
            out.append((f"variable {v['name']!r}", m.group(1) or m.group(2)))
        elif not re.fullmatch(r"\s*(?:label_values\(\s*\w+\s*\)|label_names\(\)|metrics\(.*\))\s*", q):
            out.append((f"variable {v['name']!r}", q))
    return out


def promtool_check(exprs: list[tuple[str, str]]) -> list[str]:
    rules = [{"record": f"dashboard:expr_{i}", "expr": substitute_grafana_vars(e)}
             for i, (_, e) in enumerate(exprs)]
    with tempfile.NamedTemporaryFile("w", suffix=".rules.yml", delete=False) as f:
        yaml.safe_dump({"groups": [{"name": "dashboard-exprs", "rules": rules}]}, f, sort_keys=False)
        path = f.name
    res = run([tool("promtool"), "check", "rules", path])
    Path(path).unlink()
    if res.returncode != 0:
        msgs = [res.stdout + res.stderr]
        # point at the offending expressions: `rule N` in promtool's message is 1-based
        for n in re.findall(r"rule (\d+)", res.stdout + res.stderr):
            i = int(n) - 1
            if 0 <= i < len(exprs):
                msgs.append(f"  -> {exprs[i][0]}: {exprs[i][1]}")
        return msgs
    return []


def read_scrape(src: str) -> str:
    if src == "-":
        return sys.stdin.read()
    if re.match(r"https?://", src):
        with urllib.request.urlopen(src, timeout=10) as r:  # noqa: S310 (a URL we were given)
            return r.read().decode()
    return Path(src).read_text()


def scrape_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            m = re.match(r"#\s+(?:TYPE|HELP)\s+([a-zA-Z_:][a-zA-Z0-9_:]*)", line)
            if m:
                names.add(m.group(1))
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)", line)
        if m:
            names.add(m.group(1))
    return names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dashboard", type=Path, default=ROOT / "dashboards/minidb.json")
    ap.add_argument("--rules", type=Path, action="append", help="alert rule file(s) (default alerts/*.rules.yml)")
    ap.add_argument("--metrics-doc", type=Path, default=ROOT / "docs/METRICS.md")
    ap.add_argument("--scrape", metavar="FILE_OR_URL", help="exposition text to check the used names against")
    ap.add_argument("--allow-missing", action="append", default=[], metavar="NAME",
                    help="with --scrape: a used name that may be absent (e.g. a labelled metric with no series yet)")
    args = ap.parse_args(argv)
    rule_files = args.rules or sorted(p for p in (ROOT / "alerts").glob("*.rules.yml"))

    errors: list[str] = []
    dash = json.loads(args.dashboard.read_text())
    errors += check_datasources(dash)

    exprs = dashboard_exprs(dash)
    errors += promtool_check(exprs)
    print(f"dashboard: {len(exprs)} PromQL expressions checked by promtool")

    used: dict[str, set[str]] = {}
    for where, e in exprs:
        for n in metric_names(e):
            used.setdefault(n, set()).add(f"{args.dashboard.name}: {where}")
    for rf in rule_files:
        for r in alert_rules(rf):
            for n in metric_names(r["expr"]):
                used.setdefault(n, set()).add(f"{rf.name}: {r.get('alert') or r.get('record')}")

    names, histograms = load_contract(args.metrics_doc)
    if not names:
        errors.append(f"no metric names found in {args.metrics_doc}")
    for n in sorted(used):
        if not in_contract(n, names, histograms):
            errors.append(f"metric {n!r} is not in {args.metrics_doc.name} (used by {sorted(used[n])[0]})")
    print(f"metrics: {len(used)} names used by the dashboard and {len(rule_files)} rule file(s), "
          f"checked against {len(names)} names in {args.metrics_doc.name}")

    if args.scrape:
        scraped = scrape_names(read_scrape(args.scrape))
        missing = sorted(n for n in used if n != "up" and n not in scraped and n not in args.allow_missing)
        for n in missing:
            errors.append(f"metric {n!r} (used by {sorted(used[n])[0]}) is absent from the scrape {args.scrape}")
        print(f"scrape: {len(scraped)} names in {args.scrape}; {len(missing)} used names missing")
        if missing:
            print("  hint: a labelled metric only appears once it has a series; initialise known label "
                  "values at start-up, or pass --allow-missing NAME", file=sys.stderr)

    for e in errors:
        fail(e)
    print("check_dashboard: " + ("FAILED" if errors else "OK"))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
