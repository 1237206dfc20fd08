"""The chart's dashboards, alerts and monitors, rendered by helm: the alert rules checked and
unit-tested by promtool (Debian's Prometheus), the dashboard's shape, the monitors' selectors.
That every dashboard query answers on a live stack is tests/test_realpods_e2e.py's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from observability import dashboard, render, rule_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def promtool() -> str:
    prometheus = os.environ.get("HADIS_PROMETHEUS", str(ROOT / ".cache" / "prometheus" / "usr" / "bin" / "prometheus"))
    tool = Path(prometheus).with_name("promtool")
    if not tool.exists():
        raise AssertionError(f"{tool} is missing: `make install` unpacks Debian's prometheus package")
    return str(tool.resolve())


def _promtool(promtool: str, *args: str, cwd: Path | None = None) -> str:
    out = subprocess.run([promtool, *args], capture_output=True, text=True, cwd=cwd, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_everything_is_off_by_default(helm_bin):
    kinds = {d["kind"] for d in render(helm_bin)}
    assert not kinds & {"PrometheusRule", "PodMonitor", "ServiceMonitor", "ConfigMap", "Service"}


def test_rendered_alerts_pass_promtool_check_rules(helm_bin, promtool, tmp_path):
    rules = rule_file(helm_bin, tmp_path / "rules.yaml")
    out = _promtool(promtool, "check", "rules", str(rules))
    assert "SUCCESS: 13 rules found" in out
    alerts = [r["alert"] for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"] if "alert" in r]
    assert alerts == [
        "HadisSLOBudgetBurnFast", "HadisSLOBudgetBurnSlow", "HadisRequestsShed", "HadisImagesDegraded",
        "HadisDemandMetricsUnavailable", "HadisPlanInfeasible", "HadisWorkerPodsUnschedulable",
        "HadisOperatorNoLeader", "HadisOperatorReconcileErrors",
    ]  # fmt: skip


@pytest.mark.parametrize("objective", ["alerts.sloObjective=0.95", "json:alerts.sloObjective=0.95"])
def test_thresholds_come_from_values(helm_bin, tmp_path, objective):
    """--set passes 0.95 as a string, --set-json and values files as a number: both work."""
    rules = yaml.safe_load(rule_file(helm_bin, tmp_path / "r.yaml", objective).read_text())
    by_name = {r.get("alert"): r for g in rules["groups"] for r in g["rules"]}
    assert "> 0.72" in by_name["HadisSLOBudgetBurnFast"]["expr"]  # 14.4 x (1 - 0.95)
    assert "> 0.3" in by_name["HadisSLOBudgetBurnSlow"]["expr"]  # 6 x 0.05


ALERT_TESTS = """
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  # a cascade missing its SLO for half its requests burns the budget 50x: the fast alert pages;
  # one that answers every request in time burns none, whatever it refuses its callers for
  # (no API key, a key over its quota, an invalid request: their errors, not the SLO's)
  - interval: 1m
    input_series:
      - series: 'hadis_router_request_duration_seconds_count{namespace="ns", cascade="hot"}'
        values: '0+60x90'
      - series: 'hadis_router_slo_violations_total{namespace="ns", cascade="hot"}'
        values: '0+30x90'
      - series: 'hadis_router_rejected_requests_total{namespace="ns", cascade="hot", reason="overload"}'
        values: '0+0x90'
      - series: 'hadis_router_request_duration_seconds_count{namespace="ns", cascade="calm"}'
        values: '0+60x90'
      - series: 'hadis_router_slo_violations_total{namespace="ns", cascade="calm"}'
        values: '0+0x90'
      - series: 'hadis_router_rejected_requests_total{namespace="ns", cascade="calm", reason="overload"}'
        values: '0+0x90'
      - series: 'hadis_router_rejected_requests_total{namespace="ns", cascade="calm", reason="unauthorized"}'
        values: '0+60x90'
      - series: 'hadis_router_rejected_requests_total{namespace="ns", cascade="calm", reason="quota"}'
        values: '0+60x90'
    alert_rule_test:
      - eval_time: 10m
        alertname: HadisSLOBudgetBurnFast
        exp_alerts:
          - exp_labels: {severity: critical, namespace: ns, cascade: hot}
            exp_annotations:
              summary: Cascade ns/hot burns its SLO error budget 14.4x too fast
              description: >-
                50% of requests missed the SLO or were refused over the last hour; at this rate the
                30-day budget is gone in two days.
  # a tenth of requests shed for 10 minutes
  - interval: 1m
    input_series:
      - series: 'hadis_router_arrivals_total{namespace="ns", cascade="c"}'
        values: '0+600x30'
      - series: 'hadis_router_rejected_requests_total{namespace="ns", cascade="c", reason="overload"}'
        values: '0+60x30'
    alert_rule_test:
      - eval_time: 3m
        alertname: HadisRequestsShed
        exp_alerts: []
      - eval_time: 15m
        alertname: HadisRequestsShed
        exp_alerts:
          - exp_labels: {severity: warning, namespace: ns, cascade: c}
            exp_annotations:
              summary: Cascade ns/c sheds 10% of its requests
              description: >-
                The routers refuse requests (503) that would miss the SLO; the plan lacks capacity
                for the demand (GPU budget, or demand rising faster than workers start).
  # the fallback plan for longer than alerts.for, on one of two operator replicas (the leader)
  - interval: 1m
    input_series:
      - series: 'hadis_operator_plan_feasible{namespace="ns", cascade="c", pod="op-0"}'
        values: '0x30'
      - series: 'hadis_operator_leader{pod="op-0"}'
        values: '1x30'
      - series: 'hadis_operator_leader{pod="op-1"}'
        values: '0x30'
    alert_rule_test:
      - eval_time: 5m
        alertname: HadisPlanInfeasible
        exp_alerts: []
      - eval_time: 20m
        alertname: HadisPlanInfeasible
        exp_alerts:
          - exp_labels: {severity: warning, namespace: ns, cascade: c}
            exp_annotations:
              summary: No configuration meets the SLO of ns/c within its GPU budget
              description: >-
                The fallback plan is in force (Degraded, BudgetInfeasible); raise spec.gpuBudget.max
                or the SLO, or expect violations.
      - eval_time: 20m
        alertname: HadisOperatorNoLeader
        exp_alerts: []
  # both replicas lost the Lease
  - interval: 1m
    input_series:
      - series: 'hadis_operator_leader{pod="op-0"}'
        values: '0x30'
      - series: 'hadis_operator_leader{pod="op-1"}'
        values: '0x30'
    alert_rule_test:
      - eval_time: 10m
        alertname: HadisOperatorNoLeader
        exp_alerts:
          - exp_labels: {severity: critical}
            exp_annotations:
              summary: No hadis operator replica holds the Lease
              description: >-
                Cascades are not re-planned; see the operator pods' /healthz and logs.
"""


def test_alerts_fire_on_the_series_the_router_and_operator_export(helm_bin, promtool, tmp_path):
    rule_file(helm_bin, tmp_path / "rules.yaml")
    (tmp_path / "alerts_test.yaml").write_text(ALERT_TESTS)
    out = _promtool(promtool, "test", "rules", "alerts_test.yaml", cwd=tmp_path)
    assert "SUCCESS" in out


def test_dashboard_is_a_sidecar_configmap_with_every_panel_scoped_to_the_selection(helm_bin):
    sets = ["grafana.dashboard.enabled=true", "grafana.dashboard.namespace=monitoring",
            "grafana.dashboard.annotations.grafana_folder=HADIS"]  # fmt: skip
    (cm,) = [d for d in render(helm_bin, *sets) if d["kind"] == "ConfigMap"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1" and cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "HADIS"}
    dash = dashboard(helm_bin)
    assert dash["uid"] == "hadis-cascades"
    assert [v["name"] for v in dash["templating"]["list"]] == ["datasource", "namespace", "cascade"]
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    titles = {p["title"] for p in panels}
    for wanted in ("Demand and planned rate", "Plan in force", "Routing shares", "Worker replicas per model",
                   "Latency percentiles against the SLO", "SLO violations", "Shed and degraded shares",
                   "Escalation share", "Queue time per request", "Batch size", "Plans by trigger", "Plan time",
                   "Operator leader"):  # fmt: skip
        assert wanted in titles
    cells: set[tuple[int, int]] = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
    for p in panels:
        assert p["targets"] and p["datasource"]["uid"] == "${datasource}"
        for t in p["targets"]:
            cluster_wide = "hadis_operator_leader" in t["expr"] or "plan_duration" in t["expr"]
            assert cluster_wide or "$namespace" in t["expr"], (p["title"], t["expr"])


def test_pod_monitors_scrape_the_operator_with_its_labels_and_the_watched_namespaces(helm_bin):
    docs = render(helm_bin, "metrics.podMonitor.enabled=true", "metrics.podMonitor.labels.release=kps",
                  "watchNamespaces={team-a,team-b}")  # fmt: skip
    monitors = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PodMonitor"}
    op, cascades = monitors["hop-hadis-operator"], monitors["hop-hadis-operator-cascades"]
    assert op["metadata"]["labels"]["release"] == "kps"
    (endpoint,) = op["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "health" and endpoint["honorLabels"] is True
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert op["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert "health" in ports
    assert cascades["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
    assert [e["port"] for e in cascades["spec"]["podMetricsEndpoints"]] == ["metrics"]  # routers and workers alike


def test_service_monitors_get_a_metrics_service_for_the_operator(helm_bin):
    docs = render(helm_bin, "metrics.serviceMonitor.enabled=true")
    (svc,) = [d for d in docs if d["kind"] == "Service"]
    assert svc["spec"]["ports"][0]["targetPort"] == "health"
    monitors = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceMonitor"}
    assert monitors["hop-hadis-operator-cascades"]["spec"]["namespaceSelector"] == {"any": True}
    assert (
        monitors["hop-hadis-operator"]["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    )


def _running(namespace: str, name: str, template: dict, ip: str) -> dict:
    """A Running pod of a Deployment's template, as the API server would list it."""
    meta = {"namespace": namespace, "name": name, "labels": template["metadata"]["labels"]}
    return {"metadata": meta, "spec": template["spec"], "status": {"phase": "Running", "podIP": ip}}


def test_the_pod_monitors_select_the_pods_the_operator_and_the_chart_create(helm_bin):
    """hack/monitors.py applies the rendered PodMonitors the way Prometheus Operator would (the
    demo's and the real-pod tests' Prometheus scrape through it): the operator at its health
    port with honorLabels, each router at its admin port, each worker at Triton's metrics port
    (neither at its inference port), only in the watched namespaces."""
    sys.path.insert(0, str(ROOT / "hack"))
    import monitors

    from hadis.core.bundle import parse_configmap
    from hadis.operator import builders, logic
    from hadis.operator.spec import CascadeSpec

    docs = render(helm_bin, "metrics.podMonitor.enabled=true", "watchNamespaces={team-a}")
    jobs = monitors.scrape_jobs(docs)
    assert [(j.interval, j.path, j.honor_labels) for j in jobs] == [
        ("15s", "/metrics", True),
        ("15s", "/metrics", False),
    ]
    bundle = parse_configmap((ROOT / "profiles" / "configmap-tiny.yaml").read_text())
    doc = yaml.safe_load((ROOT / "crds" / "examples" / "cascade-tiny.yaml").read_text())
    spec = CascadeSpec.parse(doc["spec"])
    decision = logic.decide(bundle, spec, 1.0, None)

    def cascade_pods(ns: str, octet: int) -> list[dict]:
        owned = builders.owned_objects(spec, "tiny", ns, bundle, decision.plan, decision.replicas, builders.Images())
        deps = [o for o in owned if o["kind"] == "Deployment"]
        return [_running(ns, d["metadata"]["name"] + "-0", d["spec"]["template"], f"10.{octet}.0.{i}")
                for i, d in enumerate(deps)]  # fmt: skip

    operator = next(d for d in docs if d["kind"] == "Deployment")
    pods = {
        "hadis-system": [_running("hadis-system", "op-0", operator["spec"]["template"], "10.0.0.1")],
        "team-a": cascade_pods("team-a", 1),
        "team-b": cascade_pods("team-b", 2),  # not watched
    }
    found = [monitors.job_targets(j, pods) for j in jobs]
    assert [g["targets"] for g in found[0]] == [["10.0.0.1:8080"]]
    targets = {g["labels"]["pod"]: g["targets"][0] for g in found[1]}
    assert set(targets) == {"tiny-router-0", "tiny-tiny-light-0", "tiny-tiny-heavy-0"}
    assert targets["tiny-router-0"].startswith("10.1.") and targets["tiny-router-0"].endswith(":9090")  # admin port
    assert all(t.startswith("10.1.") and t.endswith(":8002") for p, t in targets.items() if p != "tiny-router-0")
    assert all(g["labels"]["namespace"] == "team-a" for g in found[1])
    with pytest.raises(ValueError, match="keep and drop only"):
        monitors.kept([{"action": "labelmap", "regex": "x"}], pods["team-a"][0])
