"""The operator's pure builders: what a DiffusionCascade owns, without a cluster."""

from __future__ import annotations

import yaml

from hadis.operator.builders import (
    CASCADE_LABEL,
    ROUTER_CONFIG_KEY,
    models_of,
    router_config,
    router_configmap,
    router_deployment,
    router_service,
    worker_deployment,
    worker_service,
)
from hadis.router.config import parse_config

SPEC = yaml.safe_load(
    """
models:
  - {name: sdxl-lightning-2step, workerSpec: sdxl-lightning-2step}
  - {name: sd3.5-large, workerSpec: sd3.5-large, gpusPerReplica: 2, resources: {requests: {memory: 64Gi}}}
"""
)


def test_worker_deployment_requests_gpus_probes_and_runs_non_root():
    light, heavy = models_of(SPEC)
    d = worker_deployment("e1", "serving", heavy, replicas=3)
    assert d["metadata"]["name"] == "e1-sd3-5-large"  # dots are not allowed in every object name
    assert d["spec"]["replicas"] == 3
    pod = d["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert c["resources"]["requests"] == {"memory": "64Gi", "nvidia.com/gpu": "2"}
    assert c["args"][:4] == ["worker", "serve", "--model", "sd3.5-large"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["securityContext"]["runAsNonRoot"] and not c["securityContext"]["allowPrivilegeEscalation"]
    assert {v["name"] for v in pod["volumes"]} == {"model-cache", "dshm"}
    sel = d["spec"]["selector"]["matchLabels"]
    assert all(d["spec"]["template"]["metadata"]["labels"][k] == v for k, v in sel.items())
    assert worker_deployment("e1", "serving", light, 1)["spec"]["selector"] != sel


def test_services_select_their_pods():
    light, _ = models_of(SPEC)
    svc = worker_service("e1", "serving", light)
    dep = worker_deployment("e1", "serving", light, 1)
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels[k] == v for k, v in svc["spec"]["selector"].items())
    rsvc = router_service("e1", "serving")
    rdep = router_deployment("e1", "serving", 2)
    assert all(rdep["spec"]["template"]["metadata"]["labels"][k] == v for k, v in rsvc["spec"]["selector"].items())
    assert rdep["spec"]["template"]["metadata"]["labels"][CASCADE_LABEL] == "e1"


def test_router_configmap_holds_a_config_the_router_reads():
    cfg = router_config("e1", "serving", "sdxl-lightning-2step", "sd3.5-large", 0.2, 0.3, 6.0, "1024x1024")
    cm = router_configmap("e1", "serving", cfg)
    back = parse_config(cm["data"][ROUTER_CONFIG_KEY], "cm")
    assert back == cfg
    assert back.light.endpoints == ("e1-sdxl-lightning-2step.serving.svc:8000",)
    rdep = router_deployment("e1", "serving", 1)
    assert rdep["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == cm["metadata"]["name"]
