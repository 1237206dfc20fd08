"""Fuzzing the operator: hypothesis generates DiffusionCascades across the schema and applies each
to the real API server with the operator running (kopf, in this process).

Invariant: the API server refuses the spec with a readable message, or the operator brings the
cascade to a stable state (Ready, or Degraded with a reason) within a bound, and then writes
nothing while nothing changes. ``HADIS_OPERATOR_FUZZ_EXAMPLES`` sets the budget (``make
fuzz`` runs a longer one); the test prints how many specs were tried, refused, Ready and
Degraded by reason, and the handler failures (crash loops) and writes after settling (storms).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from pathlib import Path

import numpy  # noqa: F401  (imported before kopf's thread imports it: hypothesis looks it up mid-import)
import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import hadis.operator.handlers  # noqa: F401  (the same: every import done before the operator's thread)
from hadis.local import running_prometheus
from support import cascade as live_cascade
from support import wait_until

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = int(os.environ.get("HADIS_OPERATOR_FUZZ_EXAMPLES", "20"))
SETTLE_S = 60.0  # from apply to a stable state, on a busy machine
PROFILED = ["sdxl-lightning-2step", "sd3.5-large-turbo", "sd3.5-medium", "sd3.5-large"]

# ---------------------------------------------------------------- what a user might write
# A legal cascade with every optional field drawn, then at most one thing the API server must
# refuse (``REFUSED``); the legal ones include what only the operator can find wrong (a profile
# missing or malformed, a model it does not describe, a node-selector key that is no label key,
# a budget above the cluster's 16 GPUs), which must end Degraded with a reason.

GOOD_QUANTITIES = ["100m", "1", "1.5", "2Gi", "512Mi", "1e3", "0"]
BAD_QUANTITIES = ["lots", "-", "1.2.3", "2 Gi"]
REFUSED = ["long name", "bad name", "name and model too long", "dots collide", "duplicate model", "one model",
           "gpus per replica", "quantity", "slo", "budget", "objective", "drift"]  # fmt: skip


def resources(draw) -> dict:
    out = {}
    for part in draw(st.lists(st.sampled_from(["requests", "limits"]), unique=True)):
        keys = draw(st.lists(st.sampled_from(["cpu", "memory"]), unique=True))
        out[part] = {k: draw(st.sampled_from(GOOD_QUANTITIES)) for k in keys}
    return out


@st.composite
def cascades(draw) -> dict:
    name = draw(st.from_regex(r"\A[a-z][a-z0-9-]{0,20}[a-z0-9]\Z"))
    chosen = draw(st.lists(st.sampled_from(PROFILED), min_size=2, max_size=4, unique=True))
    if draw(st.integers(0, 9)) == 9:  # hypothesis leans to small integers: 9 is the rare one
        chosen.append(draw(st.sampled_from(["my-model", "m.m.m.m.x"])))  # legal, not in the profile
    models = []
    for m in chosen:
        model: dict = {"name": m, "workerSpec": m}
        if draw(st.booleans()):
            model["gpusPerReplica"] = draw(st.integers(1, 2))
        if draw(st.booleans()):
            model["resources"] = resources(draw)
        if draw(st.booleans()):
            model["args"] = draw(st.lists(st.sampled_from(["--min-batch-seconds", "0.5", "--verbose"]), max_size=3))
        models.append(model)
    budget_max = draw(st.integers(2, 20))
    spec: dict = {
        "models": models,
        "sloSeconds": draw(st.floats(0.5, 60)),
        "gpuBudget": {"max": budget_max},
        "profile": {"configMapName": draw(st.sampled_from(["hadis-l40s"] * 4 + ["no-such-profile", "broken"]))},
        "prometheus": {"url": "PROMETHEUS", "window": draw(st.sampled_from(["30s", "5s", "1m"]))},
        "planner": {"intervalSeconds": 1},
    }
    if draw(st.booleans()):
        spec["gpuBudget"]["min"] = draw(st.integers(0, budget_max))
    if draw(st.booleans()):
        spec["planner"]["objective"] = draw(
            st.sampled_from([{"maxFid": 24.0}, {"maxFid": 15.0}, {"spareGpus": "Keep"}, {"spareGpus": "Release"}, {}])
        )
    if draw(st.booleans()):
        spec["planner"]["policy"] = draw(st.sampled_from(["hadis", "hadis-ref"]))
    if draw(st.booleans()):
        spec["planner"]["surge"] = {"enabled": draw(st.booleans()), "checkSeconds": draw(st.integers(1, 60))}
    if draw(st.booleans()):
        spec["router"] = {"replicas": draw(st.integers(1, 3)), "resources": resources(draw)}
    if draw(st.booleans()):
        key = draw(st.sampled_from(["pool", "example.com/gpu", "gpu pool!"]))  # the last: no label key
        spec["placement"] = {"nodeSelector": {key: "a"}}
    if draw(st.booleans()):
        spec["networkPolicy"] = {"enabled": draw(st.booleans())}
    if draw(st.booleans()):
        spec["profileDrift"] = {
            "enabled": draw(st.booleans()),
            "tolerance": draw(st.sampled_from([0.01, 0.5, 10])),
            "window": draw(st.sampled_from(["30s", "2m", "1h"])),
            "minBatches": draw(st.sampled_from([1, 5, 100000])),
        }
    if draw(st.booleans()):
        spec["modelCache"] = draw(
            st.sampled_from([{"persistentVolumeClaim": {"claimName": "w"}}, {"hostPath": {"path": "/c"}}])
        )
    fault = draw(st.sampled_from(REFUSED)) if draw(st.integers(0, 2)) == 2 else None
    if fault == "long name":
        name = "c" * draw(st.integers(57, 70))
    elif fault == "bad name":
        name = draw(st.sampled_from(["Upper", "with.dot", "-dash", "end-", "9starts-with-a-digit"]))
    elif fault == "name and model too long":
        name = "c" * (63 - min(len(m["name"]) for m in models))  # at most 56, yet one Service too long
    elif fault == "dots collide":
        twins = ["sd3-5-large"] if "sd3.5-large" in chosen else ["sd3.5-large", "sd3-5-large"]
        models += [{"name": t, "workerSpec": "sd3.5-large"} for t in twins]
    elif fault == "duplicate model":
        models.append(dict(models[0]))
    elif fault == "one model":
        del models[1:]
    elif fault == "gpus per replica":
        models[0]["gpusPerReplica"] = draw(st.sampled_from([0, 9]))
    elif fault == "quantity":
        models[0]["resources"] = {"limits": {"memory": draw(st.sampled_from(BAD_QUANTITIES))}}
    elif fault == "slo":
        spec["sloSeconds"] = draw(st.sampled_from([0, -1]))
    elif fault == "budget":
        spec["gpuBudget"] = draw(st.sampled_from([{"max": 1}, {"min": 5, "max": 4}, {"max": 0}]))
    elif fault == "drift":
        spec["profileDrift"] = draw(st.sampled_from([{"tolerance": 0}, {"window": "2 minutes"}, {"minBatches": 0}]))
    elif fault == "objective":
        spec["planner"]["objective"] = draw(st.sampled_from([{"maxFid": 24.0, "spareGpus": "Keep"}, {"maxFid": 0}]))
    return {"apiVersion": "serving.hadis.dev/v1alpha1", "kind": "DiffusionCascade",
            "metadata": {"name": name}, "spec": spec, "fault": fault}  # fmt: skip


# ---------------------------------------------------------------- the cluster side


@pytest.fixture(scope="module")
def fuzz_namespace(crd):
    name = f"operator-fuzz-{os.getpid()}"
    crd("create", "namespace", name)
    cm = yaml.safe_load((ROOT / "profiles" / "configmap-l40s.yaml").read_text())
    cm["metadata"]["name"] = "hadis-l40s"
    crd("apply", "--server-side", "-n", name, "-f", "-", stdin=json.dumps(cm))
    broken = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "broken"},
              "data": {"profile.yaml": "format: [not a profile", "pareto.csv": "light,heavy\n1,2,3\n"}}  # fmt: skip
    crd("apply", "-n", name, "-f", "-", stdin=json.dumps(broken))
    yield name
    crd("delete", "deployments,replicasets,pods", "--all", "-n", name, "--force", "--grace-period=0", "--wait=true")
    crd("delete", "namespace", name, "--wait=false")


def _stable(doc: dict) -> str | None:
    """ "Ready", or "Degraded: <reason>", once the status is of this generation."""
    st_ = doc.get("status") or {}
    if st_.get("observedGeneration") != doc["metadata"]["generation"]:
        return None
    conds = {c["type"]: c for c in st_.get("conditions", [])}
    if conds.get("Ready", {}).get("status") == "True":
        return "Ready"
    degraded = conds.get("Degraded", {})
    if degraded.get("status") == "True" and degraded.get("reason"):
        return f"Degraded: {degraded['reason']}"
    return None


def _writes(kube, namespace: str, cascade: str) -> dict[str, str]:
    """What an operator write changes: the cascade (status), the owned objects' specs."""
    out = {"cascade": live_cascade(kube, namespace, cascade)["metadata"]["resourceVersion"]}
    kinds = "deployments,services,configmaps,serviceaccounts,roles,rolebindings,networkpolicies"
    items = json.loads(kube("get", kinds, "-n", namespace, "-l", f"serving.hadis.dev/cascade={cascade}", "-o", "json"))
    for i in items["items"]:
        meta = i["metadata"]
        out[f"{i['kind']}/{meta['name']}"] = str(meta.get("generation") or meta["resourceVersion"])
    return out


def _diff(a: dict, b: dict, path: str = "") -> list[str]:
    """Where two API objects differ (for a failure message)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{path}.{k}")]
    return [] if a == b else [f"{path}: {json.dumps(a)[:300]} -> {json.dumps(b)[:300]}"]


def _replans(namespace: str, cascade: str) -> float:
    from hadis.operator.metrics import sample

    outcomes = ("applied", "unchanged", "metrics_unavailable", "profile_unavailable", "failed")
    return sum(sample("hadis_operator_replans_total", namespace=namespace, cascade=cascade, outcome=o)
               for o in outcomes)  # fmt: skip


def _wait(fn, timeout_s: float):
    """``fn()``'s first truthy value, or None when ``timeout_s`` passes (the caller says what)."""
    try:
        return wait_until(fn, "", timeout_s, every_s=0.3)
    except TimeoutError:
        return None


def test_every_cascade_is_refused_readably_or_settles_and_then_stays_quiet(crd, fuzz_namespace, tmp_path, monkeypatch):
    from kopf.testing import KopfRunner

    ns = fuzz_namespace
    tally: Counter[str] = Counter()
    monkeypatch.setenv("KUBECONFIG", crd.kubeconfig)
    with running_prometheus(tmp_path / "prometheus", [], "5s") as prom_url:
        args = ["run", "--standalone", "--namespace", ns, "-m", "hadis.operator.handlers"]
        with KopfRunner(args, timeout=60) as runner:

            def check(doc: dict) -> None:
                fault = doc.pop("fault")
                doc["spec"]["prometheus"]["url"] = prom_url
                name = doc["metadata"]["name"]
                tally["tried"] += 1
                applied = _replans(ns, name)  # names recur across examples: counts are relative
                try:
                    crd("apply", "-n", ns, "-f", "-", stdin=json.dumps(doc))
                except subprocess.CalledProcessError as e:
                    # What the spec got wrong, and the API server's words for it: the field, why.
                    assert fault is not None, f"a legal cascade refused: {e.stderr}"
                    assert re.search(r'DiffusionCascade(\.serving\.hadis\.dev)? "[^"]*" is invalid', e.stderr), e.stderr
                    assert "spec" in e.stderr or "metadata.name" in e.stderr, e.stderr
                    tally["refused"] += 1
                    return
                assert fault is None, f"{name}: {fault} was not refused"
                try:
                    # Settled: a stable state once the re-plan daemon has made its first pass.
                    assert _wait(lambda: _replans(ns, name) >= applied + 1, SETTLE_S), f"{name}: no re-plan"
                    state = _wait(lambda: _stable(live_cascade(crd, ns, name)), SETTLE_S)
                    last = live_cascade(crd, ns, name).get("status") if not state else None
                    assert state, f"{name}: no stable state in {SETTLE_S:.0f}s: {last}"
                    before = _writes(crd, ns, name)
                    first = live_cascade(crd, ns, name)
                    seen = _replans(ns, name)
                    assert _wait(lambda: _replans(ns, name) >= seen + 3, 30), f"{name}: the re-plans stopped"
                    after = _writes(crd, ns, name)
                    changed = {k: (v, after.get(k)) for k, v in before.items() if after.get(k) != v}
                    assert not changed, (
                        f"{name} ({state}) kept writing: {changed}: {_diff(first, live_cascade(crd, ns, name))}"
                    )
                    tally[state] += 1
                finally:
                    crd("delete", "dcas", name, "-n", ns, "--wait=true")
                    crd("delete", "deployments,pods", "-n", ns, "-l", f"serving.hadis.dev/cascade={name}",
                        "--force", "--grace-period=0", "--wait=true")  # fmt: skip

            run = settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=(Phase.explicit, Phase.generate),  # a failure is reported as found: no shrinking
                suppress_health_check=list(HealthCheck),
            )(given(doc=cascades())(check))
            run()
    failures = runner.output.count("failed with an exception")
    states = {k: n for k, n in sorted(tally.items()) if k not in ("tried", "refused")}
    settled = sum(states.values())
    print(f"\noperator fuzz: {tally['tried']} cascades tried, {tally['refused']} refused by the API server, "
          f"{settled} settled ({', '.join(f'{k} {n}' for k, n in states.items())}); "
          f"{failures} handler failures, 0 writes after settling")  # fmt: skip
    assert runner.exception is None
    assert failures == 0, runner.output[-3000:]
    assert tally["tried"] == tally["refused"] + settled
    assert tally["refused"] and settled, tally  # both outcomes exercised
