"""ProfileDrift: the served batch latency (Triton's counters) against the profile's (pure parts)."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from hadis.core.profile import load_profile
from hadis.operator import drift
from hadis.operator.spec import CascadeSpec, DriftSpec, ModelEntry

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
NOW = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
TINY = {
    "models": [{"name": "tiny-light", "workerSpec": "tiny-light"}, {"name": "tiny-heavy", "workerSpec": "tiny-heavy"}]
}


TINY_MODELS = tuple(ModelEntry.parse(m) for m in TINY["models"])


@pytest.fixture(scope="module")
def profile():
    return load_profile(ROOT / "profiles" / "tiny.yaml")


def served(light_s: float, heavy_s: float, batches: float = 20.0, batch: float = 2.0) -> dict[str, drift.Served]:
    """Triton's increases as Prometheus returns them: compute microseconds summed over requests."""
    requests = batches * batch
    results = {
        "compute_us": {"tiny-light": light_s * requests * 1e6, "tiny-heavy": heavy_s * requests * 1e6},
        "requests": {"tiny-light": requests, "tiny-heavy": requests},
        "executions": {"tiny-light": batches, "tiny-heavy": batches},
    }
    return drift.served_of(results)


def test_one_answer_serves_every_cascade_and_each_takes_its_own_worker_pods():
    q = drift.queries("2m")
    assert q["requests"] == "sum by (namespace, pod, model) (increase(nv_inference_count[2m]))"
    assert "nv_inference_compute_infer_duration_us[2m]" in q["compute_us"]
    series = {
        "requests": {
            ("ns", "tiny-tiny-light-6d9f7c8b5-x2k9q", "tiny-light"): 10.0,
            ("ns", "tiny-tiny-light-6d9f7c8b5-abcde", "tiny-light"): 5.0,
            ("ns", "tiny-tiny-heavy-7c5d8f9b4-zzzzz", "tiny-heavy"): 2.0,
            ("ns", "tiny2-tiny-light-6d9f7c8b5-qqqqq", "tiny-light"): 100.0,  # another cascade
            ("other", "tiny-tiny-light-6d9f7c8b5-x2k9q", "tiny-light"): 100.0,  # another namespace
        }
    }
    totals = drift.cascade_totals(series, "ns", ["tiny-tiny-light", "tiny-tiny-heavy"])
    assert totals == {"requests": {"tiny-light": 15.0, "tiny-heavy": 2.0}}


def test_served_figures_are_per_batch_and_the_mean_batch_size():
    s = served(1.2, 3.0, batches=10, batch=3)["tiny-light"]
    assert s.batch_s == pytest.approx(1.2) and s.batch == pytest.approx(3.0) and s.batches == 10
    idle = drift.served_of({"compute_us": {"m": 0.0}, "requests": {"m": 0.0}, "executions": {"m": 0.0}})["m"]
    assert idle.batch_s is None and idle.batches == 0


def test_profiled_seconds_interpolate_between_batch_sizes(profile):
    from hadis.core.profile import LatencyCurve, ModelProfile, Profile

    curve = LatencyCurve(measured={1: 1.0, 2: 1.5, 4: 2.5})
    p = Profile("x", (ModelProfile("m", "s", 1, 0.0, 64, curve),), (1, 2, 4))
    assert drift.profiled_seconds(p, "m", 1.0) == 1.0
    assert drift.profiled_seconds(p, "m", 1.5) == pytest.approx(1.25)
    assert drift.profiled_seconds(p, "m", 3.0) == pytest.approx(2.0)
    assert drift.profiled_seconds(profile, "tiny-heavy", 2.7) == pytest.approx(3.0)


def test_a_slowed_model_is_drift_with_both_figures(profile):
    found = drift.findings(profile, drift.triton_models(TINY_MODELS), served(3.1, 3.05))
    cond = drift.drift_condition(found, 0.5, 5, "2m", 3, NOW)
    assert (cond["type"], cond["status"], cond["reason"]) == ("ProfileDrift", "True", "LatencyDrift")
    assert "tiny-light served 3.1s per batch" in cond["message"] and "profiled 1s: +210%" in cond["message"]
    assert "tiny-heavy" not in cond["message"]  # within tolerance: not named
    assert cond["observedGeneration"] == 3


def test_within_tolerance_and_not_enough_traffic(profile):
    models = drift.triton_models(TINY_MODELS)
    ok = drift.drift_condition(drift.findings(profile, models, served(1.04, 3.1)), 0.5, 5, "2m", 1, NOW)
    assert (ok["status"], ok["reason"]) == ("False", "WithinTolerance")
    assert "tiny-light 1s vs 1s" in ok["message"] and "tiny-heavy 3.1s vs 3s" in ok["message"]
    idle_heavy = served(1.04, 3.0)
    idle_heavy["tiny-heavy"] = drift.Served("tiny-heavy", 3.0, 1.0, 2)
    partial = drift.drift_condition(drift.findings(profile, models, idle_heavy), 0.5, 5, "2m", 1, NOW)
    assert partial["status"] == "False" and partial["message"].endswith(
        "not judged (fewer than 5 batches in 2m): tiny-heavy"
    )
    few = drift.drift_condition(drift.findings(profile, models, served(1.0, 3.0, batches=2)), 0.5, 5, "2m", 1, NOW)
    assert (few["status"], few["reason"]) == ("Unknown", "NotEnoughTraffic")
    assert few["message"] == "fewer than 5 batches served in 2m by tiny-light, tiny-heavy"
    none = drift.drift_condition(drift.findings(profile, models, {}), 0.5, 5, "2m", 1, NOW)
    assert none["status"] == "Unknown"
    # a faster worker drifts too: the plan then leaves capacity unused
    fast = drift.drift_condition(drift.findings(profile, models, served(0.3, 3.0)), 0.5, 5, "2m", 1, NOW)
    assert fast["status"] == "True" and "-70%" in fast["message"]


def test_the_transition_time_moves_only_when_the_verdict_does(profile):
    models = drift.triton_models(TINY_MODELS)
    first = drift.drift_condition(drift.findings(profile, models, served(3.0, 3.0)), 0.5, 5, "2m", 1, NOW)
    later = NOW + dt.timedelta(minutes=5)
    again = drift.drift_condition(drift.findings(profile, models, served(3.2, 3.0)), 0.5, 5, "2m", 1, later, [first])
    assert again["lastTransitionTime"] == first["lastTransitionTime"]
    wobble = drift.drift_condition(drift.findings(profile, models, served(3.04, 3.0)), 0.5, 5, "2m", 1, later, [first])
    assert wobble == first  # a few percent either way: the same words, so no status write
    cleared = drift.drift_condition(drift.findings(profile, models, served(1.0, 3.0)), 0.5, 5, "2m", 1, later, [again])
    assert cleared["status"] == "False" and cleared["lastTransitionTime"] != first["lastTransitionTime"]


def test_settings_default_and_the_triton_model_names():
    base = {**TINY, "sloSeconds": 5, "gpuBudget": {"max": 4}, "profile": {"configMapName": "p"}}
    assert CascadeSpec.parse(base).drift == DriftSpec(enabled=True, tolerance=0.5, window="2m", min_batches=5)
    assert CascadeSpec.parse({**base, "profileDrift": {"tolerance": 0.2}}).drift.tolerance == 0.2
    models = [{"name": "fast", "workerSpec": "sdxl-lightning-2step"}, {"name": "x", "workerSpec": "/s/my.yaml"}]
    assert drift.triton_models(CascadeSpec.parse({**base, "models": models}).models) == {
        "fast": "sdxl-lightning-2step",
        "x": "my",
    }


def test_plan_gauges_follow_the_plan_in_force_and_go_with_the_lease():
    from hadis.operator import metrics

    plan = {"light": "a", "heavy": "b", "routerRatio": 0.3, "discRatio": 0.1, "replicas": {"a": 2, "b": 1},
            "demandRps": 4.5, "predictedLatencySeconds": None, "feasible": False}  # fmt: skip
    metrics.record_plan("ns", "c1", plan, 6.0)
    assert metrics.sample("hadis_operator_plan_info", namespace="ns", cascade="c1", light="a", heavy="b") == 1
    assert metrics.sample("hadis_operator_plan_replicas", namespace="ns", cascade="c1", model="a") == 2
    assert metrics.sample("hadis_operator_plan_feasible", namespace="ns", cascade="c1") == 0
    assert metrics.sample("hadis_operator_slo_seconds", namespace="ns", cascade="c1") == 6.0
    assert math.isnan(metrics.REGISTRY.get_sample_value(
        "hadis_operator_plan_predicted_latency_seconds", {"namespace": "ns", "cascade": "c1"}))  # fmt: skip
    # a new pair: one pair series, not two; a model that left the plan has no series
    metrics.record_plan("ns", "c1", {**plan, "heavy": "d", "replicas": {"a": 3, "d": 1}, "feasible": True}, 6.0)
    pairs = [s for s in metrics.PLAN_INFO.collect()[0].samples if s.labels["cascade"] == "c1"]
    assert [(s.labels["light"], s.labels["heavy"]) for s in pairs] == [("a", "d")]
    assert metrics.REGISTRY.get_sample_value("hadis_operator_plan_replicas", {"namespace": "ns", "cascade": "c1",
                                                                             "model": "b"}) is None  # fmt: skip
    metrics.PLANS.labels("ns", "c1", "timer").inc()
    metrics.forget_plans()  # the Lease lost: the gauges go, the counters stay
    assert (
        metrics.REGISTRY.get_sample_value("hadis_operator_plan_feasible", {"namespace": "ns", "cascade": "c1"}) is None
    )
    assert metrics.sample("hadis_operator_plans_total", namespace="ns", cascade="c1", trigger="timer") >= 1
    metrics.forget("ns", "c1")  # deleted: nothing of it left
    left = {"namespace": "ns", "cascade": "c1", "trigger": "timer"}
    assert metrics.REGISTRY.get_sample_value("hadis_operator_plans_total", left) is None
