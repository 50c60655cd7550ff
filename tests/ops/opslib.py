"""Shared helpers for the operations checks under tests/ops (stdlib + PyYAML only)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# PromQL words that look like identifiers but are not metric names.
_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "atan2", "inf", "nan", "start", "end",
    # aggregations (may be written without a following parenthesis, as in `sum by (x) (...)`)
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_GRAFANA_BUILTIN = re.compile(r"\$\{?__(?:rate_interval|interval|range)(?::\w+)?\}?(?:_ms|_s)?")
_GRAFANA_VAR = re.compile(r"\$\{[^}]+\}|\$\w+|\[\[\w+\]\]")


def fail(msg: str) -> None:
    print(f"FAIL: {msg}", file=sys.stderr)


def substitute_grafana_vars(expr: str) -> str:
    """Replace Grafana template variables by values that keep the expression valid PromQL."""
    expr = _GRAFANA_BUILTIN.sub("5m", expr)
    return _GRAFANA_VAR.sub("grafana_var", expr)


def metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (a tokenizer, not a full parser)."""
    s = substitute_grafana_vars(expr)
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', s)  # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range and subquery selectors
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\boffset\s+-?[0-9a-z]+", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", s):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in _PROMQL_WORDS:
            continue
        names.add(name)
    return names


def load_contract(path: Path) -> tuple[set[str], set[str]]:
    """(all metric names, histogram names) from the tables of docs/METRICS.md."""
    names, histograms = set(), set()
    for line in path.read_text().splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        found = re.findall(r"`([a-zA-Z_:][a-zA-Z0-9_:]*)`", cells[0])
        names.update(found)
        if len(cells) > 1 and cells[1].startswith("histogram"):
            histograms.update(found)
    return names, histograms


def in_contract(name: str, names: set[str], histograms: set[str]) -> bool:
    if name in names or name == "up":
        return True
    for suffix in _HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in histograms:
            return True
    return False


def alert_rules(path: Path) -> list[dict]:
    import yaml

    doc = yaml.safe_load(path.read_text())
    return [r for g in doc.get("groups", []) for r in g.get("rules", [])]


def tool(name: str, *candidates: str) -> str:
    """Absolute path of a command-line tool, or exit with a clear message."""
    for c in (name, *candidates):
        found = shutil.which(c)
        if found:
            return found
    fail(f"`{name}` not found on PATH (see .ci/run for how CI installs it)")
    sys.exit(2)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, text=True, capture_output=True, **kw)
