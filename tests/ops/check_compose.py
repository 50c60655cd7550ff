#!/usr/bin/env python3
"""Structural checks of docker-compose.yml and the files it mounts (no Docker engine needed).

* service minidb: image, build, healthcheck, cpu/memory limits and reservations, json-file
  logging (max-size 10m, max-file 3), no-new-privileges, read_only with a tmpfs, a named volume
  on /data, non-root user 1000;
* profile `observability`: prometheus, grafana and otel-collector exist, carry the profile, and
  every bind-mounted file or directory exists;
* deploy/prometheus.yml passes `promtool check config` with the mounted alert rules, loads at
  least one rule file, and scrapes a compose service as job "minidb";
* the Grafana provisioning points at the Prometheus service and at the mounted dashboard;
* `docker compose config -q` (or docker-compose) when one is installed.
"""
from __future__ import annotations

import glob
import shutil
import sys
import tempfile
from pathlib import Path, PurePosixPath

sys.path.insert(0, str(Path(__file__).resolve().parent))
import yaml  # noqa: E402

from opslib import ROOT, fail, run, tool  # noqa: E402

PROFILE = "observability"
PROFILE_SERVICES = ("prometheus", "grafana", "otel-collector")


def get(d, *path, default=None):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


def bind_mounts(svc: dict) -> list[tuple[str, str]]:
    """(host path, container path) of the service's bind mounts (short and long syntax)."""
    out = []
    for v in svc.get("volumes", []) or []:
        if isinstance(v, str):
            parts = v.split(":")
            if parts[0].startswith((".", "/")):
                out.append((parts[0], parts[1]))
        elif isinstance(v, dict) and v.get("type") == "bind":
            out.append((v["source"], v["target"]))
    return out


def host_path(compose_dir: Path, svc: dict, container_path: str) -> Path | None:
    """Map a path inside a service's container to the repository through its bind mounts."""
    cp = PurePosixPath(container_path)
    for src, dst in sorted(bind_mounts(svc), key=lambda m: -len(m[1])):
        dstp = PurePosixPath(dst)
        if cp == dstp or dstp in cp.parents:
            return (compose_dir / src / cp.relative_to(dstp)).resolve()
    return None


def check_minidb(doc: dict) -> list[str]:
    e = []
    svc = get(doc, "services", "minidb")
    if not isinstance(svc, dict):
        return ["service `minidb` is missing"]
    if not svc.get("image"):
        e.append("minidb: no image")
    if get(svc, "healthcheck", "test") is None:
        e.append("minidb: no healthcheck.test")
    for kind in ("limits", "reservations"):
        for res in ("cpus", "memory"):
            if get(svc, "deploy", "resources", kind, res) is None:
                e.append(f"minidb: deploy.resources.{kind}.{res} is missing")
    log = svc.get("logging") or {}
    if log.get("driver") != "json-file":
        e.append(f"minidb: logging.driver is {log.get('driver')!r}, want json-file")
    opts = log.get("options") or {}
    if str(opts.get("max-size")) != "10m" or str(opts.get("max-file")) != "3":
        e.append(f"minidb: logging options are {opts!r}, want max-size 10m and max-file 3")
    if not any(str(o).replace("=", ":") in ("no-new-privileges:true", "no-new-privileges")
               for o in svc.get("security_opt", []) or []):
        e.append("minidb: security_opt lacks no-new-privileges:true")
    if svc.get("read_only") is not True:
        e.append("minidb: read_only is not true")
    if not svc.get("tmpfs"):
        e.append("minidb: read_only without a tmpfs for /tmp")
    user = str(svc.get("user", ""))
    if not user or user.split(":")[0] in ("0", "root"):
        e.append(f"minidb: user is {user!r}, want a non-root uid (1000:1000)")
    named = [v for v in svc.get("volumes", []) or []
             if isinstance(v, str) and v.split(":")[1:2] == ["/data"] and not v.startswith((".", "/"))]
    if not named:
        e.append("minidb: no named volume mounted on /data")
    for v in named:
        if v.split(":")[0] not in (doc.get("volumes") or {}):
            e.append(f"minidb: volume {v.split(':')[0]!r} is not declared under top-level volumes")
    build = svc.get("build")
    if build:
        ctx = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        if not (ctx / dockerfile).is_file():
            e.append(f"minidb: build file {ctx / dockerfile} does not exist")
    return e


def check_profile(doc: dict, compose_dir: Path) -> list[str]:
    e = []
    services = doc.get("services") or {}
    for name in PROFILE_SERVICES:
        svc = services.get(name)
        if not isinstance(svc, dict):
            e.append(f"profile {PROFILE}: service {name!r} is missing")
            continue
        if PROFILE not in (svc.get("profiles") or []):
            e.append(f"{name}: not in profile {PROFILE!r}")
        if not svc.get("image") or svc["image"].endswith(":latest") or ":" not in svc["image"]:
            e.append(f"{name}: image {svc.get('image')!r} is not pinned to a tag")
    for name, svc in services.items():
        for src, _ in bind_mounts(svc):
            if not (compose_dir / src).exists():
                e.append(f"{name}: mounted path {src} does not exist")
    return e


def check_prometheus(doc: dict, compose_dir: Path) -> list[str]:
    e = []
    svc = get(doc, "services", "prometheus") or {}
    cfg_arg = next((a.split("=", 1)[1] for a in svc.get("command", []) or []
                    if str(a).startswith("--config.file=")), "/etc/prometheus/prometheus.yml")
    cfg_path = host_path(compose_dir, svc, cfg_arg)
    if not cfg_path or not cfg_path.is_file():
        return [f"prometheus: config {cfg_arg} is not bind-mounted from an existing file"]
    cfg = yaml.safe_load(cfg_path.read_text())
    rewritten = []
    for pattern in cfg.get("rule_files", []) or []:
        hp = host_path(compose_dir, svc, pattern)
        matches = glob.glob(str(hp)) if hp else []
        if not matches:
            e.append(f"prometheus: rule_files pattern {pattern} matches no mounted file")
        rewritten.append(str(hp) if hp else pattern)
    if not rewritten:
        e.append("prometheus: no rule_files (alerts/ would not be loaded)")
    jobs = {j.get("job_name"): j for j in cfg.get("scrape_configs", []) or []}
    job = jobs.get("minidb")
    if not job:
        e.append("prometheus: no scrape job named minidb (the alerts select job=\"minidb\")")
    else:
        targets = [t for sc in job.get("static_configs", []) for t in sc.get("targets", [])]
        if not any(t.split(":")[0] in (doc.get("services") or {}) for t in targets):
            e.append(f"prometheus: job minidb scrapes {targets}, no compose service among them")
        if job.get("metrics_path", "/metrics") != "/metrics":
            e.append("prometheus: job minidb does not scrape /metrics")
    cfg["rule_files"] = rewritten
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump(cfg, f)
    res = run([tool("promtool"), "check", "config", f.name])
    Path(f.name).unlink()
    if res.returncode != 0:
        e.append("promtool check config deploy/prometheus.yml:\n" + res.stdout + res.stderr)
    return e


def check_grafana(doc: dict, compose_dir: Path) -> list[str]:
    e = []
    svc = get(doc, "services", "grafana") or {}
    prov = host_path(compose_dir, svc, "/etc/grafana/provisioning")
    if not prov or not prov.is_dir():
        return ["grafana: /etc/grafana/provisioning is not bind-mounted from a directory"]
    dss = [d for f in sorted((prov / "datasources").glob("*.y*ml"))
           for d in (yaml.safe_load(f.read_text()) or {}).get("datasources", [])]
    prom = [d for d in dss if d.get("type") == "prometheus"]
    if not prom:
        e.append("grafana: no prometheus data source provisioned")
    for d in prom:
        host = str(d.get("url", "")).split("//")[-1].split(":")[0].split("/")[0]
        if host not in (doc.get("services") or {}):
            e.append(f"grafana: data source url {d.get('url')} is not a compose service")
    providers = [p for f in sorted((prov / "dashboards").glob("*.y*ml"))
                 for p in (yaml.safe_load(f.read_text()) or {}).get("providers", [])]
    if not providers:
        e.append("grafana: no dashboard provider provisioned")
    found = False
    for p in providers:
        path = get(p, "options", "path")
        hp = host_path(compose_dir, svc, path) if path else None
        if not hp or not hp.is_dir():
            e.append(f"grafana: dashboard provider path {path} is not a mounted directory")
        elif (hp / "minidb.json").is_file():
            found = True
    if providers and not found:
        e.append("grafana: dashboards/minidb.json is not under any provider path")
    home = get(svc, "environment", "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        hp = host_path(compose_dir, svc, home)
        if not hp or not hp.is_file():
            e.append(f"grafana: home dashboard {home} is not a mounted file")
    return e


def check_otel(doc: dict, compose_dir: Path) -> list[str]:
    svc = get(doc, "services", "otel-collector") or {}
    cfg_arg = next((str(a).split("=", 1)[1] for a in svc.get("command", []) or []
                    if str(a).startswith("--config=")), None)
    hp = host_path(compose_dir, svc, cfg_arg) if cfg_arg else None
    if not hp or not hp.is_file():
        return [f"otel-collector: config {cfg_arg} is not bind-mounted from an existing file"]
    cfg = yaml.safe_load(hp.read_text())
    e = []
    for kind in ("receivers", "processors", "exporters"):
        declared = set(cfg.get(kind) or {})
        for pname, pipe in (get(cfg, "service", "pipelines") or {}).items():
            for comp in pipe.get(kind, []):
                if comp not in declared:
                    e.append(f"otel-collector: pipeline {pname} uses undeclared {kind[:-1]} {comp}")
    for ext in get(cfg, "service", "extensions", default=[]) or []:
        if ext not in (cfg.get("extensions") or {}):
            e.append(f"otel-collector: service uses undeclared extension {ext}")
    if not get(cfg, "service", "pipelines", "traces"):
        e.append("otel-collector: no traces pipeline")
    return e


def compose_cli_check(path: Path) -> list[str]:
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if not shutil.which(cmd[0]):
            continue
        if run(cmd + ["version"]).returncode != 0:
            continue
        res = run(cmd + ["-f", str(path), "--profile", PROFILE, "config", "-q"])
        print(f"check_compose: `{' '.join(cmd)} config -q`: rc={res.returncode}")
        return [] if res.returncode == 0 else [f"{' '.join(cmd)} config: {res.stderr.strip()}"]
    print("check_compose: no docker compose CLI here; structural checks only")
    return []


def check(path: Path) -> list[str]:
    doc = yaml.safe_load(path.read_text())
    d = path.parent
    return (check_minidb(doc) + check_profile(doc, d) + check_prometheus(doc, d)
            + check_grafana(doc, d) + check_otel(doc, d) + compose_cli_check(path))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else ROOT / "docker-compose.yml"
    errors = check(path)
    for err in errors:
        fail(err)
    print("check_compose: " + ("FAILED" if errors else "OK"))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
