"""The operator's pure builders: what a DiffusionCascade owns, without a cluster."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import yaml

from hadis.contract import CASCADE_LABEL, MODEL_LABEL, ROUTER_CONFIG_KEY, ROUTER_IMAGE, USER_ID, WORKER_IMAGE
from hadis.operator import builders
from hadis.operator.builders import (
    Images,
    cpu_threads,
    drain_seconds,
    router_config,
    router_configmap,
    router_deployment,
    router_rbac,
    router_service,
    tier_capacity,
    worker_deployment,
    worker_network_policy,
    worker_service,
)
from hadis.operator.spec import CascadeSpec
from hadis.router.config import parse_config

ROOT = Path(__file__).resolve().parents[1]

SPEC = yaml.safe_load(
    """
models:
  - {name: sdxl-lightning-2step, workerSpec: sdxl-lightning-2step}
  - {name: sd3.5-large, workerSpec: sd3.5-large, gpusPerReplica: 2, resources: {requests: {memory: 64Gi}}}
"""
)


BASE = {
    "sloSeconds": 10,
    "gpuBudget": {"max": 8},
    "profile": {"configMapName": "p"},
    "models": [{"name": "a", "workerSpec": "a"}, {"name": "b", "workerSpec": "b"}],
}


def parsed(spec: dict) -> CascadeSpec:
    """A typed spec of ``spec``'s fields over a minimal valid one."""
    return CascadeSpec.parse({**BASE, **spec})


typed = CascadeSpec.parse


def models_of(spec: dict) -> list:
    return list(parsed(spec).models)


def images_of(spec: dict, defaults: Images) -> Images:
    return builders.images_of(parsed(spec), defaults)


def placement_of(spec: dict) -> dict:
    return builders.placement_of(parsed(spec))


def model_cache_volume(spec: dict) -> dict | None:
    return builders.model_cache_volume(parsed(spec))


def surge_spec(spec: dict):
    return parsed(spec).surge


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
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/models/sd3.5-large/ready"  # the model, not the server
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/models/sd3.5-large/ready"
    assert c["securityContext"]["runAsNonRoot"] and not c["securityContext"]["allowPrivilegeEscalation"]
    assert {v["name"] for v in pod["volumes"]} == {"model-cache", "dshm", "tmp"}
    assert c["securityContext"]["readOnlyRootFilesystem"] and c["securityContext"]["runAsUser"] == USER_ID
    # the image's entrypoint is not relied on, and the device comes from the worker spec
    assert c["command"] == ["hadis"] and "--device" not in c["args"]
    assert c["image"] == WORKER_IMAGE and "OMP_NUM_THREADS" not in {e["name"] for e in c["env"]}
    # a rollout frees a GPU before it takes one: the plan has handed out the whole budget
    assert d["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    sel = d["spec"]["selector"]["matchLabels"]
    assert all(d["spec"]["template"]["metadata"]["labels"][k] == v for k, v in sel.items())
    assert worker_deployment("e1", "serving", light, 1)["spec"]["selector"] != sel


def test_only_the_router_holds_a_service_account_token():
    light, _ = models_of(SPEC)
    worker = worker_deployment("e1", "serving", light, 1)["spec"]["template"]["spec"]
    assert worker["automountServiceAccountToken"] is False and worker["enableServiceLinks"] is False
    router = router_deployment("e1", "serving", 1)["spec"]["template"]["spec"]
    assert router["serviceAccountName"] == "e1-router" and "automountServiceAccountToken" not in router
    for pod in (worker, router):  # what Pod Security's restricted profile asks of every container
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_the_network_policy_admits_only_the_routers_to_the_inference_ports():
    light, _ = models_of(SPEC)
    policy = worker_network_policy("e1", "serving")["spec"]
    worker_labels = worker_deployment("e1", "serving", light, 1)["spec"]["template"]["metadata"]["labels"]
    router_labels = router_deployment("e1", "serving", 1)["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= worker_labels.items()
    inference, metrics = policy["ingress"]
    assert inference["from"][0]["podSelector"]["matchLabels"].items() <= router_labels.items()
    assert not inference["from"][0]["podSelector"]["matchLabels"].items() <= worker_labels.items()
    assert {p["port"] for p in inference["ports"]} == {8000, 8001}
    assert "from" not in metrics and [p["port"] for p in metrics["ports"]] == [8002]  # any scraper


def test_a_rate_that_cannot_be_planned_for_is_named():
    from hadis.operator.logic import rate_problem

    assert rate_problem(0.0) is None and rate_problem(3.5) is None
    assert rate_problem(float("nan")) == "Prometheus answered nan for the demand"
    assert rate_problem(float("inf")) == "Prometheus answered inf for the demand"
    assert rate_problem(-2.0) == "Prometheus answered a negative demand (-2 images/s)"


def test_images_come_from_the_model_then_the_cascade_then_the_operator():
    spec = {**SPEC, "workerImage": "reg.local/w:1", "router": {"image": "reg.local/r:1"}}
    spec["models"] = [{**SPEC["models"][0], "image": "reg.local/light:2"}, SPEC["models"][1]]
    images = images_of(spec, Images())
    assert images == Images(router="reg.local/r:1", worker="reg.local/w:1")
    assert images_of(SPEC, Images("op/r:9", "op/w:9")) == Images("op/r:9", "op/w:9")
    assert Images() == Images(ROUTER_IMAGE, WORKER_IMAGE)
    light, heavy = models_of(spec)
    assert (
        worker_deployment("e1", "s", light, 1, images.worker)["spec"]["template"]["spec"]["containers"][0]["image"]
        == "reg.local/light:2"
    )
    assert (
        worker_deployment("e1", "s", heavy, 1, images.worker)["spec"]["template"]["spec"]["containers"][0]["image"]
        == "reg.local/w:1"
    )
    assert (
        router_deployment("e1", "s", 1, images.router)["spec"]["template"]["spec"]["containers"][0]["image"]
        == "reg.local/r:1"
    )


def test_placement_reaches_router_and_worker_pods():
    tol = [{"key": "node.hadis.dev/local", "operator": "Exists", "effect": "NoSchedule"}]
    spec = {**SPEC, "placement": {"nodeSelector": {"pool": "gpu"}, "tolerations": tol}}
    placement = placement_of(spec)
    assert placement == {"nodeSelector": {"pool": "gpu"}, "tolerations": tol}
    assert placement_of(SPEC) == {} and placement_of({**SPEC, "placement": {"tolerations": []}}) == {}
    light, _ = models_of(spec)
    for dep in (
        worker_deployment("e1", "s", light, 1, placement=placement),
        router_deployment("e1", "s", 1, placement=placement),
    ):
        pod = dep["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"pool": "gpu"} and pod["tolerations"] == tol
    assert "nodeSelector" not in worker_deployment("e1", "s", light, 1)["spec"]["template"]["spec"]


def test_a_cpu_limit_sets_the_worker_threads():
    assert cpu_threads(None) is None and cpu_threads({"requests": {"cpu": "2"}}) is None
    assert cpu_threads({"limits": {"cpu": "1"}}) == 1
    assert cpu_threads({"limits": {"cpu": "1500m"}}) == 2
    assert cpu_threads({"limits": {"cpu": "100m"}}) == 1
    model = models_of(
        {"models": [{"name": "tiny-light", "workerSpec": "tiny-light", "resources": {"limits": {"cpu": "1"}}}]}
    )[0]
    env = worker_deployment("t", "s", model, 1)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "OMP_NUM_THREADS", "value": "1"} in env


def test_extra_worker_args_follow_the_operators_own():
    spec = {"models": [{"name": "tiny-light", "workerSpec": "tiny-light", "args": ["--min-batch-seconds", "0.25"]}]}
    args = worker_deployment("t", "s", models_of(spec)[0], 1)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:4] == ["worker", "serve", "--model", "tiny-light"]
    assert args[-2:] == ["--min-batch-seconds", "0.25"]


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


def test_router_watches_its_tiers_and_peers_with_a_role_for_just_that():
    from hadis.core.profile import load_profile

    profile = load_profile(ROOT / "profiles" / "tiny.yaml")
    caps = {m: tier_capacity(profile, m, 6.0, 2) for m in ("tiny-light", "tiny-heavy")}
    assert caps["tiny-light"].per_replica == 4.0 and caps["tiny-light"].base_s == 1.0  # 4 per 1 s batch
    assert caps["tiny-heavy"].per_replica == 4 / 3.0
    assert tier_capacity(profile, "tiny-heavy", 2.0, 1) is None  # no batch fits a 2 s SLO
    cfg = router_config("e1", "serving", "tiny-light", "tiny-heavy", 0.2, 0.3, 6.0, "64x64", capacities=caps,
                        router_replicas=3)  # fmt: skip
    assert parse_config(router_configmap("e1", "serving", cfg)["data"][ROUTER_CONFIG_KEY], "cm") == cfg
    assert (cfg.light.discovery.namespace, cfg.light.discovery.service) == ("serving", "e1-tiny-light")
    assert cfg.routers.replicas == 3 and cfg.routers.discovery.service == "e1-router"
    sa, role, binding = router_rbac("e1", "serving")
    assert role["rules"] == [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}
    ]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "serving"}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    pod = router_deployment("e1", "serving", 1)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]


def test_a_learned_router_mounts_its_model_configmap():
    pod = router_deployment("e1", "serving", 1, model_configmap="e1-router-model")["spec"]["template"]["spec"]
    assert {"name": "router-model", "configMap": {"name": "e1-router-model"}} in pod["volumes"]
    mounts = pod["containers"][0]["volumeMounts"]
    assert {"name": "router-model", "mountPath": "/etc/hadis-model", "readOnly": True} in mounts
    plain = router_deployment("e1", "serving", 1)["spec"]["template"]["spec"]
    assert all(v["name"] != "router-model" for v in plain["volumes"])
    assert plain["containers"][0]["resources"]["requests"]["cpu"] == "500m"  # the default
    small = {"requests": {"cpu": "100m"}}
    sized = router_deployment("e1", "serving", 1, resources=small)["spec"]["template"]["spec"]
    assert sized["containers"][0]["resources"] == small


def test_a_terminating_worker_serves_on_then_drains_within_its_grace_period():
    light, _ = models_of(SPEC)
    drain = drain_seconds(6.0, 9.5)
    assert drain == 15 and drain_seconds(6.0, None) == 11
    pod = worker_deployment("e1", "serving", light, 1, drain_s=drain)["spec"]["template"]["spec"]
    c = pod["containers"][0]
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert c["args"][c["args"].index("--drain-seconds") + 1] == "15"
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain  # SIGKILL only after both


def test_a_model_cache_adds_a_fetch_step_and_the_worker_loads_from_it():
    assert model_cache_volume({}) is None
    spec = {**SPEC, "modelCache": {"hostPath": {"path": "/var/cache/models"}}}
    spec["models"] = [{**SPEC["models"][0], "revision": "abc123"}]
    (light,) = models_of(spec)
    volume = model_cache_volume(spec)
    pod = worker_deployment("e1", "serving", light, 1, cache=volume)["spec"]["template"]["spec"]
    assert {"name": "model-cache", "hostPath": {"path": "/var/cache/models", "type": "DirectoryOrCreate"}} in pod[
        "volumes"
    ]
    (init,) = pod["initContainers"]
    assert init["args"] == ["worker", "fetch", "--model", "sdxl-lightning-2step", "--cache", "/models/weights",
                            "--revision", "abc123"]  # fmt: skip
    assert "nvidia.com/gpu" not in str(init["resources"])  # fetching needs no GPU
    args = pod["containers"][0]["args"]
    assert args[args.index("--weights-cache") + 1] == "/models/weights" and "abc123" in args
    pvc = model_cache_volume({"modelCache": {"persistentVolumeClaim": {"claimName": "weights"}}})
    assert pvc == {"name": "model-cache", "persistentVolumeClaim": {"claimName": "weights"}}
    plain = worker_deployment("e1", "serving", light, 1)["spec"]["template"]["spec"]
    assert "initContainers" not in plain and "--weights-cache" not in plain["containers"][0]["args"]


def test_plan_replicas_and_status_from_the_shipped_profile(data_dir):
    import datetime as dt

    from hadis.core.bundle import parse_configmap
    from hadis.operator.logic import condition, decide, merge_conditions, plan_status, same_plan

    root = data_dir.parents[1]
    bundle = parse_configmap((root / "profiles" / "configmap-l40s.yaml").read_text())
    spec = yaml.safe_load((root / "crds" / "examples" / "cascade-e1.yaml").read_text())["spec"]
    ps = CascadeSpec.parse(spec)
    (low, r_low), (high, r_high) = (
        (d.plan, d.replicas) for d in (decide(bundle, ps, 0.5, None), decide(bundle, ps, 40.0, None))
    )
    for plan, reps in ((low, r_low), (high, r_high)):
        assert reps[plan.config.light] >= 1 and reps[plan.config.heavy] >= 1  # both tiers can answer
    zero = decide(bundle, ps, 0.0, None)
    assert all(zero.replicas[m] >= 1 for m in (zero.plan.config.light, zero.plan.config.heavy))
    assert sum(r_high.values()) <= 16 and sum(r_low.values()) >= 2
    assert {m for m, n in r_high.items() if n} <= {high.config.light, high.config.heavy}
    now = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
    doc = plan_status(high, r_high, now)
    assert doc["pair"] == f"{high.config.light} -> {high.config.heavy}" and doc["plannedAt"] == "2026-11-25T00:00:00Z"
    later = plan_status(high, r_high, now + dt.timedelta(seconds=10))
    assert same_plan(doc, later)  # only the time moved: no status write
    assert r_low != r_high and not same_plan(doc, plan_status(low, r_low, now))  # another split: a change
    c1 = condition("Ready", True, "Planned", "ok", 1, now)
    c2 = condition("Ready", True, "Planned", "ok", 2, now + dt.timedelta(minutes=1), [c1])
    assert c2["lastTransitionTime"] == c1["lastTransitionTime"]  # status unchanged: no transition
    c3 = condition("Ready", False, "ProfileMissing", "gone", 3, now + dt.timedelta(minutes=2), [c2])
    assert c3["lastTransitionTime"] != c1["lastTransitionTime"]
    merged = merge_conditions([c2], [c3, condition("Degraded", True, "ProfileMissing", "gone", 3, now)])
    assert [c["type"] for c in merged] == ["Ready", "Degraded", "Stalled"] and merged[0]["status"] == "False"
    assert merged[2]["status"] == "False"  # a missing profile may yet be created: not stalled


def test_kstatus_conditions_follow_progressing_and_terminal_problems():
    from hadis.operator.logic import WorkerRollout as W
    from hadis.operator.logic import apply_failed, condition, merge_conditions, rollout_condition

    now = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
    later = now + dt.timedelta(minutes=1)

    def by_type(conds):
        return {c["type"]: c for c in conds}

    scaling = merge_conditions([], [rollout_condition([W("light", 2, 1, 2, True)], 4, now),
                                    condition("Ready", True, "Planned", "ok", 4, now)])  # fmt: skip
    rec, stalled = by_type(scaling)["Reconciling"], by_type(scaling)["Stalled"]
    assert (rec["status"], rec["reason"], rec["message"], rec["observedGeneration"]) == (
        "True",
        "ScalingWorkers",
        "light 1/2 ready",
        4,
    )
    assert stalled["status"] == "False"
    done = merge_conditions(scaling, [rollout_condition([W("light", 2, 2, 2, True)], 4, later, scaling)])
    rec = by_type(done)["Reconciling"]
    assert (rec["status"], rec["reason"], rec["lastTransitionTime"]) == ("False", "Reconciled", "2026-11-25T00:01:00Z")
    again = merge_conditions(done, [condition("Ready", True, "Planned", "ok", 4, later + dt.timedelta(minutes=5))])
    assert by_type(again)["Reconciling"]["lastTransitionTime"] == rec["lastTransitionTime"]  # no transition
    refused = merge_conditions(done, apply_failed("Deployment x: forbidden", 5, later, done))
    st = by_type(refused)["Stalled"]
    assert (st["status"], st["reason"], st["message"], st["observedGeneration"]) == (
        "True",
        "ApplyFailed",
        "Deployment x: forbidden",
        5,
    )
    assert [c["type"] for c in refused] == ["Ready", "Progressing", "Degraded", "Reconciling", "Stalled"]


def test_progressing_while_any_worker_is_short_of_its_replicas():
    from hadis.operator.logic import WorkerRollout, condition_reason, rollout_condition

    now = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
    done = WorkerRollout("light", desired=3, ready=3, updated=3, current=True)
    scaling = WorkerRollout("heavy", desired=4, ready=2, updated=4, current=True)
    c = rollout_condition([done, scaling], 5, now)
    assert (c["type"], c["status"], c["reason"]) == ("Progressing", "True", "ScalingWorkers")
    assert c["message"] == "heavy 2/4 ready"  # only the ones still moving
    # a Deployment whose controller has not yet seen the new spec is still progressing
    stale = WorkerRollout("light", desired=3, ready=3, updated=3, current=False)
    assert rollout_condition([stale], 5, now)["status"] == "True"
    # scaling down counts too, until the extra pods are gone
    assert rollout_condition([WorkerRollout("light", 1, 2, 1, True)], 5, now)["status"] == "True"
    complete = rollout_condition([done, WorkerRollout("heavy", 0, 0, 0, True)], 5, now, [c])
    assert (complete["status"], complete["reason"], complete["message"]) == (
        "False",
        "RolloutComplete",
        "all 3 worker replicas ready",
    )
    assert condition_reason([c], "Progressing") == "ScalingWorkers"
    assert condition_reason([complete], "Progressing") is None  # False conditions have no live reason


def test_plan_conditions_ready_and_degraded_follow_feasibility():
    from hadis.core.bundle import parse_configmap
    from hadis.operator.logic import make_plan, plan_conditions

    bundle = parse_configmap((ROOT / "profiles" / "configmap-l40s.yaml").read_text())
    spec = CascadeSpec.parse(yaml.safe_load((ROOT / "crds" / "examples" / "cascade-e1.yaml").read_text())["spec"])
    now = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
    ready, degraded = plan_conditions(make_plan(bundle, spec, 2.0), 1, now)
    assert (ready["status"], ready["reason"], degraded["status"]) == ("True", "Planned", "False")
    ready, degraded = plan_conditions(make_plan(bundle, spec, 500.0), 1, now)
    assert (ready["reason"], degraded["status"], degraded["reason"]) == ("BudgetInfeasible", "True", "BudgetInfeasible")


def test_condition_messages_do_not_move_with_demand_noise():
    """Status is rewritten only when a condition changes: scrape noise in the demand must not."""
    from hadis.core.bundle import parse_configmap
    from hadis.operator.logic import make_plan, plan_conditions

    bundle = parse_configmap((ROOT / "profiles" / "configmap-l40s.yaml").read_text())
    spec = CascadeSpec.parse(yaml.safe_load((ROOT / "crds" / "examples" / "cascade-e1.yaml").read_text())["spec"])
    now = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
    for low, high in ((1.0, 1.07), (500.0, 530.0)):
        a, b = make_plan(bundle, spec, low), make_plan(bundle, spec, high)
        assert a.config == b.config and a.summary() != b.summary()
        assert plan_conditions(a, 1, now) == plan_conditions(b, 1, now)
    feasible, infeasible = (
        plan_conditions(make_plan(bundle, spec, 1.0), 1, now),
        plan_conditions(make_plan(bundle, spec, 500.0), 1, now),
    )
    assert "meets the 6 s SLO" in feasible[0]["message"]
    assert "no configuration meets the 6 s SLO" in infeasible[1]["message"] and "16 GPUs" in infeasible[1]["message"]


def test_rollout_and_unschedulable_read_the_api_objects():
    from hadis.operator.logic import WorkerRollout, rollout_of, unschedulable

    dep = {
        "metadata": {"name": "e1-light", "generation": 3, "labels": {MODEL_LABEL: "light"}},
        "spec": {"replicas": 3},
        "status": {"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 3},
    }
    assert rollout_of(dep) == WorkerRollout("light", desired=3, ready=3, updated=3, current=False)
    fresh = {"metadata": {"name": "e1-heavy", "generation": 1}, "spec": {"replicas": 0}, "status": {}}
    assert rollout_of(fresh) == WorkerRollout("e1-heavy", 0, 0, 0, False)
    pending = {"status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}}
    assert unschedulable(pending)
    assert not unschedulable({"status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}})
    assert not unschedulable({"status": {}})


# ------------------------------------------------------------------------------ surge clock


def test_surge_spec_fills_what_a_cascade_leaves_out_from_the_crd_defaults():
    """A cascade that sets one surge field gets that field and the CRD's defaults for the rest
    (what the API server would fill in); ``enabled: false`` turns early re-plans off."""

    crd = yaml.safe_load((ROOT / "crds" / "diffusioncascades.serving.hadis.dev.yaml").read_text())
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    defaults = {k: v["default"] for k, v in props["planner"]["properties"]["surge"]["properties"].items()}
    s = surge_spec({"planner": {"surge": {"riseRatio": 2.0, "window": "9s"}}})
    assert s is not None
    assert (s.settings.rise_ratio, s.window) == (2.0, "9s")  # what the cascade set
    assert s.check_s == defaults["checkSeconds"] and s.settings.cooldown_s == defaults["cooldownSeconds"]
    assert s.settings.min_rise_rps == defaults["minRiseRps"] and s.settings.fall_ratio == defaults["fallRatio"]
    assert s.settings.scale_down_delay_s == defaults["scaleDownDelaySeconds"]
    assert surge_spec({}) == surge_spec({"planner": {"surge": dict(defaults)}})  # omitted = the CRD's defaults
    assert surge_spec({"planner": {"surge": {"enabled": False}}}) is None


def test_a_rise_settles_over_the_rate_window_the_replans_read():
    """The demand counts as rising for one window of the rate the re-plans read: the surge
    checks' window, or the interval's without early re-plans."""
    import pytest

    from hadis.operator.spec import duration_seconds

    assert parsed({}).rise_settle_s == 60.0  # surge.window 1m
    assert parsed({"planner": {"surge": {"window": "90s"}}}).rise_settle_s == 90.0
    off = {"planner": {"surge": {"enabled": False}}, "prometheus": {"window": "2m"}}
    assert parsed(off).rise_settle_s == 120.0
    assert (duration_seconds("500ms"), duration_seconds("1h")) == (0.5, 3600.0)
    with pytest.raises(ValueError, match="not a duration"):
        duration_seconds("1m30s")


def test_replan_clock_replans_early_on_a_rise_and_on_the_interval_otherwise():
    from hadis.operator.logic import ReplanClock

    spec = {"planner": {"surge": {"checkSeconds": 2, "cooldownSeconds": 0, "scaleDownDelaySeconds": 20}}}
    clock = ReplanClock.start(10.0, surge_spec(spec), now=0.0, planned_rate=1.0)
    assert clock.step_s == 2 and clock.window == "1m"
    assert clock.tick(2.0, 1.1) is None  # quiet: no re-plan, no API calls
    assert clock.tick(4.0, 1.0) is None
    rate, why = clock.tick(6.0, 8.0)  # the surge: planned at once, 4 s before the interval
    assert why == "rise" and rate > 4.0
    clock.tick(8.0, 8.0)
    at_interval = clock.tick(10.0, 8.0)
    assert at_interval is not None and at_interval[0] > 6.0  # planned (a further rise or the timer)
    # The load drops to 1 req/s at 12 s: capacity is held on the intervals until the fall has
    # lasted 20 s, then released.
    decisions = {t: clock.tick(float(t), 1.0) for t in range(12, 52, 2)}
    falls = [t for t, d in decisions.items() if d and d[1] == "fall"]
    assert falls and falls[0] >= 12 + 20 and decisions[falls[0]][0] < 4.0
    held = [d for t, d in decisions.items() if d and t < falls[0]]
    assert held and all(why == "timer" and rate > 6.0 for rate, why in held)


def test_replan_clock_checks_at_least_as_often_as_the_interval():
    """Found by the operator fuzz: ``checkSeconds: 60`` with ``intervalSeconds: 1`` re-planned
    once a minute."""
    from hadis.operator.logic import ReplanClock

    clock = ReplanClock.start(1.0, surge_spec({"planner": {"surge": {"checkSeconds": 60}}}), now=0.0, planned_rate=1.0)
    assert clock.step_s == 1.0
    assert [clock.tick(float(t), 1.0) for t in (1, 2, 3)] == [(1.0, "timer")] * 3


def test_replan_clock_without_surge_plans_on_the_interval_and_reports_metric_failures():
    from hadis.operator.logic import ReplanClock

    clock = ReplanClock.start(10.0, None, now=0.0)
    assert clock.step_s == 10.0 and clock.window is None
    assert clock.tick(10.0, 3.0) == (3.0, "timer")
    assert clock.tick(20.0, None) == (None, "timer")  # the failure is reported, the plan kept


def test_status_plan_records_the_trigger_but_a_trigger_alone_is_no_change():
    from hadis.core.bundle import from_configmap
    from hadis.operator.logic import decide, plan_status, same_plan

    cm = yaml.safe_load((ROOT / "profiles" / "configmap-l40s.yaml").read_text())
    bundle = from_configmap(cm, "test")
    spec = yaml.safe_load((ROOT / "crds" / "examples" / "cascade-e1.yaml").read_text())["spec"]
    plan, replicas = (lambda d: (d.plan, d.replicas))(decide(bundle, CascadeSpec.parse(spec), 4.0, None))
    now = dt.datetime(2026, 1, 1)
    a, b = plan_status(plan, replicas, now, "rise"), plan_status(plan, replicas, now, "timer")
    assert a["trigger"] == "rise" and same_plan(a, b)


def test_operator_plans_count_the_gpus_it_would_move():
    from hadis.core.bundle import from_configmap
    from hadis.operator.logic import current_gpus, make_plan

    cm = yaml.safe_load((ROOT / "profiles" / "configmap-l40s.yaml").read_text())
    bundle = from_configmap(cm, "test")
    doc = yaml.safe_load((ROOT / "crds" / "examples" / "cascade-e1.yaml").read_text())["spec"]
    doc["planner"]["objective"] = {"spareGpus": "Keep"}  # the whole budget: every split of it serves
    spec = CascadeSpec.parse(doc)
    assert current_gpus(None, models_of(doc)) is None
    now = current_gpus({"replicas": {"sdxl-lightning-2step": 2, "sd3.5-large-turbo": 14}}, models_of(doc))
    assert now == {"sdxl-lightning-2step": 2, "sd3.5-large-turbo": 14, "sd3.5-medium": 0, "sd3.5-large": 0}
    free = make_plan(bundle, spec, 2.0)  # at 2 req/s, from nothing: 1 light GPU, 15 heavy
    kept = make_plan(bundle, spec, 2.0, now)

    def moved(plan) -> int:
        return sum(max(0, plan.gpus(m) - now[m]) for m in now)

    assert moved(free) >= 1  # planning from nothing would move a GPU ...
    assert moved(kept) == 0 and {m: kept.gpus(m) for m in now} == now  # ... the current split serves as well
    assert kept.feasible and (kept.config.light, kept.config.heavy) == (free.config.light, free.config.heavy)


def e1_with(objective=None, per_replica=None) -> dict:
    doc = yaml.safe_load((ROOT / "crds" / "examples" / "cascade-e1.yaml").read_text())
    for m in doc["spec"]["models"]:
        m["gpusPerReplica"] = (per_replica or {}).get(m["name"], 1)
    if objective is not None:
        doc["spec"]["planner"]["objective"] = objective
    return doc


def test_the_operator_deploys_what_it_plans_within_the_budget():
    """gpusPerReplica 2 on the heaviest models: whole replicas, never outside gpuBudget, both
    tiers served, and a trickle does not hold the whole budget."""
    from hadis.core.bundle import parse_configmap
    from hadis.operator.logic import decide, plan_status

    bundle = parse_configmap((ROOT / "profiles" / "configmap-l40s.yaml").read_text())
    per = {"sd3.5-medium": 2, "sd3.5-large": 2, "sd3.5-large-turbo": 2}
    spec = CascadeSpec.parse(e1_with(per_replica=per)["spec"])
    for rate in (0.5, 5, 20, 40, 80):
        d = decide(bundle, spec, rate, None)
        gpus = sum(n * per.get(m, 1) for m, n in d.replicas.items())
        assert spec.gpu_min <= gpus <= spec.gpu_max, (rate, d.replicas)
        assert d.replicas[d.plan.config.light] >= 1 and d.replicas[d.plan.config.heavy] >= 1
        assert {a.model: a.gpus for a in d.plan.allocations} == {
            a.model: d.replicas[a.model] * per.get(a.model, 1) for a in d.plan.allocations
        }  # the status describes what is deployed
        assert plan_status(d.plan, d.replicas, dt.datetime(2026, 1, 1))["gpus"] == gpus
        if rate == 0.5:
            assert gpus < 16
    keep = CascadeSpec.parse(e1_with({"spareGpus": "Keep"}, per)["spec"])
    assert decide(bundle, keep, 0.5, None).plan.total_gpus == 16  # Keep spends the budget


def test_a_max_fid_objective_buys_the_fewest_gpus_that_reach_it():
    from hadis.core.bundle import parse_configmap
    from hadis.operator.logic import decide

    bundle = parse_configmap((ROOT / "profiles" / "configmap-l40s.yaml").read_text())
    best = decide(bundle, CascadeSpec.parse(e1_with()["spec"]), 10.0, None).plan
    loose = decide(bundle, CascadeSpec.parse(e1_with({"maxFid": 29.8})["spec"]), 10.0, None).plan
    assert best.feasible and loose.feasible and loose.objective_met
    assert loose.predicted_quality <= 29.8 and loose.total_gpus < best.total_gpus
    assert loose.predicted_quality >= best.predicted_quality  # fewer GPUs, no better FID
    unreachable = decide(bundle, CascadeSpec.parse(e1_with({"maxFid": 1.0})["spec"]), 10.0, None).plan
    assert not unreachable.objective_met and unreachable.config == best.config and unreachable.reason


def test_converge_is_one_planning_pass_for_reconcile_and_replan():
    from hadis.core.bundle import parse_configmap
    from hadis.operator.logic import WorkerRollout, converge, merge_conditions, rollout_condition

    bundle = parse_configmap((ROOT / "profiles" / "configmap-l40s.yaml").read_text())
    spec = e1_with()["spec"]
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    first = converge(typed(spec), "e1", "serving", bundle, 0.5, {}, [], 3, now, reconcile=True)
    assert first.status is not None and first.status["observedGeneration"] == 3
    kinds = sorted({o["kind"] for o in first.objects})
    assert kinds == ["ConfigMap", "Deployment", "NetworkPolicy", "Role", "RoleBinding", "Service", "ServiceAccount"]
    off = {**spec, "networkPolicy": {"enabled": False}}
    assert "NetworkPolicy" not in {o["kind"] for o in converge(typed(off), "e1", "serving", bundle, 0.5, {}, [], 3, now,
                                                                   reconcile=True).objects}  # fmt: skip
    workers = {o["metadata"]["name"]: o["spec"]["replicas"] for o in first.objects if o["kind"] == "Deployment"}
    assert (
        workers["e1-" + first.decision.plan.config.light] == first.decision.replicas[first.decision.plan.config.light]
    )
    assert [r for r, _ in first.events] == ["Planned"]
    done = [WorkerRollout(m, n, n, n, True) for m, n in first.decision.replicas.items()]
    # what the handler does after applying: the rollout it reads back goes into the conditions
    folded = merge_conditions(first.status["conditions"], [rollout_condition(done, 3, now)])
    status = {**first.status, "conditions": folded}
    # The same demand again: nothing to apply, nothing to write, no event.
    idle = converge(
        CascadeSpec.parse(spec), "e1", "serving", bundle, 0.5, status, done, 3, now + dt.timedelta(seconds=5)
    )
    assert (idle.objects, idle.status, idle.events) == ((), None, ())
    # A reconcile (the spec changed) applies everything, with no event when the plan is the same.
    again = converge(typed(spec), "e1", "serving", bundle, 0.5, status, done, 4, now, reconcile=True)
    assert again.objects and again.status and again.events == ()
    # A rise: the objects, a status naming the trigger, and a Replanned event saying why.
    rise = converge(typed(spec), "e1", "serving", bundle, 8.0, status, done, 3, now, trigger="rise")
    assert rise.objects and rise.status["plan"]["trigger"] == "rise"
    assert rise.events[0][0] == "Replanned" and rise.events[0][1].startswith("rise, 8.00 images/s: [hadis]")
    assert rise.status["plan"]["gpus"] == rise.decision.plan.total_gpus > status["plan"]["gpus"]


def test_every_status_plan_field_is_in_the_crd_schema():
    """The API server prunes unknown status fields: one missing from the schema would differ on
    every re-plan, and the operator would rewrite an idle cascade forever."""
    from hadis.core.bundle import parse_configmap
    from hadis.operator.logic import decide, plan_status

    crd = yaml.safe_load((ROOT / "crds" / "diffusioncascades.serving.hadis.dev.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["plan"]
    bundle = parse_configmap((ROOT / "profiles" / "configmap-l40s.yaml").read_text())
    d = decide(bundle, CascadeSpec.parse(e1_with()["spec"]), 4.0, None)
    doc = plan_status(d.plan, d.replicas, dt.datetime(2026, 1, 1), "rise")
    assert set(doc) <= set(schema["properties"]), set(doc) - set(schema["properties"])


def test_a_refused_apply_waits_for_a_new_spec_or_plan():
    """ApplyFailed stays until a reconcile or a different plan: no flip back to Ready, no retries."""
    from hadis.core.bundle import parse_configmap
    from hadis.operator.logic import apply_failed, converge, decide, merge_conditions, plan_status

    bundle = parse_configmap((ROOT / "profiles" / "configmap-l40s.yaml").read_text())
    spec = e1_with()["spec"]
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    d = decide(bundle, CascadeSpec.parse(spec), 0.5, None)
    failed = merge_conditions([], apply_failed("Service serving/e1-x: invalid", 2, now))
    status = {"plan": plan_status(d.plan, d.replicas, now), "conditions": failed}
    same = converge(typed(spec), "e1", "serving", bundle, 0.5, status, [], 2, now)
    assert (same.objects, same.status) == ((), None)  # the same plan: nothing retried or rewritten
    moved = converge(typed(spec), "e1", "serving", bundle, 8.0, status, [], 2, now, trigger="rise")
    assert moved.objects  # a new plan is applied (it may build valid objects)
    again = converge(typed(spec), "e1", "serving", bundle, 0.5, status, [], 3, now, reconcile=True)
    assert again.objects and {c["reason"] for c in again.status["conditions"]} >= {"Planned", "AsPlanned"}


def test_a_failed_rate_query_is_worded_by_what_went_wrong():
    import requests

    from hadis.operator.prom import metrics_failure

    assert metrics_failure(requests.ReadTimeout("read timed out"), 2.0) == "Prometheus did not answer within 2s"
    assert metrics_failure(requests.ConnectionError("refused"), 5) == "Prometheus unreachable (ConnectionError)"
    bad = metrics_failure(ValueError("HTTP Status Code 400 (bad_data)"), 5)
    assert bad == "Prometheus answered HTTP 400"  # the status, never the answer's body
    assert metrics_failure(KeyError("secret-ish"), 5) == "Prometheus query failed (KeyError)"


def test_pending_worker_pods_are_said_once_and_the_conditions_then_stay():
    """Found by the operator fuzz: the scheduling problem and the plan's own conditions were
    written by two steps of one re-plan, so every re-plan flipped Ready and wrote twice."""
    from hadis.core.bundle import parse_configmap
    from hadis.operator.logic import converge

    bundle = parse_configmap((ROOT / "profiles" / "configmap-l40s.yaml").read_text())
    spec = e1_with()["spec"]
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    status = converge(typed(spec), "e1", "serving", bundle, 0.5, {}, [], 1, now, reconcile=True).status
    pending = converge(
        CascadeSpec.parse(spec), "e1", "serving", bundle, 0.5, status, [], 1, now, unschedulable=3
    ).status
    conds = {c["type"]: c for c in pending["conditions"]}
    assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == ("False", "PodsUnschedulable")
    assert conds["Degraded"]["message"].startswith("3 worker pod(s) cannot be scheduled")
    later = now + dt.timedelta(seconds=5)
    assert converge(typed(spec), "e1", "serving", bundle, 0.5, pending, [], 1, later, unschedulable=3).status is None
    cleared = converge(typed(spec), "e1", "serving", bundle, 0.5, pending, [], 1, later).status
    assert {c["type"]: c["status"] for c in cleared["conditions"]}["Ready"] == "True"


def test_ready_follows_the_last_plan_once_a_passing_problem_is_gone():
    from hadis.operator.logic import condition, ready_once_cleared

    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    plan = {"pair": "a -> b", "feasible": True}
    pending = [condition("Ready", False, "PodsUnschedulable", "2 worker pod(s) ...", 1, now)]
    (ready,) = ready_once_cleared(pending, plan, 1, now)
    assert (ready["status"], ready["reason"]) == ("True", "Planned") and "a -> b" in ready["message"]
    refused = [condition("Ready", False, "ApplyFailed", "Deployment ...", 1, now)]
    assert ready_once_cleared(refused, plan, 1, now) == []  # still true: only a new spec clears it
    assert ready_once_cleared(pending, None, 1, now) == []  # nothing deployed yet


def _tiny_objects(router: dict, **spec) -> dict[tuple[str, str], dict]:
    """What the tiny example cascade owns, with ``router`` (and ``spec``) over its spec."""
    from hadis.core.bundle import parse_configmap
    from hadis.operator import logic

    bundle = parse_configmap((ROOT / "profiles" / "configmap-tiny.yaml").read_text())
    doc = yaml.safe_load((ROOT / "crds" / "examples" / "cascade-tiny.yaml").read_text())["spec"]
    spec_ = typed({**doc, **spec, "router": {**doc.get("router", {}), **router}})
    d = logic.decide(bundle, spec_, 1.0, None)
    owned = builders.owned_objects(spec_, "tiny", "team-a", bundle, d.plan, d.replicas, Images())
    return {(o["kind"], o["metadata"]["name"]): o for o in owned}


def test_api_keys_mount_the_named_secret_and_the_router_config_asks_for_them():
    objs = _tiny_objects({"auth": {"apiKeySecretName": "team-a-keys", "requestsPerMinute": 120}})
    pod = objs[("Deployment", "tiny-router")]["spec"]["template"]["spec"]
    assert {"name": "api-keys", "secret": {"secretName": "team-a-keys", "defaultMode": 0o444}} in pod["volumes"]
    mounts = pod["containers"][0]["volumeMounts"]
    assert {"name": "api-keys", "mountPath": "/etc/hadis-api-keys", "readOnly": True} in mounts
    cfg = parse_config(objs[("ConfigMap", "tiny-router")]["data"]["router.yaml"], "router.yaml")
    assert cfg.auth is not None and (cfg.auth.api_keys_dir, cfg.auth.requests_per_minute, cfg.auth.burst) == (
        "/etc/hadis-api-keys", 120.0, 10
    )  # fmt: skip
    plain = _tiny_objects({})
    assert parse_config(plain[("ConfigMap", "tiny-router")]["data"]["router.yaml"], "r").auth is None
    assert all(
        v["name"] != "api-keys" for v in plain[("Deployment", "tiny-router")]["spec"]["template"]["spec"]["volumes"]
    )


def test_the_router_serves_metrics_on_an_admin_port_apart_from_inference():
    objs = _tiny_objects({})
    c = objs[("Deployment", "tiny-router")]["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8080, "metrics": 9090}
    assert c["args"][c["args"].index("--admin-port") + 1] == "9090"
    assert c["readinessProbe"]["httpGet"]["port"] == "http"  # ready: the inference port answers
    svc = objs[("Service", "tiny-router")]["spec"]["ports"]
    assert {p["name"]: p["targetPort"] for p in svc} == {"http": "http", "metrics": "metrics"}


def test_allow_from_makes_a_router_network_policy_that_keeps_the_metrics_port_open():
    peers = [{"namespaceSelector": {"matchLabels": {"team": "a"}}}, {"ipBlock": {"cidr": "10.0.0.0/8"}}]
    objs = _tiny_objects({"allowFrom": peers}, networkPolicy={"enabled": False})
    policy = objs[("NetworkPolicy", "tiny-router")]["spec"]
    router_labels = objs[("Deployment", "tiny-router")]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= router_labels.items()
    inference, admin = policy["ingress"]
    assert inference == {"from": peers, "ports": [{"protocol": "TCP", "port": 8080}]}
    assert admin == {"ports": [{"protocol": "TCP", "port": 9090}]}  # any scraper
    assert ("NetworkPolicy", "tiny-workers") not in objs  # turned off on its own
    assert not any(k[0] == "NetworkPolicy" and k[1] == "tiny-router" for k in _tiny_objects({}))


def test_a_network_policy_turned_off_is_pruned():
    on = _tiny_objects({"allowFrom": [{"podSelector": {}}]})
    taken = {key: "tiny" for key in on}
    off = list(_tiny_objects({}, networkPolicy={"enabled": False}).values())
    assert [k for k in builders.prunable(taken, "tiny", off) if k[0] == "NetworkPolicy"] == [
        ("NetworkPolicy", "tiny-router"), ("NetworkPolicy", "tiny-workers")
    ]  # fmt: skip


def test_scale_to_zero_adds_a_wake_lease_the_router_alone_may_annotate_and_a_cold_start_config():
    objs = _tiny_objects({}, scaleToZero={"enabled": True, "idleSeconds": 60})
    lease = objs[("Lease", "tiny-wake")]
    assert lease["metadata"]["labels"]["app.kubernetes.io/component"] == "wake"
    role = objs[("Role", "tiny-router")]
    assert {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": ["tiny-wake"],
        "verbs": ["get", "patch"],
    } in role["rules"]
    cfg = parse_config(objs[("ConfigMap", "tiny-router")]["data"]["router.yaml"], "router.yaml")
    assert cfg.cold_start is not None
    assert (cfg.cold_start.timeout_s, cfg.cold_start.namespace, cfg.cold_start.lease) == (180.0, "team-a", "tiny-wake")
    plain = _tiny_objects({})
    assert ("Lease", "tiny-wake") not in plain and len(plain[("Role", "tiny-router")]["rules"]) == 1
    assert parse_config(plain[("ConfigMap", "tiny-router")]["data"]["router.yaml"], "r").cold_start is None


def test_each_tier_tells_the_router_its_slots_and_whether_to_hold():
    objs = _tiny_objects({})
    cfg = parse_config(objs[("ConfigMap", "tiny-router")]["data"]["router.yaml"], "router.yaml")
    assert cfg.limits.hold and cfg.light.capacity is not None
    assert cfg.light.capacity.slots == 8  # the tiny profile's best batch within the SLO, and the next
    off = _tiny_objects({"holdRequests": False})
    assert not parse_config(off[("ConfigMap", "tiny-router")]["data"]["router.yaml"], "r").limits.hold


def test_an_asleep_cascade_keeps_its_plan_with_every_worker_at_zero():
    from hadis.core.bundle import parse_configmap
    from hadis.operator.logic import converge

    bundle = parse_configmap((ROOT / "profiles" / "configmap-tiny.yaml").read_text())
    doc = yaml.safe_load((ROOT / "crds" / "examples" / "cascade-tiny.yaml").read_text())["spec"]
    spec = typed({**doc, "scaleToZero": {"enabled": True}})
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    awake = converge(spec, "tiny", "ns", bundle, 1.0, {}, [], 1, now, reconcile=True)
    assert awake.status is not None and sum(awake.status["plan"]["replicas"].values()) > 0
    asleep = converge(spec, "tiny", "ns", bundle, 0.0, awake.status, [], 1, now, trigger="idle", asleep="t0")
    assert asleep.status is not None
    plan = asleep.status["plan"]
    assert set(plan["replicas"].values()) == {0} and plan["gpus"] == 0
    assert (plan["scaledToZero"], plan["wakeToken"], plan["pair"]) == (True, "t0", awake.status["plan"]["pair"])
    workers = [o for o in asleep.objects if o["kind"] == "Deployment" and "router" not in o["metadata"]["name"]]
    assert workers and {o["spec"]["replicas"] for o in workers} == {0}
    router = next(o for o in asleep.objects if o["kind"] == "Deployment" and "router" in o["metadata"]["name"])
    assert router["spec"]["replicas"] == 1  # the router stays, to hold the first requests
    woken = converge(spec, "tiny", "ns", bundle, 0.0, asleep.status, [], 1, now, trigger="wake")
    assert woken.status is not None and sum(woken.status["plan"]["replicas"].values()) > 0
    assert woken.status["plan"]["scaledToZero"] is None and woken.status["plan"]["wakeToken"] is None
    # (nulls: the status is merge-patched, and a key left out stayed "scaledToZero: true" on the real node)


def test_idle_watch_sleeps_after_an_idle_period_of_zero_and_wakes_on_a_new_token():
    from hadis.operator.logic import IdleWatch

    w = IdleWatch(idle_s=60, awake_since=0.0)
    assert not w.idle_due(30) and w.check(30, 0.0, "") is None  # not awake long enough
    assert w.check(70, None, "") is None  # no series is not idle
    assert w.check(70, 0.2, "") is None  # traffic
    assert w.check(70, 0.0, "") == "sleep" and w.asleep and w.token == ""
    assert w.check(80, None, "") is None  # still the token it slept with
    assert w.check(90, None, "2026-12-05T05:00:00Z") == "wake" and not w.asleep
    assert w.check(100, 0.0, "2026-12-05T05:00:00Z") is None  # just woken: awake for idle_s first
    assert w.check(151, 0.0, "2026-12-05T05:00:00Z") == "sleep" and w.token == "2026-12-05T05:00:00Z"


def test_a_ready_pods_start_is_measured_and_reaches_the_routers_capacity():
    from hadis.core.bundle import parse_configmap
    from hadis.operator.logic import pod_start, start_seconds

    def pod(model: str, created: str, ready: str | None, status: str = "True") -> dict:
        conds = [] if ready is None else [{"type": "Ready", "status": status, "lastTransitionTime": ready}]
        return {
            "metadata": {"labels": {MODEL_LABEL: model}, "creationTimestamp": created},
            "status": {"conditions": conds},
        }

    assert pod_start(pod("tiny-light", "2026-12-05T05:00:00Z", "2026-12-05T05:00:21Z")) == ("tiny-light", 21.0)
    assert pod_start(pod("tiny-light", "2026-12-05T05:00:00Z", None)) is None  # not Ready yet
    assert pod_start(pod("tiny-light", "2026-12-05T05:00:00Z", "2026-12-05T05:00:21Z", "False")) is None
    restarted = pod("tiny-light", "2026-12-05T05:00:00Z", "2026-12-05T07:00:00Z")
    restarted["status"]["containerStatuses"] = [{"name": "worker", "restartCount": 1}]
    assert pod_start(restarted) is None  # Ready again two hours later is no start time
    assert start_seconds([("a", 30.0), ("a", 12.0), ("a", 14.0), ("b", 5.0)]) == {"a": 14.0, "b": 5.0}
    bundle = parse_configmap((ROOT / "profiles" / "configmap-tiny.yaml").read_text())
    doc = yaml.safe_load((ROOT / "crds" / "examples" / "cascade-tiny.yaml").read_text())["spec"]
    from hadis.operator import logic

    d = logic.decide(bundle, typed(doc), 1.0, None)
    owned = builders.owned_objects(typed(doc), "tiny", "ns", bundle, d.plan, d.replicas, Images(), {"tiny-light": 14.0})
    cm = next(o for o in owned if o["kind"] == "ConfigMap")
    cfg = parse_config(cm["data"]["router.yaml"], "router.yaml")
    assert cfg.light.capacity.start_s == 14.0
    assert cfg.heavy.capacity.start_s is None  # not measured, and the tiny profile has no load time
