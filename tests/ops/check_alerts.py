#!/usr/bin/env python3
"""Check the alert rules' conventions and that their promtool unit tests cover every alert.

* every alerting rule has labels.severity (warning|critical) and the annotations summary,
  description and runbook_url, the latter pointing at README.md#runbook-<alertname lowercase>;
* for every alert name there is a unit test evaluation where it fires and one where it does not,
  and every (alert, severity) pair fires in at least one evaluation.

The expressions themselves are checked by `promtool check rules` / `promtool test rules`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import yaml  # noqa: E402

from opslib import ROOT, alert_rules, fail  # noqa: E402

RUNBOOK = "https://github.com/minidb/minidb/blob/main/README.md#runbook-{}"
SEVERITIES = {"warning", "critical"}


def check(rules_path: Path, tests_path: Path) -> list[str]:
    errors = []
    rules = [r for r in alert_rules(rules_path) if "alert" in r]
    if not rules:
        return [f"{rules_path}: no alerting rules"]
    for r in rules:
        name = r["alert"]
        sev = (r.get("labels") or {}).get("severity")
        if sev not in SEVERITIES:
            errors.append(f"{name}: labels.severity is {sev!r}, want one of {sorted(SEVERITIES)}")
        ann = r.get("annotations") or {}
        for key in ("summary", "description", "runbook_url"):
            if not str(ann.get(key, "")).strip():
                errors.append(f"{name} ({sev}): annotation {key} is missing")
        want = RUNBOOK.format(name.lower())
        if ann.get("runbook_url") and ann["runbook_url"] != want:
            errors.append(f"{name}: runbook_url is {ann['runbook_url']!r}, want {want!r}")

    tests = yaml.safe_load(tests_path.read_text())
    fires, quiet, fired_sev = set(), set(), set()
    for group in tests.get("tests", []):
        for t in group.get("alert_rule_test", []) or []:
            exp = t.get("exp_alerts") or []
            (fires if exp else quiet).add(t["alertname"])
            for a in exp:
                fired_sev.add((t["alertname"], (a.get("exp_labels") or {}).get("severity")))
    for name in sorted({r["alert"] for r in rules}):
        if name not in fires:
            errors.append(f"{name}: no unit test where it fires ({tests_path.name})")
        if name not in quiet:
            errors.append(f"{name}: no unit test where it must not fire ({tests_path.name})")
    for r in rules:
        key = (r["alert"], (r.get("labels") or {}).get("severity"))
        if r["alert"] in fires and key not in fired_sev:
            errors.append(f"{key[0]}: the {key[1]} rule never fires in a unit test")
    return errors


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rules", type=Path, default=ROOT / "alerts/minidb.rules.yml")
    ap.add_argument("--tests", type=Path, default=ROOT / "alerts/minidb.rules.test.yml")
    args = ap.parse_args(argv)
    errors = check(args.rules, args.tests)
    for e in errors:
        fail(e)
    n = len([r for r in alert_rules(args.rules) if "alert" in r])
    print(f"check_alerts: {n} alerting rules: " + ("FAILED" if errors else "OK"))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
