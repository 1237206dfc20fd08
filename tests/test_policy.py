"""The platform team's policy on what a cascade author may ask for (``hadis.operator.policy``),
from the chart's values to the operator's verdict."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from hadis.operator import logic
from hadis.operator.policy import Policy, violations
from hadis.operator.spec import CascadeSpec

ROOT = Path(__file__).resolve().parents[1]
SHARED = {
    "imagePrefixes": ["ghcr.io/hadis-serving/"],
    "hostPathRoots": ["/var/cache/hadis"],
    "prometheusUrlPrefixes": ["http://prometheus-operated.monitoring:9090"],
    "tolerationKeys": ["nvidia.com/gpu"],
}


def _spec(**over) -> CascadeSpec:
    doc = yaml.safe_load((ROOT / "crds" / "examples" / "cascade-e1.yaml").read_text())["spec"]
    doc["prometheus"] = {"url": "http://prometheus-operated.monitoring:9090"}
    doc.update(over)
    return CascadeSpec.parse(doc)


def test_no_policy_allows_what_the_crd_allows():
    spec = _spec(workerImage="docker.io/anyone/x:1", modelCache={"hostPath": {"path": "/"}})
    assert violations(spec, Policy.parse(None)) == [] == violations(spec, Policy.parse("{}"))


def test_require_api_keys_refuses_a_router_that_asks_for_none():
    policy = Policy.parse(json.dumps({"requireApiKeys": True}))
    assert violations(_spec(), policy) == [
        "spec.router.auth is not set: policy requireApiKeys asks every router for API keys"
    ]
    assert violations(_spec(router={"auth": {"apiKeySecretName": "team-a-keys"}}), policy) == []
    with pytest.raises(ValueError, match="requireApiKeys must be true or false"):
        Policy.parse('{"requireApiKeys": "yes"}')


def test_a_shared_cluster_policy_refuses_each_field_by_name():
    policy = Policy.parse(json.dumps(SHARED))
    assert violations(_spec(), policy) == []
    bad = _spec(
        models=[{"name": "sdxl-lightning-2step", "workerSpec": "sdxl-lightning-2step", "image": "evil.io/miner:1"},
                {"name": "sd3.5-large", "workerSpec": "sd3.5-large"}],
        router={"image": "ghcr.io/hadis-serving/hadis:0.1.0"},
        modelCache={"hostPath": {"path": "/var/cache/hadis/../../etc"}},
        prometheus={"url": "http://169.254.169.254/latest"},
        placement={"tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"},
                                   {"operator": "Exists"}]},
    )  # fmt: skip
    found = violations(bad, policy)
    assert [v.split(":")[0].split(" ")[0] for v in found] == [
        "spec.models[0].image",
        "spec.modelCache.hostPath.path",
        "spec.prometheus.url",
        "spec.placement.tolerations[0]",
        "spec.placement.tolerations[1]",  # no key: it would tolerate every taint
    ]
    assert "policy imagePrefixes allows ['ghcr.io/hadis-serving/']" in found[0]
    assert all("policy " in v for v in found)
    assert "PolicyViolation" in logic.STALLED_REASONS  # only a spec (or policy) change clears it


def test_a_prometheus_prefix_holds_at_a_path_boundary():
    policy = Policy.parse(json.dumps({"prometheusUrlPrefixes": ["http://prom:9090"]}))
    assert not violations(_spec(prometheus={"url": "http://prom:9090"}), policy)
    assert not violations(_spec(prometheus={"url": "http://prom:9090/team-a"}), policy)
    assert violations(_spec(prometheus={"url": "http://prom:9090.evil.example"}), policy)


def test_an_empty_rule_allows_nothing_and_hostpath_roots_hold_after_normalising():
    no_host = Policy.parse(json.dumps({"hostPathRoots": []}))
    assert violations(_spec(modelCache={"hostPath": {"path": "/var/cache/hadis"}}), no_host)
    assert not violations(_spec(modelCache={"persistentVolumeClaim": {"claimName": "w"}}), no_host)
    roots = Policy.parse(json.dumps({"hostPathRoots": ["/var/cache/hadis/"]}))
    assert not violations(_spec(modelCache={"hostPath": {"path": "/var/cache/hadis/team-a"}}), roots)
    assert violations(_spec(modelCache={"hostPath": {"path": "/var/cache/hadis-other"}}), roots)


@pytest.mark.parametrize("text", ['{"imagePrefix": []}', '{"imagePrefixes": "ghcr.io/"}', "[1]", "{"])
def test_a_malformed_policy_is_refused(text):
    with pytest.raises(ValueError):
        Policy.parse(text)


def test_the_chart_passes_its_policy_values_to_the_operator(helm_bin, tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"policy": SHARED}))
    out = subprocess.run(
        [helm_bin, "template", "hop", str(ROOT / "charts" / "hadis-operator"), "-n", "hadis-system",
         "--kube-version", "1.34.2", "-f", str(values)], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    dep = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert Policy.parse(env["HADIS_POLICY"]) == Policy.parse(json.dumps(SHARED))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"policy": {"imagePrefixes": "ghcr.io/"}}))
    refused = subprocess.run(
        [helm_bin, "template", "hop", str(ROOT / "charts" / "hadis-operator"), "-f", str(bad)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode != 0 and "policy" in refused.stderr
