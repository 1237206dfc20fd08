"""The GitOps example (examples/gitops) built as Argo CD and Flux build it, applied to the local
control plane with the operator running; the Argo CD and Flux objects checked against the
repository (the chart renders with their values, every path they name builds); and the
argocd-cm command of docs/operations.md run as written."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml

from docs import documented
from gitops import judged
from observability import CHART
from support import wait_until

ROOT = Path(__file__).resolve().parents[1]
GITOPS = ROOT / "examples" / "gitops"
OVERLAY = GITOPS / "overlays" / "production"


def _build(kubectl: str, path: Path) -> list[dict]:
    out = subprocess.run([kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(path)],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _kubectl(kube) -> str:
    state = json.loads((ROOT / ".cache" / "cluster" / "state.json").read_text())
    return str(Path(state["bin_dir"]) / "kubectl")


def test_the_overlay_builds_patches_the_cascade_and_serves_when_applied(crd, namespace, operator, idle_prometheus,
                                                                         tmp_path):  # fmt: skip
    kubectl = _kubectl(crd)
    # built by the command docs/operations.md gives, as written there
    env = {**os.environ, "PATH": f"{Path(kubectl).parent}:{os.environ['PATH']}"}
    shown = subprocess.run(["bash", "-euo", "pipefail", "-c", documented("docs/operations.md", "kubectl kustomize")],
                           cwd=ROOT, env=env, capture_output=True, text=True, check=False)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    docs = [d for d in yaml.safe_load_all(shown.stdout) if d]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == [
        ("ConfigMap", "hadis-l40s"), ("DiffusionCascade", "e1"), ("Namespace", "hadis-serving")
    ]  # fmt: skip
    cascade = next(d for d in docs if d["kind"] == "DiffusionCascade")
    assert cascade["metadata"]["namespace"] == "hadis-serving"
    assert cascade["spec"]["sloSeconds"] == 5 and cascade["spec"]["gpuBudget"] == {"min": 4, "max": 16}
    assert cascade["spec"]["prometheus"]["url"] == "http://prometheus-operated.monitoring:9090"
    # This environment: one more overlay on top, into the test's namespace and its Prometheus
    env = tmp_path / "env"
    env.mkdir()
    (env / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(OVERLAY, env)],
        "namespace": namespace,
        "patches": [{"target": {"kind": "DiffusionCascade", "name": "e1"}, "patch": yaml.safe_dump(
            [{"op": "replace", "path": "/spec/prometheus", "value": {"url": idle_prometheus, "window": "30s"}}])}],
    }))  # fmt: skip
    rendered = _build(kubectl, env)
    crd("apply", "--server-side", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": rendered}))

    def healthy():
        obj = json.loads(crd("get", "dcas", "e1", "-n", namespace, "-o", "json"))
        argocd, kst = judged(obj, "gitops-overlay")
        return (argocd, kst) if (argocd["status"], kst["status"]) == ("Healthy", "Current") else None

    end_state = wait_until(healthy, "the overlay's cascade Healthy and Current", 120)
    assert " -> " in end_state[0]["message"]
    deps = json.loads(crd("get", "deployments", "-n", namespace, "-o", "json"))["items"]
    assert {d["metadata"]["name"] for d in deps} >= {"e1-router"}


def _render_chart(helm: str, values: dict, tmp_path: Path) -> list[dict]:
    f = tmp_path / "values.yaml"
    f.write_text(yaml.safe_dump(values))
    out = subprocess.run([helm, "template", "hadis-operator", str(CHART), "-n", "hadis-system", "--kube-version",
                          "1.34.2", "-f", str(f)], capture_output=True, text=True, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_argocd_applications_name_the_chart_and_the_overlay_and_their_values_render(crd, helm_bin, tmp_path):
    operator_app = yaml.safe_load((GITOPS / "argocd" / "operator.yaml").read_text())
    cascade_app = yaml.safe_load((GITOPS / "argocd" / "cascade.yaml").read_text())
    for app in (operator_app, cascade_app):
        assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
        assert (ROOT / app["spec"]["source"]["path"]).is_dir()
    assert ROOT / operator_app["spec"]["source"]["path"] == CHART
    assert ROOT / cascade_app["spec"]["source"]["path"] == OVERLAY
    waves = [int(a["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) for a in (operator_app, cascade_app)]
    assert waves[0] < waves[1]  # the CRD before the cascade
    kinds = {
        d["kind"] for d in _render_chart(helm_bin, operator_app["spec"]["source"]["helm"]["valuesObject"], tmp_path)
    }
    assert {"Deployment", "PodMonitor", "PrometheusRule", "ConfigMap"} <= kinds


def test_flux_objects_name_paths_that_build_and_values_that_render(crd, helm_bin, tmp_path):
    kubectl = _kubectl(crd)
    objs = [d for f in sorted((GITOPS / "flux").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    kustomizations = {d["metadata"]["name"]: d for d in objs if d["kind"] == "Kustomization"}
    assert set(kustomizations) == {"hadis-operator", "hadis-cascade"}
    assert kustomizations["hadis-cascade"]["spec"]["dependsOn"] == [{"name": "hadis-operator"}]
    assert all(k["spec"]["wait"] for k in kustomizations.values())  # Flux waits on kstatus
    built = {}
    for name, k in kustomizations.items():
        built[name] = _build(kubectl, ROOT / k["spec"]["path"])
    assert ROOT / kustomizations["hadis-cascade"]["spec"]["path"] == OVERLAY
    (release,) = [d for d in built["hadis-operator"] if d["kind"] == "HelmRelease"]
    assert ROOT / release["spec"]["chart"]["spec"]["chart"] == CHART
    kinds = {d["kind"] for d in _render_chart(helm_bin, release["spec"]["values"], tmp_path)}
    assert {"Deployment", "PodMonitor", "PrometheusRule"} <= kinds


def test_the_documented_argocd_cm_command_adds_the_health_check_and_keeps_the_rest(crd, tmp_path):
    """The command in docs/operations.md, run as written against an argocd-cm that has settings."""
    kubectl = _kubectl(crd)
    command = documented("docs/operations.md", "argocd-cm")
    crd("create", "namespace", "argocd")
    try:
        existing = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "argocd-cm", "namespace": "argocd",
                    "labels": {"app.kubernetes.io/part-of": "argocd"}},
                    "data": {"url": "https://argocd.example"}}  # fmt: skip
        crd("apply", "-f", "-", stdin=json.dumps(existing))
        env = {**os.environ, "PATH": f"{Path(kubectl).parent}:{os.environ['PATH']}", "KUBECONFIG": crd.kubeconfig}
        out = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=ROOT, env=env, capture_output=True,
                             text=True, check=False)  # fmt: skip
        assert out.returncode == 0, out.stderr
        cm = json.loads(crd("get", "configmap", "argocd-cm", "-n", "argocd", "-o", "json"))
        key = "resource.customizations.health.serving.hadis.dev_DiffusionCascade"
        assert cm["data"][key] == (CHART / "argocd" / "health.lua").read_text()
        assert cm["data"]["kustomize.buildOptions"] == "--load-restrictor LoadRestrictionsNone"
        assert cm["data"]["url"] == "https://argocd.example"  # the rest kept
        assert cm["metadata"]["labels"]["app.kubernetes.io/part-of"] == "argocd"
    finally:
        crd("delete", "namespace", "argocd", "--wait=false")
