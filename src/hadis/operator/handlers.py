"""kopf handlers for DiffusionCascade: thin I/O around ``builders`` and ``logic``.

Run with ``hadis operator run`` (Lease-based leader election, see ``leader.py``) or, for one
replica, ``kopf run --standalone -m hadis.operator.handlers``. Reconcile on create, on spec
change and on operator start: validate the profile ConfigMap, plan for the last known demand,
server-side apply the owned objects, and write the status. A daemon per cascade re-plans every
``spec.planner.intervalSeconds`` from Prometheus, and early on a surge (``spec.planner.surge``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import kopf
from kubernetes.client.rest import ApiException

from hadis import contract
from hadis.core.bundle import LABELS as PROFILE_LABELS
from hadis.core.bundle import PROFILE_KEY, TABLE_KEY, Bundle
from hadis.core.errors import DataError, NotFound
from hadis.operator import builders, cluster, drift, logic, metrics, policy, prom
from hadis.operator.spec import CascadeSpec


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _quiet_indexers(record: logging.LogRecord) -> bool:
    """Drop kopf's "Indexer '...' succeeded." lines: one per watched pod event is noise."""
    return not (record.levelno <= logging.INFO and str(record.msg).startswith("Indexer "))


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    cluster.load_client_config()
    # kopf turns its per-object log records into Events from this level up. Keep it at WARNING:
    # at INFO every index update of every watched pod would post an Event. The operator posts
    # its own Normal events (Planned, Replanned) explicitly with kopf.event.
    settings.posting.level = logging.WARNING
    logging.getLogger("kopf.objects").addFilter(_quiet_indexers)
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="serving.hadis.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="serving.hadis.dev")
    settings.execution.max_workers = 8
    # kopf's defaults wait forever: a watch the API server silently dropped (a restart behind a
    # load balancer) would never deliver another event. The server ends each watch after
    # server_timeout and kopf opens the next; the client gives up a little later if it does not.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.connect_timeout = 10
    settings.networking.request_timeout = 60
    # Serve exactly the namespaces given, and the resources found at start. With scanning, kopf
    # skips a namespace that is terminating when it starts: an operator restarted while a
    # watched namespace was being deleted never removed its cascades' finalizers, and the
    # namespace stayed Terminating for good. The CRD must exist first (``require_crd``).
    settings.scanning.disabled = True
    cluster.require_crd()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod: the service account; elsewhere: $KUBECONFIG, read when the operator starts."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@functools.cache
def operator_policy() -> policy.Policy:
    """The platform team's policy (the chart's ``policy`` values); ``hadis operator run`` refuses
    to start on a malformed one, so this parse has succeeded once already."""
    return policy.Policy.parse(os.environ.get("HADIS_POLICY"))


def checked_bundle(namespace: str, spec: CascadeSpec, profile: tuple[str, dict] | None) -> logic.Plannable:
    """The cascade's profile restricted to its models, or why it cannot plan with it (the
    operator's policy first: a refused spec is never built)."""
    refused = policy.violations(spec, operator_policy())
    if refused:
        return logic.Plannable(None, "PolicyViolation", "; ".join(refused))
    try:
        bundle = cluster.bundle_of(namespace, spec.profile_configmap, profile)
    except DataError as e:
        return logic.Plannable(None, "ProfileMissing" if isinstance(e, NotFound) else "ProfileInvalid", str(e))
    return logic.plannable(spec, bundle, spec.profile_configmap)


def default_images() -> builders.Images:
    """The operator's images (the chart sets both to its own version), else this version's."""
    return builders.Images(
        router=os.environ.get("HADIS_ROUTER_IMAGE") or contract.ROUTER_IMAGE,
        worker=os.environ.get("HADIS_WORKER_IMAGE") or contract.WORKER_IMAGE,
    )


# ------------------------------------------------------------------------------------- reconcile


@kopf.on.resume(contract.GROUP, contract.VERSION, contract.PLURAL)
@kopf.on.create(contract.GROUP, contract.VERSION, contract.PLURAL)
@kopf.on.update(contract.GROUP, contract.VERSION, contract.PLURAL, field="spec")
def reconcile(body, spec, name, namespace, meta, status, patch, logger, worker_rollouts, **_: Any) -> None:
    metrics.RECONCILES.labels(namespace, name).inc()
    for handler in ("reconcile", "replan"):  # at zero from the start: a rate of errors reads 0, not "no data"
        metrics.RECONCILE_ERRORS.labels(namespace, name, handler)
    # the workers as they are: a spec change while pods are kept beyond the plan keeps them
    rollouts = sorted(worker_rollouts.get((namespace, name), []), key=lambda w: w.model)
    try:
        _reconcile(body, CascadeSpec.parse(spec), name, namespace, meta, status, patch, logger, rollouts)
    except Exception:
        metrics.RECONCILE_ERRORS.labels(namespace, name, "reconcile").inc()
        raise  # kopf retries it


def _reconcile(body, spec: CascadeSpec, name, namespace, meta, status, patch, logger, rollouts: list) -> None:
    generation = int(meta.get("generation", 0))
    previous = list(status.get("conditions") or [])
    now = _now()
    checked = checked_bundle(namespace, spec, None)
    if checked.bundle is None:
        kopf.warn(body, reason=checked.reason, message=checked.message)
        patch.status["observedGeneration"] = generation
        patch.status["conditions"] = logic.merge_conditions(
            previous, logic.problem_conditions(checked.reason, checked.message, generation, now, previous)
        )
        return  # no exception: no crash loop; a change of the spec or the daemon retries
    rate = float((status.get("plan") or {}).get("demandRps") or 0.0)
    bundle = checked.bundle
    conv = planned(
        spec, name, namespace, "reconcile", now,
        lambda: logic.converge(
            spec, name, namespace, bundle, rate, status, rollouts, generation, now, reconcile=True,
            images=default_images(),
            asleep=asleep_token(spec, status),
        ),
    )  # fmt: skip
    assert conv.status is not None  # a reconcile always writes
    conv.status["conditions"] = apply_pass(conv, body, name, namespace, generation, now, previous, prune=True)
    for key, value in conv.status.items():
        patch.status[key] = value
    logger.info("reconciled: %s", json.dumps(conv.status["plan"]["replicas"]))


def asleep_token(spec: CascadeSpec, status: Mapping[str, Any]) -> str | None:
    """The wake token a scaled-to-zero cascade went to sleep with (None: it is awake, or may
    not sleep: a spec without scaleToZero wakes it)."""
    plan = status.get("plan") or {}
    if spec.scale_to_zero is None or not plan.get("scaledToZero"):
        return None
    return str(plan.get("wakeToken") or "")


def planned(
    spec: CascadeSpec, name: str, namespace: str, trigger: str, now: dt.datetime, plan: Callable[[], logic.Convergence]
) -> logic.Convergence:
    """One planning pass (``plan``), timed and counted by trigger; the plan it decides becomes
    the plan gauges (whether or not it changed anything)."""
    t0 = time.perf_counter()
    conv = plan()
    metrics.PLAN_DURATION.observe(time.perf_counter() - t0)
    metrics.PLANS.labels(namespace, name, trigger or "timer").inc()
    doc = logic.plan_status(conv.decision.plan, conv.decision.replicas, now)
    metrics.record_plan(namespace, name, doc, spec.slo_s)
    return conv


def apply_pass(
    conv: logic.Convergence, body: dict, name: str, namespace: str, generation: int, now: dt.datetime,
    previous: list, prune: bool = False,
) -> list[dict]:  # fmt: skip
    """Apply what a planning pass wants applied and post its events; the conditions with the
    rollout read back after the apply (the one I/O both paths share). ``prune`` (the reconcile
    of a spec) then deletes the objects the spec no longer asks for (a model removed)."""
    assert conv.status is not None
    conds = conv.status["conditions"]
    found = cluster.cascade_objects(namespace) if conv.objects else cluster.NamespaceObjects({}, {})
    refusal = _refusal(conv.objects, body, name, namespace, found.labels)
    if refusal is not None:
        # The API server will never take an object as built from this spec, or another cascade
        # holds its name: say which and why, once, and wait for a spec change (the reconcile).
        failed = logic.merge_conditions(conds, logic.problem_conditions(*refusal, generation, now, previous))
        _warn_on_change(body, previous, failed)
        return failed
    if prune and conv.objects:
        for gone in cluster.prune(namespace, body, conv.objects, found):
            kopf.event(body, type="Normal", reason="Pruned", message=f"{gone}: no longer in spec.models")
    if conv.objects:
        after = logic.rollout_condition(cluster.worker_rollout(name, namespace), generation, now, previous)
        conds = logic.merge_conditions(conds, [after])
    for reason, message in conv.events:
        kopf.event(body, type="Normal", reason=reason, message=message)
    return conds


def _refusal(
    objects: Sequence[dict], body: dict, name: str, namespace: str, taken: Mapping[tuple[str, str], str]
) -> tuple[str, str] | None:
    """Apply ``objects``; ``(reason, message)`` when one cannot be: NameConflict (another cascade
    holds its name, per ``taken`` from ``cluster.cascade_objects``) or ApplyFailed (the API server
    refused it, in its own words)."""
    if not objects:
        return None
    conflicts = builders.name_conflicts(taken, name, list(objects))
    if conflicts:
        return "NameConflict", "; ".join(conflicts) + ": rename this cascade or its models"
    for obj in objects:
        try:
            cluster.apply(obj, body)
        except ApiException as e:
            if not cluster.refused(e):
                raise  # the API server is away or overloaded: the next pass tries again
            return "ApplyFailed", f"{obj['kind']} {namespace}/{obj['metadata']['name']}: {cluster.api_message(e)}"
    return None


@kopf.daemon(contract.GROUP, contract.VERSION, contract.PLURAL, initial_delay=5.0, cancellation_timeout=5.0)
async def replan(
    stopped,
    body,
    name,
    namespace,
    logger,
    worker_rollouts,
    unschedulable_pods,
    profile_configmaps,
    wake_leases,
    worker_starts,
    **_: Any,
) -> None:
    """Re-plan from the router's arrival rate in Prometheus: on ``spec.planner.intervalSeconds``,
    and with ``spec.planner.surge`` (the default) early, when a check every ``checkSeconds``
    finds the rate risen (``hadis.core.surge``; the estimator is ``FastRiseEstimator``, as in
    the simulator)."""
    key = (namespace, name)

    def view_of(spec: CascadeSpec) -> ClusterView:
        return ClusterView(
            rollouts=sorted(worker_rollouts.get(key, []), key=lambda w: w.model),
            unschedulable=len(list(unschedulable_pods.get(key, []))),
            profile=next(iter(profile_configmaps.get((namespace, spec.profile_configmap), [])), None),
            starts=logic.start_seconds(list(worker_starts.get(key, []))),
        )

    async def once(*args: Any, **kwargs: Any) -> str:
        try:
            outcome = await asyncio.to_thread(replan_once, dict(body), *args, **kwargs)
        except Exception as e:  # a daemon must outlive any one failure
            outcome = "failed"
            metrics.RECONCILE_ERRORS.labels(namespace, name, "replan").inc()
            logger.warning("re-plan failed: %s", e)
        metrics.REPLANS.labels(namespace, name, outcome).inc()
        return outcome

    try:
        clock: logic.ReplanClock | None = None
        idle: logic.IdleWatch | None = None
        while not stopped:
            spec = CascadeSpec.parse(body["spec"])  # kopf keeps body current: a spec change shows here
            if clock is None or (clock.interval_s, clock.surge) != (spec.interval_s, spec.surge):
                planned_rate = ((body.get("status") or {}).get("plan") or {}).get("demandRps")
                clock = logic.ReplanClock.start(spec.interval_s, spec.surge, time.monotonic(), planned_rate)
            idle = idle_watch(spec, body.get("status") or {}, idle)
            await asyncio.sleep(clock.step_s)
            rate, error = await read_rate(spec, namespace, name, clock.window or spec.prometheus.window)
            if idle is not None:
                token = next(iter(wake_leases.get(key, [])), "")
                if await sleep_or_wake(spec, namespace, name, idle, token, rate, view_of, once, logger) or idle.asleep:
                    continue  # asleep: no re-plan until a request wakes it
            decision = clock.tick(time.monotonic(), rate) or surge_drain(spec, body, view_of)
            if decision is None:
                continue  # a quiet check: nothing read from or written to the API server
            rate, why = decision
            served = await read_served(spec, namespace, name, logger) if rate is not None else None
            view = view_of(spec)
            metrics.METRICS_AVAILABLE.labels(namespace, name).set(0 if rate is None else 1)
            metrics.UNSCHEDULABLE.labels(namespace, name).set(view.unschedulable)
            await once(view, logger, rate, error, why, served)
    finally:  # deleted (or the operator stops): its series go with it
        metrics.forget(namespace, name)


def surge_drain(
    spec: CascadeSpec, body: Mapping[str, Any], view_of: Callable[[CascadeSpec], ClusterView]
) -> tuple[float, str] | None:
    """A pass at the planned rate as soon as replicas held beyond the plan may drain (the plan's
    new pods are Ready), not at the next timer: their GPUs cost until then. The indexes are read
    only while some are held."""
    plan = (body.get("status") or {}).get("plan") or {}
    if not plan.get("surgeReplicas"):
        return None
    view = view_of(spec)
    if not logic.surge_settled(plan, spec.models, view.rollouts, view.unschedulable):
        return None
    return float(plan.get("demandRps") or 0.0), "surge-ready"


def idle_watch(spec: CascadeSpec, status: Mapping[str, Any], idle: logic.IdleWatch | None) -> logic.IdleWatch | None:
    """The daemon's scale-to-zero state for ``spec`` (None without scaleToZero), from the status
    when it starts (a restarted operator knows the cascade sleeps, and with which token)."""
    if spec.scale_to_zero is None:
        return None
    if idle is None or idle.idle_s != spec.scale_to_zero.idle_s:
        return logic.IdleWatch(spec.scale_to_zero.idle_s, time.monotonic(), asleep_token(spec, status))
    return idle


async def sleep_or_wake(
    spec: CascadeSpec, namespace: str, name: str, idle: logic.IdleWatch, token: str, rate: float | None,
    view_of: Callable[[CascadeSpec], ClusterView], once: Callable[..., Any], logger,
) -> bool:  # fmt: skip
    """Put an idle cascade's workers to 0, or wake it on a new wake token; whether it did."""
    now = time.monotonic()
    idle_rate = None
    if idle.idle_due(now):
        idle_rate, _ = await read_rate(spec, namespace, name, f"{int(spec.scale_to_zero.idle_s)}s")
    before = dataclasses.replace(idle)
    change = idle.check(now, idle_rate, token)
    if change is None:
        return False
    asleep = idle.token if change == "sleep" else None
    trigger = "idle" if change == "sleep" else "wake"
    outcome = await once(view_of(spec), logger, 0.0 if rate is None else rate, "", trigger, None, asleep=asleep)
    if outcome not in ("applied", "unchanged"):
        idle.token, idle.awake_since = before.token, before.awake_since  # try again next check
        return True
    logger.info("%s: %s", "scaled to zero" if asleep is not None else "woken by a request", outcome)
    return True


async def read_rate(spec: CascadeSpec, namespace: str, name: str, window: str) -> tuple[float | None, str]:
    """The cascade's arrival rate, or None and why not (the MetricsUnavailable message)."""
    url, timeout_s = spec.prometheus.url, spec.prometheus.timeout_s
    try:
        rate = prom.cached_rate(url, namespace, name, window)  # another cascade's check just asked
        if rate is None:
            rate = await asyncio.to_thread(prom.query_rate, url, namespace, name, window, timeout_s)
    except Exception as e:
        return None, f"{prom.metrics_failure(e, timeout_s)}; keeping the last plan"
    problem = logic.rate_problem(rate)
    if problem:
        return None, f"{problem}; keeping the last plan"
    return rate + await read_backlog(spec, namespace, name) / spec.slo_s, ""


async def read_backlog(spec: CascadeSpec, namespace: str, name: str) -> float:
    """Images the routers hold for a pod (0 when unreadable: the arrival rate is the demand then).
    The plan is asked to drain them within one SLO on top of the arrivals, so a backlog that
    builds while pods start raises the demand at once, before the arrival rate's window does."""
    try:
        backlog = await asyncio.to_thread(
            prom.query_backlog, spec.prometheus.url, namespace, name, spec.prometheus.timeout_s
        )
    except Exception:
        return 0.0
    return backlog if math.isfinite(backlog) and backlog > 0 else 0.0


async def read_served(spec: CascadeSpec, namespace: str, name: str, logger) -> dict[str, drift.Served] | None:
    """What the cascade's workers served over ``spec.profileDrift.window`` (None: not judged)."""
    if not spec.drift.enabled:
        return None
    deployments = [builders.worker_name(name, m.name) for m in spec.models]
    try:
        return await asyncio.to_thread(
            prom.query_served, spec.prometheus.url, namespace, deployments, spec.drift.window,
            spec.prometheus.timeout_s,
        )  # fmt: skip
    except Exception as e:  # the condition keeps its last word; the rate's failure is reported
        logger.debug("served latency not read: %s", e)
        return None


def drift_condition(
    spec: CascadeSpec, name: str, namespace: str, bundle: Bundle, served: dict[str, drift.Served] | None,
    generation: int, now: dt.datetime, previous: list,
) -> dict | None:  # fmt: skip
    """The ProfileDrift condition (None: not judged this pass), and its gauge per model."""
    cfg = spec.drift
    if served is None or not cfg.enabled:
        return None
    found = drift.findings(bundle.profile, drift.triton_models(spec.models), served)
    for f in found:
        if f.ratio is not None:
            metrics.PROFILE_DRIFT.labels(namespace, name, f.model).set(f.ratio)
    return drift.drift_condition(found, cfg.tolerance, cfg.min_batches, cfg.window, generation, now, previous)


def _warn_on_drift(body: dict, previous: list, cond: dict | None) -> None:
    """One Warning event when the served latency leaves the profile's tolerance."""
    if cond and cond["status"] == "True" and logic.condition_reason(previous, drift.CONDITION) is None:
        kopf.warn(body, reason=drift.CONDITION, message=cond["message"])


# ------------------------------------------------------------------------------------- indexes
# What the re-plan daemon needs of the cluster on every tick, kept current by kopf from watch
# streams, so an idle cascade costs no API request (polling cost three per tick per cascade).

WORKERS = {contract.CASCADE_LABEL: kopf.PRESENT, "app.kubernetes.io/component": "worker"}


@kopf.index("apps", "v1", "deployments", labels=WORKERS)
def worker_rollouts(body, namespace, labels, **_: Any) -> dict:
    return {(namespace, labels[contract.CASCADE_LABEL]): logic.rollout_of(body)}


def _is_unschedulable(body, **_: Any) -> bool:
    return logic.unschedulable(body)


# A filter, not a None result: kopf keeps an object's last value when its index function returns
# None, so a pod that was unschedulable for a moment (its claim not yet bound) stayed counted
# after it ran, and the cascade said PodsUnschedulable for good. A pod that stops matching the
# filter is taken out of the index.
def _started(body, **_: Any) -> bool:
    return logic.pod_start(body) is not None


@kopf.index("v1", "pods", labels=WORKERS, when=_started)
def worker_starts(body, namespace, labels, **_: Any) -> dict:
    """Each Ready worker pod's start (creation to Ready), for the routers' holding."""
    return {(namespace, labels[contract.CASCADE_LABEL]): logic.pod_start(body)}


WAKE_LEASES = {contract.CASCADE_LABEL: kopf.PRESENT, "app.kubernetes.io/component": contract.WAKE_COMPONENT}


@kopf.index("coordination.k8s.io", "v1", "leases", labels=WAKE_LEASES)
def wake_leases(namespace, labels, annotations, **_: Any) -> dict:
    """Each scale-to-zero cascade's wake token: what its routers last wrote on its Lease."""
    return {(namespace, labels[contract.CASCADE_LABEL]): annotations.get(contract.WAKE_ANNOTATION, "")}


@kopf.index("v1", "pods", labels=WORKERS, when=_is_unschedulable)
def unschedulable_pods(namespace, labels, **_: Any) -> dict:
    return {(namespace, labels[contract.CASCADE_LABEL]): True}


def _is_profile(body, **_: Any) -> bool:
    data = body.get("data") or {}
    return PROFILE_KEY in data and TABLE_KEY in data


# Only ConfigMaps labelled as planning profiles (as ``hadis profile run``/``hadis table configmap`` write them)
# are watched: the operator holds no copy of the namespaces' other ConfigMaps. A cascade whose
# profile lacks the label still plans: its profile is read when a re-plan needs it.
PROFILES = {"app.kubernetes.io/component": PROFILE_LABELS["app.kubernetes.io/component"]}


@kopf.index("v1", "configmaps", labels=PROFILES, when=_is_profile)
def profile_configmaps(body, namespace, name, meta, **_: Any) -> dict:
    return {(namespace, name): (meta.get("resourceVersion", ""), dict(body.get("data") or {}))}


@dataclasses.dataclass(frozen=True)
class ClusterView:
    """One tick's snapshot of the indexes for one cascade (taken on the event loop's thread)."""

    rollouts: list[logic.WorkerRollout]
    unschedulable: int
    profile: tuple[str, dict] | None  # (resourceVersion, data) of the profile ConfigMap
    starts: dict[str, float] = dataclasses.field(default_factory=dict)  # model label -> pod start seconds


def _warn_on_change(body: dict, previous: list, conds: list) -> None:
    """One Warning event when the Degraded reason becomes a new problem."""
    degraded = next((c for c in conds if c["type"] == "Degraded"), None)
    if degraded and degraded["status"] == "True" and logic.condition_reason(previous, "Degraded") != degraded["reason"]:
        kopf.warn(body, reason=degraded["reason"], message=degraded["message"])


def _write_conditions(body: dict, previous: list, conds: list) -> None:
    """Write the conditions (with a Warning for a new problem), only when they changed."""
    _warn_on_change(body, previous, conds)
    if conds != previous:
        cluster.patch_status(body["metadata"]["namespace"], body["metadata"]["name"], {"conditions": conds})


def replan_once(
    body: dict,
    view: ClusterView,
    logger,
    rate: float | None,
    error: str = "",
    trigger: str = "timer",
    served: dict[str, drift.Served] | None = None,
    asleep: str | None = None,
) -> str:
    """One re-plan: conditions from the cluster, then a plan for ``rate`` (images/s), or, when
    Prometheus failed (``rate`` None), the MetricsUnavailable condition and the last plan kept.

    A profile that is gone, broken or not the models' keeps the last plan too, with its own
    condition (ProfileMissing, ProfileInvalid, ProfileMismatch, BudgetTooSmall). ``served`` (what
    the workers served, from Triton's counters) sets ProfileDrift. Writes only when the plan or a
    condition changed. Returns the outcome, as counted in ``hadis_operator_replans_total``:
    applied, unchanged, metrics_unavailable, profile_unavailable or awaiting_reconcile."""
    spec, meta, status = CascadeSpec.parse(body["spec"]), body["metadata"], body.get("status") or {}
    name, namespace = meta["name"], meta["namespace"]
    generation = int(meta.get("generation", 0))
    if int(status.get("observedGeneration") or 0) < generation:
        # A new spec the reconcile has not written its status for yet: conditions built on the
        # old status would overwrite what the reconcile is about to write (a refused object's
        # ApplyFailed, kept forever once written back). The next check re-plans.
        return "awaiting_reconcile"
    previous = list(status.get("conditions") or [])
    now = _now()
    checked = checked_bundle(namespace, spec, view.profile)
    if checked.bundle is None:  # deleted, broken or not matching the models: keep what runs, say why
        msg = f"{checked.message}; keeping the last plan" if status.get("plan") else checked.message
        _write_conditions(
            body, previous, logic.merge_conditions(
                previous, logic.problem_conditions(checked.reason, msg, generation, now, previous)
            ),
        )  # fmt: skip
        return "profile_unavailable"
    bundle = checked.bundle
    drift_cond = drift_condition(spec, name, namespace, bundle, served, generation, now, previous)
    _warn_on_drift(body, previous, drift_cond)
    drifts = [drift_cond] if drift_cond else []
    if rate is None:
        rollout = logic.rollout_condition(view.rollouts, generation, now, previous)
        msg = error or "no arrival rate; keeping the last plan"
        conds = logic.kept_plan_conditions(
            previous, status.get("plan"), rollout, view.unschedulable, msg, generation, now
        )
        _write_conditions(body, previous, logic.merge_conditions(conds, drifts))
        return "metrics_unavailable"
    conv = planned(
        spec, name, namespace, trigger, now,
        lambda: logic.converge(
            spec, name, namespace, bundle, rate, {**status, "conditions": previous}, view.rollouts, generation, now,
            trigger=trigger, images=default_images(), unschedulable=view.unschedulable, asleep=asleep,
            starts=view.starts,
        ),
    )  # fmt: skip
    if conv.status is None:
        conds = logic.merge_conditions(previous, drifts)
        if conds != previous:  # only the served latency's verdict moved
            cluster.patch_status(namespace, name, {"conditions": conds})
        return "unchanged"  # idle: no API writes
    if view.unschedulable:
        _warn_on_change(body, previous, conv.status["conditions"])
    conds = apply_pass(conv, body, name, namespace, generation, now, previous)
    conv.status["conditions"] = logic.merge_conditions(conds, drifts)
    if conv.events:
        logger.info("re-planned (%s, %.2f images/s): %s", trigger, rate, conv.decision.plan.summary())
    cluster.patch_status(namespace, name, conv.status)
    return "applied" if conv.objects else "unchanged"
