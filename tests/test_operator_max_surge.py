"""gpuBudget.maxSurge: a re-plan that moves GPUs keeps the pods it gives up serving until the
pods it adds are Ready, within gpuBudget.max + maxSurge GPUs (pure logic; the real node's
version is in test_realpods_e2e.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import yaml

from hadis.operator.logic import (
    SURGE_DEADLINE_S,
    WorkerRollout,
    converge,
    merge_conditions,
    rollout_condition,
    surge_replicas,
    surge_settled,
)
from hadis.operator.spec import CascadeSpec

ROOT = Path(__file__).resolve().parents[1]
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SETTLED = NOW + dt.timedelta(seconds=60)  # one rate window (surge.window 1m) after the last rise


def tiny(max_surge: int, heavy_gpus: int = 1) -> CascadeSpec:
    return CascadeSpec.parse(
        {
            "sloSeconds": 6,
            "gpuBudget": {"max": 4, "maxSurge": max_surge},
            "profile": {"configMapName": "p"},
            "planner": {"objective": {"spareGpus": "Keep"}},  # the whole budget, as the demo's
            "models": [
                {"name": "tiny-light", "workerSpec": "tiny-light"},
                {"name": "tiny-heavy", "workerSpec": "tiny-heavy", "gpusPerReplica": heavy_gpus},
            ],
        }
    )


def rollouts(**ready_of: tuple[int, int]) -> list[WorkerRollout]:
    """(desired, ready) by model label."""
    return [WorkerRollout(m.replace("_", "-"), d, r, d, True) for m, (d, r) in ready_of.items()]


def test_the_pods_a_replan_gives_up_serve_until_the_new_ones_are_ready_within_the_surge():
    spec = tiny(max_surge=1)
    target = {"tiny-light": 2, "tiny-heavy": 2}  # from light 1 / heavy 3
    moving = rollouts(tiny_light=(1, 1), tiny_heavy=(3, 3))
    assert surge_replicas(target, spec.models, moving, 4 + 1) == {"tiny-light": 2, "tiny-heavy": 3}
    # once written, the next pass sees the Deployment at 3 and keeps it while the new pod starts
    starting = rollouts(tiny_light=(2, 1), tiny_heavy=(3, 3))
    assert surge_replicas(target, spec.models, starting, 5) == {"tiny-light": 2, "tiny-heavy": 3}
    # the new pod is Ready: the kept one drains
    assert surge_replicas(target, spec.models, rollouts(tiny_light=(2, 2), tiny_heavy=(3, 3)), 5) == target
    # no surge: the budget holds no more than the plan, the new pod waits for the drained GPU
    assert surge_replicas(target, spec.models, moving, 4) == target
    # released (the new pod cannot be placed, or the deadline passed): drained at once
    assert surge_replicas(target, spec.models, moving, 5, release=True) == target
    # a pod kept is a whole replica: one surge GPU cannot keep a 2-GPU heavy pod
    wide = tiny(max_surge=1, heavy_gpus=2)
    wide_moving = rollouts(tiny_light=(0, 0), tiny_heavy=(2, 2))
    assert surge_replicas({"tiny-light": 2, "tiny-heavy": 1}, wide.models, wide_moving, 5) == {
        "tiny-light": 2,
        "tiny-heavy": 1,
    }
    # never more than the Deployment had: a pod is kept, not added
    assert surge_replicas(target, spec.models, moving, 99) == {"tiny-light": 2, "tiny-heavy": 3}


def test_a_steady_plan_with_a_pod_down_keeps_nothing_extra():
    spec = tiny(max_surge=2)
    target = {"tiny-light": 1, "tiny-heavy": 3}
    crashed = rollouts(tiny_light=(1, 0), tiny_heavy=(3, 3))
    assert surge_replicas(target, spec.models, crashed, 6) == target
    assert not surge_settled({"replicas": target}, spec.models, crashed, 0)  # nothing held


def _tiny_bundle():
    from hadis.core.bundle import from_configmap

    cm = yaml.safe_load((ROOT / "profiles" / "configmap-tiny.yaml").read_text())
    return from_configmap(cm, "test")


def _workers(conv) -> dict[str, int]:
    return {
        o["metadata"]["labels"]["serving.hadis.dev/model"]: o["spec"]["replicas"]
        for o in conv.objects
        if o["kind"] == "Deployment" and o["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"
    }


def _settled(first, at: dt.datetime) -> tuple[dict, list[WorkerRollout]]:
    done = [WorkerRollout(m.replace(".", "-"), n, n, n, True) for m, n in first.decision.replicas.items()]
    folded = merge_conditions(first.status["conditions"], [rollout_condition(done, 1, at)])
    return {**first.status, "conditions": folded}, done


def test_converge_holds_the_given_up_pods_then_drains_them_once_the_new_ones_are_ready():
    """A rise keeps the split (3 light, 1 heavy: the most images/s) and changes the row, and so
    does a pass that reads the same rate, or one a few per cent above it (a scraped rate's
    jitter), within one rate window of the rise (the rate stands still between scrapes: the climb
    may go on); the steady re-plan after that window moves a
    GPU from light to heavy for quality: the light
    Deployment keeps its pods (the status says how many, in surgeReplicas) until the new heavy
    pod is Ready; the pass that sees it Ready drains the kept pods, with a SurgeDrained event
    and no new plan."""
    bundle = _tiny_bundle()
    spec = tiny(max_surge=2)
    first = converge(spec, "t", "ns", bundle, 0.5, {}, [], 1, NOW, reconcile=True)
    status, done = _settled(first, NOW)
    climb = converge(spec, "t", "ns", bundle, 9.0, status, done, 1, NOW, trigger="rise")
    assert climb.decision.replicas == first.decision.replicas == {"tiny-light": 3, "tiny-heavy": 1}
    assert climb.decision.plan.config.router_ratio < first.decision.plan.config.router_ratio  # the row moved
    assert "surgeReplicas" not in climb.status["plan"]
    assert climb.status["plan"]["lastRiseTime"] == NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    status, done = _settled(climb, NOW)
    for jitter in (9.0, 9.0 * 1.05):  # the same rate, and a read a scrape's jitter above it: no new rise
        plateau = converge(
            spec, "t", "ns", bundle, jitter, status, done, 1, SETTLED - dt.timedelta(seconds=1), trigger="timer"
        )
        assert plateau.decision.replicas == climb.decision.replicas and plateau.status is None, jitter  # no write
    rise = converge(spec, "t", "ns", bundle, 9.0, status, done, 1, SETTLED, trigger="timer")  # no longer rising
    before, after = first.decision.replicas, rise.decision.replicas
    gave_up = {m: before[m] - after[m] for m in before if after[m] < before[m]}
    assert gave_up and any(after[m] > before[m] for m in before), (before, after)  # GPUs move
    held = rise.status["plan"]["surgeReplicas"]
    assert held == {m: min(n, 2) for m, n in gave_up.items()}
    workers = _workers(rise)
    assert all(workers[m.replace(".", "-")] == after[m] + held.get(m, 0) for m in after)
    assert sum(workers.values()) <= spec.gpu_max + spec.max_surge
    assert rise.status["plan"]["replicas"] == after  # the plan is the plan; the kept pods are apart
    assert rise.events[0][0] == "Replanned"

    later = SETTLED + dt.timedelta(seconds=10)
    status = {**rise.status, "plan": {**rise.status["plan"], "plannedAt": NOW.strftime("%Y-%m-%dT%H:%M:%SZ")}}
    starting = [WorkerRollout(m.replace(".", "-"), workers[m.replace(".", "-")], before[m], 0, True) for m in after]
    assert not surge_settled(status["plan"], spec.models, starting, 0)
    assert converge(spec, "t", "ns", bundle, 9.0, status, starting, 1, later).objects == ()  # still held

    ready = [WorkerRollout(m.replace(".", "-"), workers[m.replace(".", "-")], workers[m.replace(".", "-")], 0, True)
             for m in after]  # fmt: skip
    assert surge_settled(status["plan"], spec.models, ready, 0)
    drained = converge(spec, "t", "ns", bundle, 9.0, status, ready, 1, later)
    assert _workers(drained) == {m.replace(".", "-"): n for m, n in after.items()}
    assert drained.status["plan"]["surgeReplicas"] is None  # null: removed by the merge patch
    assert [r for r, _ in drained.events] == ["SurgeDrained"]

    # a new pod that cannot be placed gets the kept pods' GPUs at once
    assert surge_settled(status["plan"], spec.models, starting, 1)
    unplaced = converge(spec, "t", "ns", bundle, 9.0, status, starting, 1, later, unschedulable=1)
    assert _workers(unplaced) == {m.replace(".", "-"): n for m, n in after.items()}
    # and so does a new pod not Ready by the deadline
    late = later + dt.timedelta(seconds=SURGE_DEADLINE_S)
    assert _workers(converge(spec, "t", "ns", bundle, 9.0, status, starting, 1, late)) == {
        m.replace(".", "-"): n for m, n in after.items()
    }


def test_without_max_surge_a_replan_drains_at_once_as_before():
    bundle = _tiny_bundle()
    spec = tiny(max_surge=0)
    first = converge(spec, "t", "ns", bundle, 0.5, {}, [], 1, NOW, reconcile=True)
    status, done = _settled(first, NOW)
    climb = converge(spec, "t", "ns", bundle, 9.0, status, done, 1, NOW, trigger="rise")
    status, done = _settled(climb, NOW)
    rise = converge(spec, "t", "ns", bundle, 9.0, status, done, 1, SETTLED, trigger="timer")
    assert rise.decision.replicas != first.decision.replicas  # GPUs moved
    assert "surgeReplicas" not in rise.status["plan"]
    assert _workers(rise) == {m.replace(".", "-"): n for m, n in rise.decision.replicas.items()}


def test_max_surge_defaults_to_zero_and_reads_from_the_budget():
    assert tiny(0).max_surge == 0 and tiny(3).max_surge == 3
    base = {"sloSeconds": 6, "gpuBudget": {"max": 4}, "profile": {"configMapName": "p"},
            "models": [{"name": "a", "workerSpec": "a"}, {"name": "b", "workerSpec": "b"}]}  # fmt: skip
    assert CascadeSpec.parse(base).max_surge == 0
