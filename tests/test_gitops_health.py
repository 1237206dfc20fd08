"""The Argo CD health check and kstatus on statuses recorded from real cascades (the operator's
e2e tests, HADIS_RECORD_STATUSES=tests/data/cascade-statuses): what a GitOps controller shows
for each state. The same checks run on the live objects in tests/test_operator_e2e.py."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from gitops import argocd_health, kstatus

RECORDED = Path(__file__).parent / "data" / "cascade-statuses"

# recorded state -> (Argo CD health, kstatus status)
EXPECTED = {
    "unplanned": ("Progressing", "InProgress"),  # the CRD's status default, before any plan
    "ready": ("Healthy", "Current"),
    "profile-missing": ("Degraded", "InProgress"),  # it may yet be created: not Stalled
    "profile-invalid": ("Degraded", "Failed"),
    "profile-mismatch": ("Degraded", "Failed"),
    "apply-failed": ("Degraded", "Failed"),
    "budget-infeasible": ("Degraded", "Current"),  # serving the fallback plan
    "metrics-unavailable": ("Degraded", "Current"),  # serving the last plan
    "pods-unschedulable": ("Degraded", "InProgress"),
}


def _load(name: str) -> dict:
    return json.loads((RECORDED / f"{name}.json").read_text())


def test_every_recorded_state_has_an_expectation():
    assert sorted(p.stem for p in RECORDED.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_cascade_reads_as_expected(name):
    obj = _load(name)
    argocd, kst = argocd_health(obj), kstatus(obj)
    assert (argocd["status"], kst["status"]) == EXPECTED[name], (argocd, kst)
    assert argocd["message"]  # Argo CD shows it beside the status


def test_degraded_names_the_reason_and_healthy_the_pair():
    assert argocd_health(_load("profile-invalid"))["message"].startswith("ProfileInvalid: ")
    assert argocd_health(_load("pods-unschedulable"))["message"].startswith("PodsUnschedulable: ")
    assert " -> " in argocd_health(_load("ready"))["message"]


def test_a_spec_change_not_yet_observed_is_progressing():
    obj = _load("ready")
    obj["metadata"]["generation"] += 1  # the user changed the spec; the operator has not planned it
    assert argocd_health(obj) == {
        "status": "Progressing",
        "message": f"waiting for the operator to plan generation {obj['metadata']['generation']}",
    }
    assert kstatus(obj)["status"] == "InProgress"


def test_no_status_at_all_is_progressing():
    obj = _load("ready")
    del obj["status"]  # an API server without the CRD's status default (an older CRD)
    assert argocd_health(obj)["status"] == "Progressing"


def test_workers_still_scaling_are_progressing_and_drift_is_named_while_healthy():
    obj = _load("ready")
    by_type = {c["type"]: c for c in obj["status"]["conditions"]}
    scaling = copy.deepcopy(obj)
    for c in scaling["status"]["conditions"]:
        if c["type"] in ("Progressing", "Reconciling"):
            c.update(status="True", reason="ScalingWorkers", message="sd3.5-large-turbo 0/1 ready")
    assert argocd_health(scaling) == {"status": "Progressing", "message": "ScalingWorkers: sd3.5-large-turbo 0/1 ready"}
    assert kstatus(scaling)["status"] == "InProgress"
    drift = copy.deepcopy(obj)
    drift["status"]["conditions"].append(
        {"type": "ProfileDrift", "status": "True", "reason": "LatencyDrift", "message": "light served 2.1x"}
    )
    hs = argocd_health(drift)
    assert hs["status"] == "Healthy" and hs["message"].endswith("; LatencyDrift: light served 2.1x")
    assert by_type["Ready"]["status"] == "True"
