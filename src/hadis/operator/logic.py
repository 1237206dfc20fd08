"""The operator's decisions, free of I/O: plan from demand, replicas from a plan, status shapes.

The kopf handlers (``handlers.py``) read the cluster and Prometheus, call these, and write the
results. Everything here is unit-tested without a cluster.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hadis.contract import MODEL_LABEL
from hadis.core.bundle import Bundle
from hadis.core.demand import FastRiseEstimator
from hadis.core.pareto import planning_table
from hadis.core.planner import Demand, Objective, Plan, plan_cascade, plan_hadis_reference, swap_seconds
from hadis.core.surge import SurgeTrigger, climbing
from hadis.operator import builders
from hadis.operator.spec import CascadeSpec, ModelEntry, SurgeSpec

# The planner is asked for at least this rate: at exactly zero demand every row is "feasible"
# with no GPUs on some model, and a cascade must stay able to answer its first request.
MIN_PLANNING_RATE = 0.1
DEFAULT_IMAGES = builders.Images()  # this version's router and worker images


@dataclass
class IdleWatch:
    """When a scale-to-zero cascade goes to zero and when it wakes (``spec.scaleToZero``).

    Asleep, a new token on the wake Lease (a router found no pod for a request) wakes it; awake
    for ``idle_s`` at least, a measured rate of exactly zero over ``idle_s`` puts it to sleep
    (no series is not zero: that is MetricsUnavailable, and the workers stay)."""

    idle_s: float
    awake_since: float
    token: str | None = None  # the wake token it went to sleep with; None: awake

    @property
    def asleep(self) -> bool:
        return self.token is not None

    def check(self, now: float, idle_rate: float | None, token: str) -> str | None:
        """``sleep``, ``wake`` or None (nothing to do)."""
        if self.asleep:
            if token != self.token:
                self.token, self.awake_since = None, now
                return "wake"
            return None
        if idle_rate == 0.0 and self.idle_due(now):
            self.token = token
            return "sleep"
        return None

    def idle_due(self, now: float) -> bool:
        """Whether the idle rate is worth reading (awake long enough to sleep)."""
        return not self.asleep and now - self.awake_since >= self.idle_s


@dataclass(frozen=True)
class Decision:
    plan: Plan
    replicas: dict[str, int]  # model name -> worker replicas


def make_plan(
    bundle: Bundle, ps: CascadeSpec, rate_rps: float, current: Mapping[str, int] | None = None, rising: bool = False
) -> Plan:
    """The planner the spec asks for, on the profile's table, for an arrival rate: whole replicas
    (GPUs = replicas x ``gpusPerReplica``) within ``gpuBudget.min..max``, one of each tier of
    the pair at least, by ``spec.planner.objective``.

    ``current`` (GPUs per model now) makes the ``hadis`` plan count model-load time and prefer
    moving fewer GPUs (``plan_cascade``); ``rising`` (the rate is above the current plan's)
    keeps the current split's images/s; load times come from the profile. Only the spec's
    models are planned with (``bundle`` is the profile restricted to them, ``restricted``)."""
    demand = Demand(max(MIN_PLANNING_RATE, rate_rps))
    budget = dict(gpus_per_replica=ps.gpus_per_replica, min_gpus=ps.gpu_min)
    if ps.policy == "hadis-ref":
        return plan_hadis_reference(
            bundle.profile,
            bundle.table,
            ps.gpu_max,
            ps.slo_s,
            demand,
            spread=ps.fill_budget,
            serve_both=True,
            **budget,
        )
    swap = swap_seconds(bundle.profile) if current else None
    return plan_cascade(
        bundle.profile,
        _planning_table(bundle),
        ps.gpu_max,
        ps.slo_s,
        demand,
        current=current,
        swap_s=swap,
        objective=Objective(ps.max_fid),
        fill_budget=ps.fill_budget,
        rising=rising,
        **budget,
    )


def decide(
    bundle: Bundle, ps: CascadeSpec, rate_rps: float, status_plan: Mapping[str, Any] | None, rising: bool = False
) -> Decision:
    """A plan for ``rate_rps`` and its replicas, counting the GPUs it would move from the plan in
    the status; while the demand is ``rising`` (``rise``), keeping the images/s of its split."""
    plan = make_plan(bundle, ps, rate_rps, current_gpus(status_plan, ps.models), rising)
    return Decision(plan, replicas_for(plan, ps.models))


# A steady load read from Prometheus jitters by a few per cent between reads (scrape timing, the
# arrivals that fall either side of a scrape, held images counted as demand): a read within this
# share above the last rise's rate is that rate, not a new rise. Without it each new highest
# read of a steady load is a "rise" that starts the settle time again, and the re-balance after
# a step waits for the jitter's last record instead of one window (most likely why a 7 req/s
# step, 1m window, re-balanced 162 s in on a busy CI machine, against about 100 s before).
RATE_NOISE = 0.1


def rise(status_plan: Mapping[str, Any] | None, rate_rps: float, now: dt.datetime, settle_s: float) -> tuple[bool, str]:
    """(whether the demand is rising, the ``lastRiseTime`` the status keeps) (``surge.climbing``).

    It rises above the rate of the plan in the status (``demandRps``: a rising pass writes its
    rate even when the plan is the same, so the next pass compares with the latest rate) by more
    than ``RATE_NOISE``, and counts as rising for ``settle_s`` (the rate window) after the last
    pass that found it so."""
    plan = status_plan or {}
    planned = float(plan.get("demandRps") or 0.0) if status_plan else None
    stamp = str(plan.get("lastRiseTime") or "")
    rose_at = _time(stamp).timestamp() if stamp else None
    up, at = climbing(rate_rps, planned, rose_at, now.timestamp(), settle_s, RATE_NOISE)
    return up, stamp if at == rose_at else _stamp(now)


def current_gpus(status_plan: Mapping[str, Any] | None, models: Sequence[ModelEntry]) -> dict[str, int] | None:
    """GPUs per model under the plan in the status (None before the first plan)."""
    replicas = (status_plan or {}).get("replicas")
    if not replicas:
        return None
    return {m.name: int(replicas.get(m.name, 0)) * m.gpus_per_replica for m in models}


@dataclass
class ReplanClock:
    """When the re-plan daemon plans, and for which rate; the daemon only does the I/O.

    Without surge settings: every ``interval_s``, for the measured rate. With them: a check
    every ``surge.check_s`` feeds the fast-rise estimator and asks the surge trigger, which
    re-plans early on a rise and always on the interval (``hadis.core.surge``)."""

    interval_s: float
    surge: SurgeSpec | None
    last_timer: float
    trigger: SurgeTrigger | None = None
    estimator: FastRiseEstimator = field(default_factory=FastRiseEstimator)

    @classmethod
    def start(
        cls, interval_s: float, surge: SurgeSpec | None, now: float, planned_rate: float | None = None
    ) -> ReplanClock:
        """A clock from the last planned rate (from the status: a restart keeps holding capacity)."""
        trigger = None
        if surge is not None:
            since = now if planned_rate is not None else float("-inf")
            trigger = SurgeTrigger(surge.settings, planned_rate, since)
        return cls(interval_s, surge, now, trigger)

    @property
    def step_s(self) -> float:
        """Checks every ``check_s``, but never less often than the interval asks for a re-plan
        (``checkSeconds: 60`` with ``intervalSeconds: 1`` re-plans every second, not minute)."""
        return min(self.surge.check_s, self.interval_s) if self.surge else self.interval_s

    @property
    def window(self) -> str | None:
        """The rate window of the checks (None: the spec's ``prometheus.window``)."""
        return self.surge.window if self.surge else None

    def tick(self, now: float, rate: float | None) -> tuple[float | None, str] | None:
        """After one step with the measured rate (None: Prometheus failed): ``(rate to plan
        for, why)``, ``(None, "timer")`` to report the failure, or None to do nothing."""
        timer_due = now - self.last_timer >= self.interval_s - 0.05
        if timer_due:
            self.last_timer = now
        if rate is None or self.trigger is None or self.surge is None:
            return (rate, "timer") if timer_due else None
        estimate = self.estimator.update([rate * self.step_s], self.step_s)
        decision = self.trigger.check(now, estimate, timer_due=timer_due)
        return None if decision is None else (decision.rate, decision.reason)


_MEMO: dict[tuple[str, int, tuple[str, ...]], tuple[Bundle, Any]] = {}


def _per_bundle(kind: str, bundle: Bundle, key: tuple[str, ...], make: Callable[[], Any]) -> Any:
    """``make()`` once per bundle object and key. Keyed by identity: the handlers keep one
    Bundle per ConfigMap version, so a new version (a new object) is computed afresh; the
    oldest entries are dropped."""
    hit = _MEMO.get((kind, id(bundle), key))
    if hit is not None and hit[0] is bundle:
        return hit[1]
    if len(_MEMO) >= 64:
        _MEMO.pop(next(iter(_MEMO)))
    value = make()
    _MEMO[(kind, id(bundle), key)] = (bundle, value)
    return value


def _planning_table(bundle: Bundle) -> Any:
    """``planning_table`` once per bundle: densifying the grid costs ~200 ms, planning ~14 ms."""
    return _per_bundle("dense", bundle, (), lambda: planning_table(bundle.table))


def restricted(bundle: Bundle, names: Sequence[str]) -> Bundle | None:
    """``bundle.restricted(names)``, the same object on every pass, so a cascade that lists a
    subset of its profile has its dense table computed once, not on every re-plan."""
    return _per_bundle("restricted", bundle, tuple(names), lambda: bundle.restricted(names))


def replicas_for(plan: Plan, models: Sequence[ModelEntry]) -> dict[str, int]:
    """Worker replicas per model of the cascade: the plan's, 0 for a model outside its pair."""
    return {m.name: plan.replicas(m.name) for m in models}


def plan_status(
    plan: Plan, replicas: Mapping[str, int], now: dt.datetime, trigger: str = "", rose: str = ""
) -> dict[str, Any]:
    """The status's plan; ``rose``: its ``lastRiseTime`` (``rise``)."""
    c = plan.config
    active = {m: n for m, n in replicas.items() if n}
    return {
        "pair": f"{c.light} -> {c.heavy}",
        "light": c.light,
        "heavy": c.heavy,
        "routerRatio": round(c.router_ratio, 4),
        "discRatio": round(c.disc_ratio, 4),
        "replicas": dict(replicas),
        "gpus": plan.total_gpus,
        "replicasSummary": ", ".join(f"{m}={n}" for m, n in active.items()) or "none",
        "batch": {a.model: a.batch for a in plan.allocations if a.gpus},
        "predictedFid": None if math.isnan(plan.predicted_quality) else round(plan.predicted_quality, 3),
        "predictedLatencySeconds": None
        if not math.isfinite(plan.predicted_latency_s)
        else round(plan.predicted_latency_s, 3),
        "demandRps": round(plan.demand.rate, 3),
        **({"trigger": trigger} if trigger else {}),
        **({"lastRiseTime": rose} if rose else {}),
        "feasible": plan.feasible,
        "objectiveMet": plan.objective_met,
        "plannedAt": _stamp(now),
    }


def same_plan(a: Mapping[str, Any] | None, b: Mapping[str, Any]) -> bool:
    """Whether two status plans differ in anything but when they were made or the demand seen."""
    if not a:
        return False
    ignore = {"plannedAt", "demandRps", "predictedLatencySeconds", "trigger", "surgeReplicas", "lastRiseTime"}
    return {k: v for k, v in a.items() if k not in ignore} == {k: v for k, v in b.items() if k not in ignore}


def condition(
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    generation: int,
    now: dt.datetime,
    previous: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A condition in the Kubernetes shape; ``lastTransitionTime`` moves only when status changes."""
    value = "Unknown" if status is None else ("True" if status else "False")
    stamp = _stamp(now)
    for p in previous:
        if p.get("type") == type_ and p.get("status") == value and p.get("lastTransitionTime"):
            stamp = p["lastTransitionTime"]
    return {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": stamp,
    }


def rate_problem(rate_rps: float) -> str | None:
    """Why an arrival rate read from Prometheus cannot be planned for (None: it can). A rate
    of counters is never NaN or negative; a broken exporter, recording rule or proxy can make it so."""
    if not math.isfinite(rate_rps):
        return f"Prometheus answered {rate_rps} for the demand"
    if rate_rps < 0:
        return f"Prometheus answered a negative demand ({rate_rps:g} images/s)"
    return None


def problem_conditions(
    reason: str, message: str, generation: int, now: dt.datetime, previous: Sequence[Mapping[str, Any]] = ()
) -> list[dict]:
    """Ready False and Degraded True, for the same reason: a profile the cascade cannot be planned
    with (ProfileMissing, ProfileInvalid, ProfileMismatch), pods waiting for GPUs."""
    return [
        condition("Ready", False, reason, message, generation, now, previous),
        condition("Degraded", True, reason, message, generation, now, previous),
    ]


def missing_models(spec: CascadeSpec, bundle: Bundle) -> list[str]:
    """The cascade's models that its profile does not describe."""
    return [m for m in spec.model_names if m not in bundle.profile.names]


@dataclass(frozen=True)
class Plannable:
    """The profile restricted to the spec's models (``bundle``), or why the cascade cannot be
    planned with it: ``reason`` and ``message`` of the Ready/Degraded conditions."""

    bundle: Bundle | None
    reason: str = ""
    message: str = ""


def plannable(spec: CascadeSpec, bundle: Bundle, configmap: str) -> Plannable:
    """Check what the API server cannot (facts across the cascade and its profile): every model
    in the profile, a table row that pairs two of them, and a budget that holds one replica of
    each model of the cheapest such pair."""
    missing = missing_models(spec, bundle)
    if missing:
        return Plannable(None, "ProfileMismatch", f"models not in profile {configmap}: {', '.join(missing)}")
    own = restricted(bundle, spec.model_names)
    if own is None:
        names = ", ".join(spec.model_names)
        return Plannable(None, "ProfileMismatch", f"no row of profile {configmap}'s table pairs two of {names}")
    gpr = spec.gpus_per_replica
    cheapest = min({gpr[c.light] + gpr[c.heavy] for c in own.table.rows})
    if cheapest > spec.gpu_max:
        return Plannable(
            None,
            "BudgetTooSmall",
            f"gpuBudget.max is {spec.gpu_max}, but one replica of each model of the cheapest pair "
            f"needs {cheapest} GPUs (gpusPerReplica): raise gpuBudget.max or lower gpusPerReplica",
        )
    return Plannable(own)


def condition_reason(conditions: Sequence[Mapping[str, Any]], type_: str) -> str | None:
    """The reason of the condition of that type, if it is True (None otherwise)."""
    for c in conditions:
        if c.get("type") == type_ and c.get("status") == "True":
            return c.get("reason")
    return None


# Ready=False reasons that no amount of waiting clears: the spec or its profile must change.
# kstatus (Flux, Helm 4, kpt) reads them as Failed through the Stalled condition.
STALLED_REASONS = (
    "ApplyFailed",
    "ProfileInvalid",
    "ProfileMismatch",
    "BudgetTooSmall",
    "NameConflict",
    "PolicyViolation",
)


def merge_conditions(previous: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> list[dict]:
    """``new`` over ``previous`` by type, with kstatus's Reconciling and Stalled derived."""
    by_type = {c["type"]: dict(c) for c in previous}
    for c in new:
        by_type[c["type"]] = dict(c)
    by_type.update({c["type"]: c for c in kstatus_conditions(by_type)})
    order = ["Ready", "Progressing", "Degraded", "Reconciling", "Stalled"]
    return sorted(by_type.values(), key=lambda c: order.index(c["type"]) if c["type"] in order else 99)


def kstatus_conditions(by_type: Mapping[str, Mapping[str, Any]]) -> list[dict]:
    """Reconciling and Stalled, the abnormal-true conditions kstatus reads (Ready alone reads
    as Current the moment the first plan is written, while its workers are still starting):

    - Reconciling True while Progressing is (worker Deployments scaling or rolling out);
    - Stalled True while Ready is False for a reason only a change can clear (STALLED_REASONS).

    Each carries its source's generation, and its transition time (kept while its status is)."""
    out = []
    progressing, ready = by_type.get("Progressing"), by_type.get("Ready")
    if progressing:
        busy = progressing.get("status") == "True"
        out.append(_derived(by_type.get("Reconciling"), "Reconciling", busy,
                            progressing["reason"] if busy else "Reconciled", progressing, ))  # fmt: skip
    if ready:
        stuck = ready.get("status") == "False" and ready.get("reason") in STALLED_REASONS
        out.append(
            _derived(by_type.get("Stalled"), "Stalled", stuck, ready["reason"] if stuck else "NotStalled", ready)
        )
    return out


def _derived(
    previous: Mapping[str, Any] | None, type_: str, status: bool, reason: str, source: Mapping[str, Any]
) -> dict:
    value = "True" if status else "False"
    same = previous is not None and previous.get("status") == value and previous.get("lastTransitionTime")
    return {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": source.get("message", "") if status else "",
        "observedGeneration": source.get("observedGeneration", 0),
        "lastTransitionTime": previous["lastTransitionTime"] if same else source.get("lastTransitionTime", ""),
    }


def plan_message(plan: Plan) -> str:
    """A condition message for a plan that changes only when the plan does.

    Demand and predicted latency move with every scrape; a message carrying them would rewrite
    the status (and wake every watcher) on every tick. They are in ``status.plan`` instead, and
    the full ``plan.summary()`` goes into the Event written when the plan changes."""
    c = plan.config
    pair = f"{c.light} -> {c.heavy} (router ratio {c.router_ratio:.2f}, discriminator ratio {c.disc_ratio:.2f})"
    if plan.feasible:
        return f"{pair} meets the {plan.slo_s:g} s SLO at the current demand"
    gpus = sum(a.gpus for a in plan.allocations)
    return f"no configuration meets the {plan.slo_s:g} s SLO at the current demand on {gpus} GPUs; fallback {pair}"


def plan_degraded(plan: Plan, generation: int, now: dt.datetime, previous: Sequence[Mapping[str, Any]] = ()) -> dict:
    """The Degraded condition a plan implies: True with BudgetInfeasible when the budget cannot
    meet the demand (the fallback plan is in force), else False, AsPlanned."""
    infeasible = not plan.feasible
    return condition(
        "Degraded",
        infeasible,
        "BudgetInfeasible" if infeasible else "AsPlanned",
        plan_message(plan),
        generation,
        now,
        previous,
    )


@dataclass(frozen=True)
class WorkerRollout:
    """What a worker Deployment's status says about reaching its desired replicas."""

    model: str
    desired: int
    ready: int
    updated: int
    current: bool  # the Deployment controller has seen the latest spec (observedGeneration)

    @property
    def done(self) -> bool:
        return self.current and self.ready == self.desired and self.updated == self.desired


def rollout_of(deployment: Mapping[str, Any]) -> WorkerRollout:
    """A worker Deployment (as the API returns it, camelCase) to its rollout state."""
    meta, spec, status = deployment.get("metadata") or {}, deployment.get("spec") or {}, deployment.get("status") or {}
    return WorkerRollout(
        model=(meta.get("labels") or {}).get(MODEL_LABEL, meta.get("name", "?")),
        desired=int(spec.get("replicas") or 0),
        ready=int(status.get("readyReplicas") or 0),
        updated=int(status.get("updatedReplicas") or 0),
        current=int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0),
    )


def pod_start(pod: Mapping[str, Any]) -> tuple[str, float] | None:
    """(model, seconds from the pod's creation to Ready) of a Ready worker pod, else None: what
    a new replica really takes (scheduling, image, container start, model load, readiness),
    which the routers count on when they hold requests for the pods a plan brings up."""
    model = ((pod.get("metadata") or {}).get("labels") or {}).get(MODEL_LABEL)
    created = (pod.get("metadata") or {}).get("creationTimestamp")
    ready = next((c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None)
    if not model or not created or not ready or ready.get("status") != "True" or not ready.get("lastTransitionTime"):
        return None
    if any(cs.get("restartCount") for cs in (pod.get("status") or {}).get("containerStatuses") or []):
        return None  # Ready again after a restart: its Ready time is not its start
    seconds = (_time(ready["lastTransitionTime"]) - _time(created)).total_seconds()
    return (model, seconds) if seconds >= 0 else None


def start_seconds(starts: Sequence[tuple[str, float]]) -> dict[str, float]:
    """Per model label, the median start of its Ready pods (a slow first pull weighs one pod)."""
    by_model: dict[str, list[float]] = {}
    for model, seconds in starts:
        by_model.setdefault(model, []).append(seconds)
    return {m: sorted(v)[len(v) // 2] for m, v in by_model.items()}


def _time(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _stamp(t: dt.datetime) -> str:
    """A status time as Kubernetes writes one (RFC 3339, to the second, UTC); ``_time`` reads it."""
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def unschedulable(pod: Mapping[str, Any]) -> bool:
    """Whether the scheduler reported the pod Unschedulable (e.g. no node has the GPUs it asks)."""
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
            return True
    return False


def rollout_condition(
    workers: Sequence[WorkerRollout], generation: int, now: dt.datetime, previous: Sequence[Mapping[str, Any]] = ()
) -> dict:
    """``Progressing``: True while any worker Deployment is still scaling or rolling out to the
    plan (reason ScalingWorkers, with each model's ready/desired), False once all are there
    (RolloutComplete)."""
    behind = [w for w in workers if not w.done]
    if behind:
        detail = "; ".join(f"{w.model} {w.ready}/{w.desired} ready" for w in behind)
        return condition("Progressing", True, "ScalingWorkers", detail, generation, now, previous)
    total = sum(w.desired for w in workers)
    return condition(
        "Progressing", False, "RolloutComplete", f"all {total} worker replicas ready", generation, now, previous
    )


# Ready=False reasons that a pass which found no such problem has cleared.
PASSING_PROBLEMS = (
    "PodsUnschedulable",
    "ProfileMissing",
    "ProfileInvalid",
    "ProfileMismatch",
    "BudgetTooSmall",
    "PolicyViolation",
)


def ready_once_cleared(
    previous: Sequence[Mapping[str, Any]], plan_doc: Mapping[str, Any] | None, generation: int, now: dt.datetime
) -> list[dict]:
    """Ready as the deployed plan has it, when no new plan can be made (no arrival rate) but the
    problem Ready reported is gone (the pods are placed, the profile is back); else nothing."""
    ready = next((c for c in previous if c.get("type") == "Ready"), {})
    if not plan_doc or ready.get("status") != "False" or ready.get("reason") not in PASSING_PROBLEMS:
        return []
    reason = "Planned" if plan_doc.get("feasible", True) else "BudgetInfeasible"
    msg = f"serving the last plan, {plan_doc.get('pair', '?')}; no arrival rate to re-plan with"
    return [condition("Ready", True, reason, msg, generation, now, previous)]


def kept_plan_conditions(
    previous: Sequence[Mapping[str, Any]],
    status_plan: Mapping[str, Any] | None,
    rollout: Mapping[str, Any],
    pending: int,
    message: str,
    generation: int,
    now: dt.datetime,
) -> list[dict]:
    """The conditions of a re-plan that has no arrival rate to plan with (``message`` says why):
    the last plan stays, Degraded says MetricsUnavailable, unless worker pods wait for GPUs (the
    problem to show then); Ready follows the kept plan once a passing problem is gone."""
    if pending:
        problems = unschedulable_conditions(pending, generation, now, previous)
    else:
        problems = [
            condition("Degraded", True, "MetricsUnavailable", message, generation, now, previous),
            *ready_once_cleared(previous, status_plan, generation, now),
        ]
    return merge_conditions(previous, [rollout, *problems])


def unschedulable_conditions(
    pending: int, generation: int, now: dt.datetime, previous: Sequence[Mapping[str, Any]] = ()
) -> list[dict]:
    """Ready False and Degraded True while worker pods wait for GPUs the cluster does not have."""
    msg = f"{pending} worker pod(s) cannot be scheduled: the cluster has fewer free GPUs than the plan"
    return problem_conditions("PodsUnschedulable", msg, generation, now, previous)


def apply_failed(message: str, generation: int, now: dt.datetime, previous: Sequence[Mapping[str, Any]] = ()) -> list:
    """Ready False and Degraded True, reason ApplyFailed: the API server refused an object the
    spec asks for (the message names it and gives the server's reason)."""
    return problem_conditions("ApplyFailed", message, generation, now, previous)


def plan_conditions(plan: Plan, generation: int, now: dt.datetime, previous: Sequence[Mapping[str, Any]] = ()) -> list:
    """Ready (True: the plan is applied; reason Planned, or BudgetInfeasible for the fallback
    plan) and the Degraded condition the plan implies."""
    reason = "Planned" if plan.feasible else "BudgetInfeasible"
    return [
        condition("Ready", True, reason, plan_message(plan), generation, now, previous),
        plan_degraded(plan, generation, now, previous),
    ]


# How long the pods a re-plan gives up may keep serving beyond the plan while the pods it adds
# are not yet Ready (a Deployment's progressDeadlineSeconds default): then they drain anyway.
SURGE_DEADLINE_S = 600.0


def pods_coming(target: Mapping[str, int], models: Sequence[ModelEntry], rollouts: Sequence[WorkerRollout]) -> bool:
    """Whether some model has fewer Ready worker pods than ``target`` (replicas by model name)."""
    ready = {w.model: w.ready for w in rollouts}
    return any(ready.get(builders.dns_name(m.name), 0) < target.get(m.name, 0) for m in models)


def surge_replicas(
    target: Mapping[str, int],
    models: Sequence[ModelEntry],
    rollouts: Sequence[WorkerRollout],
    cap_gpus: int,
    release: bool = False,
) -> dict[str, int]:
    """The worker replicas to write for the plan's ``target``: while the pods the plan adds are
    not Ready, the pods it gives up keep serving (their Deployment keeps its replicas) as far as
    ``cap_gpus`` (gpuBudget.max + maxSurge) holds them, so the new pods start on free GPUs
    instead of waiting for the drained ones. ``release`` (the new pods cannot be placed, or the
    deadline passed) drains them now; so does every pass once no pod is coming."""
    out = dict(target)
    if release or not pods_coming(target, models, rollouts):
        return out
    deployed = {w.model: w.desired for w in rollouts}
    used = sum(out.get(m.name, 0) * m.gpus_per_replica for m in models)
    for m in models:
        while out.get(m.name, 0) < deployed.get(builders.dns_name(m.name), 0) and used + m.gpus_per_replica <= cap_gpus:
            out[m.name] = out.get(m.name, 0) + 1
            used += m.gpus_per_replica
    return out


def surge_settled(status_plan: Mapping[str, Any] | None, models: Sequence[ModelEntry],
                  rollouts: Sequence[WorkerRollout], unschedulable: int) -> bool:  # fmt: skip
    """Whether replicas held beyond the plan in ``status_plan`` may drain now: the plan's new pods
    are Ready, or some cannot be placed (the held pods' GPUs are what they wait for)."""
    plan = status_plan or {}
    if not plan.get("surgeReplicas"):
        return False
    return bool(unschedulable) or not pods_coming(plan.get("replicas") or {}, models, rollouts)


@dataclass(frozen=True)
class Surge:
    """One pass's worker replicas under gpuBudget.maxSurge: ``workers`` to write, ``held`` beyond
    the plan now (None: none) and before (``was_held``, from the status)."""

    workers: dict[str, int]
    held: dict[str, int] | None
    was_held: dict[str, int] | None
    unplaced: bool

    @classmethod
    def of(
        cls, spec: CascadeSpec, decision: Decision, status_plan: Mapping[str, Any] | None,
        rollouts: Sequence[WorkerRollout], changed: bool, unschedulable: int, now: dt.datetime,
    ) -> Surge:  # fmt: skip
        """``changed``: the plan is new this pass (its deadline starts now, not at plannedAt)."""
        planned_at = (status_plan or {}).get("plannedAt")
        since = now if changed or not planned_at else _time(planned_at)
        release = bool(unschedulable) or (now - since).total_seconds() > SURGE_DEADLINE_S
        target = decision.replicas
        workers = surge_replicas(target, spec.models, rollouts, spec.gpu_max + spec.max_surge, release)
        held = {m: n - target.get(m, 0) for m, n in workers.items() if n > target.get(m, 0)}
        return cls(workers, held or None, (status_plan or {}).get("surgeReplicas") or None, bool(unschedulable))

    @property
    def drained(self) -> tuple[str, str] | None:
        """The event of a pass that drains the replicas held so far (None: it does not)."""
        if not self.was_held or self.held:
            return None
        gone = ", ".join(f"{m} -{n}" for m, n in self.was_held.items())
        why = "some of the plan's new pods cannot be placed" if self.unplaced else "the plan's new pods are Ready"
        return "SurgeDrained", f"draining the replicas kept beyond the plan ({gone}): {why}"


@dataclass(frozen=True)
class Convergence:
    """What one planning pass wants written: objects to apply, the status, Normal events."""

    decision: Decision
    objects: tuple[dict, ...]  # server-side apply these (empty: nothing to apply)
    status: dict[str, Any] | None  # the status to write (None: nothing changed)
    events: tuple[tuple[str, str], ...]  # (reason, message)


def converge(
    spec: CascadeSpec,
    name: str,
    namespace: str,
    bundle: Bundle,
    rate_rps: float,
    status: Mapping[str, Any],
    rollouts: Sequence[WorkerRollout],
    generation: int,
    now: dt.datetime,
    *,
    trigger: str = "",
    reconcile: bool = False,
    images: builders.Images = DEFAULT_IMAGES,
    unschedulable: int = 0,
    asleep: str | None = None,
    starts: Mapping[str, float] | None = None,
) -> Convergence:
    """One planning pass, for both the reconcile (``reconcile``: the spec changed, so every
    object is applied) and a re-plan (objects only when the plan changed; nothing at all when
    neither the plan nor a condition did, or when the API server refused the plan's objects,
    ``ApplyFailed``, and the plan is the same). ``unschedulable`` worker pods make Ready False
    and Degraded True (PodsUnschedulable) in the same pass, so the conditions never alternate
    between two passes. The caller applies, then folds the rollout it reads back into the status
    (``rollout_condition``), or the refusal (``apply_failed``). ``asleep`` (scale to zero: the
    wake Lease's token when it went to sleep) puts every worker at 0 replicas under the plan;
    ``starts`` (seconds, by the pods' model label) are the measured pod starts the routers get."""
    previous = list(status.get("conditions") or [])
    up, rose = rise(status.get("plan"), rate_rps, now, spec.rise_settle_s)
    decision = decide(bundle, spec, rate_rps, status.get("plan"), up)
    if asleep is not None:
        decision = Decision(decision.plan, {m: 0 for m in decision.replicas})
    plan_doc = plan_status(decision.plan, decision.replicas, now, trigger, rose)
    if asleep is not None:
        plan_doc.update(gpus=0, scaledToZero=True, wakeToken=asleep)
    elif (status.get("plan") or {}).get("scaledToZero"):
        plan_doc.update(scaledToZero=None, wakeToken=None)  # woken: null removes them in a merge patch
    conds = merge_conditions(
        previous,
        [
            rollout_condition(rollouts, generation, now, previous),
            *plan_conditions(decision.plan, generation, now, previous),
        ],
    )
    if unschedulable:  # pods wait for GPUs: that, not the plan's feasibility, is what Ready says
        conds = merge_conditions(conds, unschedulable_conditions(unschedulable, generation, now, previous))
    unchanged = same_plan(status.get("plan"), plan_doc)
    surge = Surge.of(spec, decision, status.get("plan"), rollouts, not unchanged, unschedulable, now)
    if surge.held or surge.was_held:
        plan_doc["surgeReplicas"] = surge.held or None  # null removes it in a merge patch
    surge_moved = surge.held != surge.was_held
    if (
        not reconcile
        and unchanged
        and not surge_moved
        and rose == (status.get("plan") or {}).get("lastRiseTime", "")  # a rise is written: the next compares
        and (conds == previous or condition_reason(previous, "Degraded") == "ApplyFailed")
    ):
        # Nothing changed; or the API server refused this plan's objects, and only a new spec
        # (a reconcile) or a new plan can change that: the conditions stay as they say.
        return Convergence(decision, (), None, ())
    objects = (
        ()
        if unchanged and not reconcile and not surge_moved
        else tuple(
            builders.owned_objects(
                spec, name, namespace, bundle, decision.plan, decision.replicas, images, starts, workers=surge.workers
            )
        )
    )
    events: tuple[tuple[str, str], ...] = ()
    if not unchanged:
        summary = decision.plan.summary()
        events = (
            (("Planned", summary),) if reconcile else (("Replanned", f"{trigger}, {rate_rps:.2f} images/s: {summary}"),)
        )
    elif surge.drained:
        events = (surge.drained,)
    new_status = {"observedGeneration": generation, "plan": plan_doc, "conditions": conds}
    return Convergence(decision, objects, new_status, events)
