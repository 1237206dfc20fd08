"""The chart's observability objects, rendered by helm: the Grafana dashboard and its queries as
Prometheus runs them, and the PrometheusRule's groups as a rule file promtool reads."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "hadis-operator"


def render(helm: str, *sets: str) -> list[dict]:
    """``sets`` are --set values; ``json:key=value`` is --set-json (a number: --set makes 0.95 a string)."""
    args = [helm, "template", "hop", str(CHART), "-n", "hadis-system", "--kube-version", "1.34.2"]
    for s in sets:
        args += ["--set-json", s.removeprefix("json:")] if s.startswith("json:") else ["--set", s]
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise AssertionError(f"helm template failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def dashboard(helm: str) -> dict:
    (cm,) = [d for d in render(helm, "grafana.dashboard.enabled=true") if d["kind"] == "ConfigMap"]
    return json.loads(cm["data"]["hadis-cascades.json"])


def panel_queries(dash: dict, namespace: str = ".*", cascade: str = ".*", rate_interval: str = "1m") -> list:
    """(panel title, refId, query) for every target, with Grafana's variables as Grafana would
    substitute them for one selection."""
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            q = (
                t["expr"]
                .replace("$__rate_interval", rate_interval)
                .replace("$namespace", namespace)
                .replace("$cascade", cascade)
            )
            out.append((p["title"], t["refId"], q))
    return out


def rule_file(helm: str, path: Path, *sets: str) -> Path:
    """The rendered PrometheusRule's groups, as the rule file promtool and Prometheus read."""
    (rule,) = [d for d in render(helm, "alerts.enabled=true", *sets) if d["kind"] == "PrometheusRule"]
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path
