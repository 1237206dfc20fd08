"""The Helm chart: lint, render, value validation, and an install on the real control plane whose
RBAC is then the only permission a real operator process runs with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "hadis-operator"
KUBE_VERSION = "1.34.2"  # the local control plane's version


def _helm(helm_bin: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([helm_bin, *args], capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{res.stderr}")
    return res


def _render(helm_bin: str, *sets: str, namespace: str = "hadis-system") -> list[dict]:
    args = ["template", "hop", str(CHART), "-n", namespace, "--kube-version", KUBE_VERSION, "--include-crds"]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(_helm(helm_bin, *args).stdout) if d]


def _one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, [(d["kind"], d["metadata"]["name"]) for d in docs]
    return found[0]


def test_chart_lints_strictly(helm_bin):
    res = _helm(helm_bin, "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in res.stdout


def test_defaults_render_a_leader_elected_cluster_wide_operator(helm_bin):
    docs = _render(helm_bin)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment",
        ]
    )
    crd = _one(docs, "CustomResourceDefinition")
    assert crd == yaml.safe_load((ROOT / "crds" / "diffusioncascades.serving.hadis.dev.yaml").read_text())
    dep = _one(docs, "Deployment")
    assert dep["metadata"]["namespace"] == "hadis-system" and dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"] == ["hadis", "operator", "run"]
    assert "--all-namespaces" in c["args"] and "--lease-duration=15" in c["args"]
    assert c["image"] == "ghcr.io/hadis-serving/hadis:0.1.0"  # appVersion by default
    assert {e["name"] for e in c["env"]} == {"POD_NAME", "POD_NAMESPACE", "HADIS_ROUTER_IMAGE", "HADIS_WORKER_IMAGE"}
    env = {e["name"]: e.get("value") for e in c["env"]}
    # the pods the operator creates: the operator's own image for routers, the worker image, both at appVersion
    assert env["HADIS_ROUTER_IMAGE"] == "ghcr.io/hadis-serving/hadis:0.1.0"
    assert env["HADIS_WORKER_IMAGE"] == "ghcr.io/hadis-serving/hadis-worker:0.1.0"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["serviceAccountName"] == "hop-hadis-operator"
    role = _one(docs, "ClusterRole", "hop-hadis-operator")
    granted = {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert {("serving.hadis.dev", "diffusioncascades/status"), ("apps", "deployments"), ("", "pods")} <= granted
    # delete only on what the operator prunes (a model removed from spec.models, a NetworkPolicy
    # turned off); the rest goes by garbage collection
    deletable = {
        (g, r)
        for rule in role["rules"]
        if "delete" in rule["verbs"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert deletable == {("apps", "deployments"), ("", "services"), ("networking.k8s.io", "networkpolicies")}
    lease = _one(docs, "Role")
    assert lease["metadata"]["namespace"] == "hadis-system" and lease["rules"][0]["resources"] == ["leases"]


def test_watch_namespaces_bind_per_namespace_and_pass_flags(helm_bin):
    docs = _render(helm_bin, "watchNamespaces={team-a,team-b}", "replicaCount=1", "leaderElection.enabled=false")
    c = _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "--namespace=team-a" in c["args"] and "--namespace=team-b" in c["args"]
    assert "--all-namespaces" not in c["args"] and "--no-leader-elect" in c["args"]
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert all(b["roleRef"]["kind"] == "ClusterRole" for b in bindings)
    assert not [d for d in docs if d["kind"] == "Role"]  # no Lease without leader election


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["replicaCount=0"], "at '/replicaCount': minimum: got 0, want 1"),
        (["replicaCunt=2"], "additional properties 'replicaCunt' not allowed"),
        (["leaderElection.leaseDurationSeconds=abc"], "got string, want integer"),
        (["watchNamespaces={Team_A}"], "'Team_A' does not match pattern"),
        (["image.pullPolicy=Sometimes"], "image/pullPolicy"),
        (["replicaCount=2", "leaderElection.enabled=false"], "replicaCount > 1 needs leaderElection.enabled=true"),
        (["leaderElection.retryPeriodSeconds=12"], "retryPeriodSeconds < renewDeadlineSeconds < leaseDurationSeconds"),
        (["metrics.podMonitor.enabled=true", "metrics.serviceMonitor.enabled=true"], "not both"),
        (["alerts.sloObjective=1.5"], "at '/alerts/sloObjective'"),
        (["alerts.shedShare=lots"], "at '/alerts/shedShare'"),
        (["metrics.podMonitor.interval=soon"], "does not match pattern"),
    ],
)
def test_bad_values_are_refused_with_a_readable_message(helm_bin, values, message):
    args = ["template", "hop", str(CHART), "--kube-version", KUBE_VERSION]
    for v in values:
        args += ["--set", v]
    res = _helm(helm_bin, *args, check=False)
    assert res.returncode != 0 and message in res.stderr, res.stderr


def _service_account_kubeconfig(kube, namespace: str, account: str, path: Path) -> str:
    token = kube("create", "token", account, "-n", namespace, "--duration", "30m").strip()
    admin = yaml.safe_load(Path(kube.kubeconfig).read_text())
    admin["users"] = [{"name": account, "user": {"token": token}}]
    for ctx in admin["contexts"]:
        ctx["context"]["user"] = account
    path.write_text(yaml.safe_dump(admin))
    return str(path)


def test_helm_install_grants_exactly_what_a_real_operator_needs(crd, helm_bin, namespace, tmp_path):
    """Install the chart, then run the operator *as its service account*: the chart's RBAC is all
    it has. It must reconcile a cascade to Ready and hold its Lease, and be refused the rest."""
    from hadis.local import free_port, scraped_value
    from support import wait_until
    from test_operator_e2e import _apply_profile, _ready

    release = f"hop-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "KUBECONFIG": crd.kubeconfig}
    res = subprocess.run(
        [helm_bin, "install", release, str(CHART), "-n", namespace, "--set", f"watchNamespaces={{{namespace}}}"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "get lease hadis-operator" in res.stdout  # NOTES.txt
    proc = None
    try:
        account = f"{release}-hadis-operator"
        dep = json.loads(crd("get", "deployment", account, "-n", namespace, "-o", "json"))
        assert dep["spec"]["replicas"] == 2
        sa_config = _service_account_kubeconfig(crd, namespace, account, tmp_path / "sa.kubeconfig")

        def can(verb: str, resource: str) -> bool:
            out = subprocess.run(
                [crd.kubectl, f"--kubeconfig={sa_config}", "auth", "can-i", verb, resource, "-n", namespace],
                capture_output=True, text=True,
            )  # fmt: skip
            return out.stdout.strip() == "yes"

        assert can("patch", "diffusioncascades.serving.hadis.dev/status") and can("create", "leases")
        assert can("patch", "deployments.apps") and can("list", "pods")
        assert can("delete", "deployments.apps") and can("delete", "services")  # pruning
        assert not can("delete", "configmaps") and not can("delete", "diffusioncascades.serving.hadis.dev")
        assert not can("list", "secrets")
        other = subprocess.run(
            [crd.kubectl, f"--kubeconfig={sa_config}", "auth", "can-i", "list", "deployments", "-n", "default"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert other.stdout.strip() == "no"  # watchNamespaces limits the grant

        _apply_profile(crd, namespace)
        log = tmp_path / "operator.log"
        health_url = f"http://127.0.0.1:{(health_port := free_port())}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "hadis.cli", "operator", "run", "--namespace", namespace,
             "--health-host", "127.0.0.1", "--health-port", str(health_port)],
            env={**os.environ, "KUBECONFIG": sa_config, "PYTHONUNBUFFERED": "1"},
            stdout=log.open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        crd("apply", "-n", namespace, "-f", str(ROOT / "crds" / "examples" / "cascade-e1.yaml"))
        wait_until(lambda: _ready(crd, namespace, "e1"), "Ready, as the chart's service account", 90)
        # a re-plan of the daemon under the same identity (status writes, index reads)
        wait_until(
            lambda: scraped_value(health_url, "hadis_operator_replans_total", namespace=namespace), "a re-plan", 90
        )
        assert scraped_value(health_url, "hadis_operator_replans_total", outcome="failed") == 0
        text = log.read_text()
        assert "Forbidden" not in text and "403" not in text, text[-3000:]
        assert "became the leader" in text
        lease = json.loads(crd("get", "lease", "hadis-operator", "-n", namespace, "-o", "json"))
        assert lease["spec"]["holderIdentity"]
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        res = subprocess.run([helm_bin, "uninstall", release, "-n", namespace], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    left = crd("get", "clusterroles,clusterrolebindings", "-o", "name")
    assert release not in left  # cluster-scoped objects go with the release


def test_a_prometheus_ca_bundle_is_mounted_and_named_to_the_operator(helm_bin):
    plain = _one(_render(helm_bin), "Deployment")["spec"]["template"]["spec"]
    assert all(e["name"] != "REQUESTS_CA_BUNDLE" for e in plain["containers"][0]["env"])
    assert [v["name"] for v in plain["volumes"]] == ["tmp"]
    pod = _one(_render(helm_bin, "prometheusCA.configMapName=corp-ca", "prometheusCA.key=bundle.pem"), "Deployment")
    spec = pod["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert {"name": "REQUESTS_CA_BUNDLE", "value": "/etc/hadis-ca/bundle.pem"} in c["env"]
    assert {"name": "prometheus-ca", "mountPath": "/etc/hadis-ca", "readOnly": True} in c["volumeMounts"]
    assert {"name": "prometheus-ca", "configMap": {"name": "corp-ca"}} in spec["volumes"]


def test_the_admission_policy_is_rendered_only_with_a_policy_and_can_be_turned_off(helm_bin):
    kinds = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
    assert not [d for d in _render(helm_bin) if d["kind"] in kinds]  # no policy: nothing to enforce
    with_policy = _render(helm_bin, "policy.requireApiKeys=true", "watchNamespaces={team-a}")
    vap = _one(with_policy, "ValidatingAdmissionPolicy")
    binding = _one(with_policy, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == vap["metadata"]["name"] and binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]["values"] == ["team-a"]
    assert [v["expression"] for v in vap["spec"]["validations"]] == [
        "has(object.spec.router) && has(object.spec.router.auth)"
    ]  # only the rules set
    off = _render(helm_bin, "policy.requireApiKeys=true", "admissionPolicy.enabled=false")
    assert not [d for d in off if d["kind"] in kinds]
