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
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import kopf
import kubernetes
from kubernetes.client.rest import ApiException

from hadis.core.bundle import PROFILE_KEY, TABLE_KEY, Bundle, from_configmap
from hadis.core.errors import DataError, NotFound
from hadis.operator import builders, drift, logic, metrics

FIELD_MANAGER = "hadis-operator"
APPLY = "application/apply-patch+yaml"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


_API: dict[str, Any] = {}


def api(kind: str) -> Any:
    """One API object per kind over one shared client: the connection pool (and its TLS
    sessions) is reused across calls instead of a new handshake per request."""
    if kind not in _API:
        if "client" not in _API:
            cfg = kubernetes.client.Configuration.get_default_copy()
            cfg.connection_pool_maxsize = 32  # the daemons' threads share it (urllib3's default: 10)
            _API["client"] = kubernetes.client.ApiClient(cfg)
        _API[kind] = getattr(kubernetes.client, kind)(_API["client"])
    return _API[kind]


def load_client_config() -> None:
    """The kubernetes client's credentials: the service account in a pod, else $KUBECONFIG."""
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        # read KUBECONFIG now: the client's default was fixed when the module was imported
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    _API.clear()  # clients made before now carry the old configuration


def _quiet_indexers(record: logging.LogRecord) -> bool:
    """Drop kopf's "Indexer '...' succeeded." lines: one per watched pod event is noise."""
    return not (record.levelno <= logging.INFO and str(record.msg).startswith("Indexer "))


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    load_client_config()
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
    require_crd()


CRD_NAME = f"{builders.PLURAL}.{builders.GROUP}"


def require_crd() -> None:
    """Refuse to start without the CRD (kopf would serve nothing and never notice it later)."""
    try:
        api("ApiextensionsV1Api").read_custom_resource_definition(CRD_NAME, _request_timeout=30)
    except ApiException as e:
        if e.status == 404:
            raise kopf.PermanentError(f"the CRD {CRD_NAME} is not installed (kubectl apply -f crds/)") from None
        raise


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod: the service account; elsewhere: $KUBECONFIG, read when the operator starts."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


# ------------------------------------------------------------------------------------- apply


def apply(obj: dict[str, Any], owner: dict[str, Any]) -> None:
    """Server-side apply with the operator's field manager: it owns only the fields it sets."""
    kopf.adopt(obj, owner=owner)
    ns, name, kind = obj["metadata"]["namespace"], obj["metadata"]["name"], obj["kind"]
    kwargs = {"field_manager": FIELD_MANAGER, "force": True, "_content_type": APPLY}
    if kind == "Deployment":
        api("AppsV1Api").patch_namespaced_deployment(name, ns, obj, **kwargs)
    elif kind == "Service":
        api("CoreV1Api").patch_namespaced_service(name, ns, obj, **kwargs)
    elif kind == "ConfigMap":
        api("CoreV1Api").patch_namespaced_config_map(name, ns, obj, **kwargs)
    elif kind == "ServiceAccount":
        api("CoreV1Api").patch_namespaced_service_account(name, ns, obj, **kwargs)
    elif kind == "Role":
        api("RbacAuthorizationV1Api").patch_namespaced_role(name, ns, obj, **kwargs)
    elif kind == "RoleBinding":
        api("RbacAuthorizationV1Api").patch_namespaced_role_binding(name, ns, obj, **kwargs)
    elif kind == "NetworkPolicy":
        api("NetworkingV1Api").patch_namespaced_network_policy(name, ns, obj, **kwargs)
    else:  # pragma: no cover
        raise ValueError(f"cannot apply {kind}")


_BUNDLES: dict[tuple[str, str], tuple[str, Bundle]] = {}


def _bundle(namespace: str, name: str, version: str, data: dict) -> Bundle:
    """Parse a profile ConfigMap's data once per version (its ``resourceVersion``)."""
    cached = _BUNDLES.get((namespace, name))
    if cached and cached[0] == version:
        return cached[1]
    bundle = from_configmap({"data": data}, f"ConfigMap {namespace}/{name}")
    _BUNDLES[(namespace, name)] = (version, bundle)
    return bundle


def read_bundle(namespace: str, name: str) -> Bundle:
    """The profile ConfigMap, read now."""
    try:
        cm = api("CoreV1Api").read_namespaced_config_map(name, namespace)
    except ApiException as e:
        if e.status == 404:
            raise NotFound(f"ConfigMap {namespace}/{name}", "not found") from None
        raise
    return _bundle(namespace, name, cm.metadata.resource_version or "", cm.data or {})


def bundle_of(namespace: str, name: str, profile: tuple[str, dict] | None) -> Bundle:
    """The parsed profile: from the index when it has the ConfigMap, else read now."""
    return read_bundle(namespace, name) if profile is None else _bundle(namespace, name, *profile)


def checked_bundle(namespace: str, spec: dict, profile: tuple[str, dict] | None) -> tuple[Bundle | None, str, str]:
    """The cascade's profile, or why it cannot plan with it: ``(None, reason, message)``."""
    name = spec["profile"]["configMapName"]
    try:
        bundle = bundle_of(namespace, name, profile)
    except DataError as e:
        return None, ("ProfileMissing" if isinstance(e, NotFound) else "ProfileInvalid"), str(e)
    missing = logic.missing_models(spec, bundle)
    if missing:
        return None, "ProfileMismatch", f"models not in profile {name}: {', '.join(missing)}"
    return bundle, "", ""


def default_images() -> builders.Images:
    """The operator's images (the chart sets both to its own version), else this version's."""
    return builders.Images(
        router=os.environ.get("HADIS_ROUTER_IMAGE") or builders.ROUTER_IMAGE,
        worker=os.environ.get("HADIS_WORKER_IMAGE") or builders.WORKER_IMAGE,
    )


# ------------------------------------------------------------------------------------- reconcile


@kopf.on.resume(builders.GROUP, builders.VERSION, builders.PLURAL)
@kopf.on.create(builders.GROUP, builders.VERSION, builders.PLURAL)
@kopf.on.update(builders.GROUP, builders.VERSION, builders.PLURAL, field="spec")
def reconcile(body, spec, name, namespace, meta, status, patch, logger, **_: Any) -> None:
    metrics.RECONCILES.labels(namespace, name).inc()
    for handler in ("reconcile", "replan"):  # at zero from the start: a rate of errors reads 0, not "no data"
        metrics.RECONCILE_ERRORS.labels(namespace, name, handler)
    try:
        _reconcile(body, spec, name, namespace, meta, status, patch, logger)
    except Exception:
        metrics.RECONCILE_ERRORS.labels(namespace, name, "reconcile").inc()
        raise  # kopf retries it


def _reconcile(body, spec, name, namespace, meta, status, patch, logger) -> None:
    generation = int(meta.get("generation", 0))
    previous = list(status.get("conditions") or [])
    now = _now()
    bundle, reason, msg = checked_bundle(namespace, spec, None)
    if bundle is None:
        kopf.warn(body, reason=reason, message=msg)
        patch.status["observedGeneration"] = generation
        patch.status["conditions"] = logic.merge_conditions(
            previous, logic.problem_conditions(reason, msg, generation, now, previous)
        )
        return  # no exception: no crash loop; a change of the spec or the daemon retries
    rate = float((status.get("plan") or {}).get("demandRps") or 0.0)
    conv = planned(
        spec, name, namespace, "reconcile", now,
        lambda: logic.converge(
            dict(spec), name, namespace, bundle, rate, status, [], generation, now, reconcile=True,
            images=default_images(),
        ),
    )  # fmt: skip
    assert conv.status is not None  # a reconcile always writes
    conv.status["conditions"] = apply_pass(conv, body, name, namespace, generation, now, previous)
    for key, value in conv.status.items():
        patch.status[key] = value
    logger.info("reconciled: %s", json.dumps(conv.status["plan"]["replicas"]))


def planned(
    spec: dict, name: str, namespace: str, trigger: str, now: dt.datetime, plan: Callable[[], logic.Convergence]
) -> logic.Convergence:
    """One planning pass (``plan``), timed and counted by trigger; the plan it decides becomes
    the plan gauges (whether or not it changed anything)."""
    t0 = time.perf_counter()
    conv = plan()
    metrics.PLAN_DURATION.observe(time.perf_counter() - t0)
    metrics.PLANS.labels(namespace, name, trigger or "timer").inc()
    doc = logic.plan_status(conv.decision.plan, conv.decision.replicas, now)
    metrics.record_plan(namespace, name, doc, float(spec["sloSeconds"]))
    return conv


def apply_pass(
    conv: logic.Convergence, body: dict, name: str, namespace: str, generation: int, now: dt.datetime, previous: list
) -> list[dict]:
    """Apply what a planning pass wants applied and post its events; the conditions with the
    rollout read back after the apply (the one I/O both paths share)."""
    assert conv.status is not None
    conds = conv.status["conditions"]
    for obj in conv.objects:
        try:
            apply(obj, body)
        except ApiException as e:
            if not refused(e):
                raise  # the API server is away or overloaded: the next pass tries again
            # The API server will never take this object as built from this spec: say which
            # and why, once, and wait for a spec change (the reconcile) rather than retry.
            msg = f"{obj['kind']} {namespace}/{obj['metadata']['name']}: {api_message(e)}"
            failed = logic.merge_conditions(conds, logic.apply_failed(msg, generation, now, previous))
            _warn_on_change(body, previous, failed)
            return failed
    if conv.objects:
        after = logic.rollout_condition(worker_rollout(name, namespace), generation, now, previous)
        conds = logic.merge_conditions(conds, [after])
    for reason, message in conv.events:
        kopf.event(body, type="Normal", reason=reason, message=message)
    return conds


def refused(e: ApiException) -> bool:
    """A 4xx other than a conflict or throttling: the request itself is wrong (invalid, forbidden)."""
    return e.status is not None and 400 <= e.status < 500 and e.status not in (409, 429)


def api_message(e: ApiException) -> str:
    """The API server's own words for a refusal (its Status message), else the HTTP reason."""
    try:
        return str(json.loads(e.body or "{}").get("message") or e.reason)
    except (ValueError, AttributeError):
        return str(e.reason)


@kopf.daemon(builders.GROUP, builders.VERSION, builders.PLURAL, initial_delay=5.0, cancellation_timeout=5.0)
async def replan(
    stopped, body, spec, name, namespace, logger, worker_rollouts, unschedulable_pods, profile_configmaps, **_: Any
) -> None:
    """Re-plan from the router's arrival rate in Prometheus: on ``spec.planner.intervalSeconds``,
    and with ``spec.planner.surge`` (the default) early, when a check every ``checkSeconds``
    finds the rate risen (``hadis.core.surge``; the estimator is ``FastRiseEstimator``, as in
    the simulator)."""
    try:
        clock: logic.ReplanClock | None = None
        while not stopped:
            interval = float((spec.get("planner") or {}).get("intervalSeconds", 10))
            surge = logic.surge_spec(spec)
            if clock is None or (clock.interval_s, clock.surge) != (interval, surge):  # new, or the spec changed
                planned = ((body.get("status") or {}).get("plan") or {}).get("demandRps")
                clock = logic.ReplanClock.start(interval, surge, time.monotonic(), planned)
            await asyncio.sleep(clock.step_s)
            prom = spec.get("prometheus") or {}
            url = prom.get("url", "http://prometheus-operated:9090")
            rate: float | None = None
            error = ""
            window = clock.window or prom.get("window", "30s")
            timeout_s = float(prom.get("timeoutSeconds", 5))
            try:
                rate = cached_rate(url, name, window)  # another cascade's check just asked
                if rate is None:
                    rate = await asyncio.to_thread(query_rate, url, name, window, timeout_s)
                problem = logic.rate_problem(rate)
                if problem:
                    rate, error = None, f"{problem}; keeping the last plan"
            except Exception as e:
                error = f"{metrics_failure(e, timeout_s)}; keeping the last plan"
            decision = clock.tick(time.monotonic(), rate)
            if decision is None:
                continue  # a quiet check: nothing read from or written to the API server
            rate, why = decision
            served = None
            if rate is not None and drift.settings(spec)["enabled"]:
                try:
                    served = await asyncio.to_thread(query_served, url, namespace, name, spec, timeout_s)
                except Exception as e:  # the condition keeps its last word; the rate's failure is reported
                    logger.debug("served latency not read: %s", e)
            key = (namespace, name)
            view = ClusterView(
                rollouts=sorted(worker_rollouts.get(key, []), key=lambda w: w.model),
                unschedulable=len(list(unschedulable_pods.get(key, []))),
                profile=next(iter(profile_configmaps.get((namespace, spec["profile"]["configMapName"]), [])), None),
            )
            metrics.METRICS_AVAILABLE.labels(namespace, name).set(0 if rate is None else 1)
            metrics.UNSCHEDULABLE.labels(namespace, name).set(view.unschedulable)
            try:
                outcome = await asyncio.to_thread(replan_once, dict(body), view, logger, rate, error, why, served)
            except Exception as e:  # a daemon must outlive any one failure
                outcome = "failed"
                metrics.RECONCILE_ERRORS.labels(namespace, name, "replan").inc()
                logger.warning("re-plan failed: %s", e)
            metrics.REPLANS.labels(namespace, name, outcome).inc()
    finally:  # deleted (or the operator stops): its series go with it
        metrics.forget(namespace, name)


@functools.lru_cache(maxsize=64)
def _prometheus(url: str) -> Any:
    """One client (and HTTP session) per Prometheus URL. A refused connection is tried once
    more; a timeout is not (the next check asks again), so a slow Prometheus costs one timeout."""
    from prometheus_api_client import PrometheusConnect
    from urllib3.util.retry import Retry

    return PrometheusConnect(url=url, disable_ssl=True, retry=Retry(total=1, read=False, backoff_factor=0.2))


def metrics_failure(e: Exception, timeout_s: float) -> str:
    """What went wrong reading the arrival rate, in the words of the MetricsUnavailable condition."""
    import requests

    if isinstance(e, requests.Timeout):
        return f"Prometheus did not answer within {timeout_s:g}s"
    if isinstance(e, requests.ConnectionError):
        return f"Prometheus unreachable ({type(e).__name__})"
    return f"Prometheus query failed ({type(e).__name__}: {str(e)[:200]})"


_RATES: dict[tuple[str, str], tuple[float, dict[str, float]]] = {}
_RATES_LOCK = threading.Lock()
RATES_MAX_AGE_S = 0.9  # below the shortest check period (1 s)


def cached_rate(url: str, cascade: str, window: str) -> float | None:
    """The cascade's rate from a fresh enough shared answer, or None (no I/O: safe on the loop)."""
    hit = _RATES.get((url, window))
    if hit is None or time.monotonic() - hit[0] > RATES_MAX_AGE_S:
        return None
    return hit[1].get(cascade, 0.0)


def query_rate(url: str, cascade: str, window: str, timeout_s: float = 5.0) -> float:
    """The cascade's arrival rate. All cascades' rates come from one query, reused for
    ``RATES_MAX_AGE_S``: 100 cascades checking every 2 s cost Prometheus 0.5 queries/s, not 50."""
    with _RATES_LOCK:
        rate = cached_rate(url, cascade, window)
        if rate is not None:
            return rate
        query = logic.ARRIVAL_RATES_QUERY.format(window=window)
        result = _prometheus(url).custom_query(query, params={"timeout": f"{timeout_s:g}s"}, timeout=timeout_s)
        rates = {r["metric"].get("cascade", ""): float(r["value"][1]) for r in result}
        _RATES[(url, window)] = (time.monotonic(), rates)
    return rates.get(cascade, 0.0)


_SERVED: dict[tuple[str, str], tuple[float, dict]] = {}
_SERVED_LOCK = threading.Lock()
SERVED_MAX_AGE_S = 5.0  # served figures move slowly (a window of minutes): one answer serves all cascades


def query_served(url: str, namespace: str, name: str, spec: dict, timeout_s: float) -> dict[str, drift.Served]:
    """What the cascade's workers served over ``spec.profileDrift.window``, by Triton model."""
    window = drift.settings(spec)["window"]
    with _SERVED_LOCK:
        hit = _SERVED.get((url, window))
        if hit is None or time.monotonic() - hit[0] > SERVED_MAX_AGE_S:
            series = {}
            for key, query in drift.queries(window).items():
                answer = _prometheus(url).custom_query(query, params={"timeout": f"{timeout_s:g}s"}, timeout=timeout_s)
                series[key] = {
                    (r["metric"].get("namespace", ""), r["metric"].get("pod", ""), r["metric"].get("model", "")):
                    float(r["value"][1]) for r in answer
                }  # fmt: skip
            hit = (time.monotonic(), series)
            _SERVED[(url, window)] = hit
    deployments = [builders.worker_name(name, m.name) for m in builders.models_of(spec)]
    return drift.served_of(drift.cascade_totals(hit[1], namespace, deployments))


def drift_condition(
    spec: dict, name: str, namespace: str, bundle: Bundle, served: dict[str, drift.Served] | None,
    generation: int, now: dt.datetime, previous: list,
) -> dict | None:  # fmt: skip
    """The ProfileDrift condition (None: not judged this pass), and its gauge per model."""
    cfg = drift.settings(spec)
    if served is None or not cfg["enabled"]:
        return None
    found = drift.findings(bundle.profile, drift.triton_models(spec), served)
    for f in found:
        if f.ratio is not None:
            metrics.PROFILE_DRIFT.labels(namespace, name, f.model).set(f.ratio)
    return drift.drift_condition(
        found, float(cfg["tolerance"]), int(cfg["minBatches"]), cfg["window"], generation, now, previous
    )


def _warn_on_drift(body: dict, previous: list, cond: dict | None) -> None:
    """One Warning event when the served latency leaves the profile's tolerance."""
    if cond and cond["status"] == "True" and logic.condition_reason(previous, drift.CONDITION) is None:
        kopf.warn(body, reason=drift.CONDITION, message=cond["message"])


def worker_rollout(name: str, namespace: str) -> list[logic.WorkerRollout]:
    """Each worker Deployment's progress, read now (one list call; after applying a plan)."""
    apps = api("AppsV1Api")
    deps = apps.list_namespaced_deployment(namespace, label_selector=_selector(name))
    as_dicts = [apps.api_client.sanitize_for_serialization(d) for d in deps.items]
    return sorted((logic.rollout_of(d) for d in as_dicts), key=lambda w: w.model)


def _selector(cascade: str) -> str:
    return f"{builders.CASCADE_LABEL}={cascade},app.kubernetes.io/component=worker"


# ------------------------------------------------------------------------------------- indexes
# What the re-plan daemon needs of the cluster on every tick, kept current by kopf from watch
# streams, so an idle cascade costs no API request (polling cost three per tick per cascade).

WORKERS = {builders.CASCADE_LABEL: kopf.PRESENT, "app.kubernetes.io/component": "worker"}


@kopf.index("apps", "v1", "deployments", labels=WORKERS)
def worker_rollouts(body, namespace, labels, **_: Any) -> dict:
    return {(namespace, labels[builders.CASCADE_LABEL]): logic.rollout_of(body)}


def _is_unschedulable(body, **_: Any) -> bool:
    return logic.unschedulable(body)


# A filter, not a None result: kopf keeps an object's last value when its index function returns
# None, so a pod that was unschedulable for a moment (its claim not yet bound) stayed counted
# after it ran, and the cascade said PodsUnschedulable for good. A pod that stops matching the
# filter is taken out of the index.
@kopf.index("v1", "pods", labels=WORKERS, when=_is_unschedulable)
def unschedulable_pods(namespace, labels, **_: Any) -> dict:
    return {(namespace, labels[builders.CASCADE_LABEL]): True}


def _is_profile(body, **_: Any) -> bool:
    data = body.get("data") or {}
    return PROFILE_KEY in data and TABLE_KEY in data


@kopf.index("v1", "configmaps", when=_is_profile)
def profile_configmaps(body, namespace, name, meta, **_: Any) -> dict:
    return {(namespace, name): (meta.get("resourceVersion", ""), dict(body.get("data") or {}))}


@dataclasses.dataclass(frozen=True)
class ClusterView:
    """One tick's snapshot of the indexes for one cascade (taken on the event loop's thread)."""

    rollouts: list[logic.WorkerRollout]
    unschedulable: int
    profile: tuple[str, dict] | None  # (resourceVersion, data) of the profile ConfigMap


def _patch_status(namespace: str, name: str, status: dict) -> None:
    api("CustomObjectsApi").patch_namespaced_custom_object_status(
        builders.GROUP, builders.VERSION, namespace, builders.PLURAL, name, {"status": status}
    )


def _warn_on_change(body: dict, previous: list, conds: list) -> None:
    """One Warning event when the Degraded reason becomes a new problem."""
    degraded = next((c for c in conds if c["type"] == "Degraded"), None)
    if degraded and degraded["status"] == "True" and logic.condition_reason(previous, "Degraded") != degraded["reason"]:
        kopf.warn(body, reason=degraded["reason"], message=degraded["message"])


def replan_once(
    body: dict,
    view: ClusterView,
    logger,
    rate: float | None,
    error: str = "",
    trigger: str = "timer",
    served: dict[str, drift.Served] | None = None,
) -> str:
    """One re-plan: conditions from the cluster, then a plan for ``rate`` (req/s), or, when
    Prometheus failed (``rate`` None), the MetricsUnavailable condition and the last plan kept.

    A profile that is gone, broken or not the models' keeps the last plan too, with its own
    condition (ProfileMissing, ProfileInvalid, ProfileMismatch). ``served`` (what the workers
    served, from Triton's counters) sets ProfileDrift. Writes only when the plan or a condition
    changed. Returns the outcome, as counted in ``hadis_operator_replans_total``:
    applied, unchanged, metrics_unavailable, profile_unavailable or awaiting_reconcile."""
    spec, meta, status = body["spec"], body["metadata"], body.get("status") or {}
    name, namespace = meta["name"], meta["namespace"]
    generation = int(meta.get("generation", 0))
    if int(status.get("observedGeneration") or 0) < generation:
        # A new spec the reconcile has not written its status for yet: conditions built on the
        # old status would overwrite what the reconcile is about to write (a refused object's
        # ApplyFailed, kept forever once written back). The next check re-plans.
        return "awaiting_reconcile"
    previous = list(status.get("conditions") or [])
    now = _now()
    rollout = logic.rollout_condition(view.rollouts, generation, now, previous)
    pending = view.unschedulable
    bundle, reason, problem = checked_bundle(namespace, spec, view.profile)
    if bundle is None:  # deleted, broken or not matching the models: keep what runs, say why
        msg = f"{problem}; keeping the last plan" if status.get("plan") else problem
        conds = logic.merge_conditions(previous, logic.problem_conditions(reason, msg, generation, now, previous))
        _warn_on_change(body, previous, conds)
        if conds != previous:
            _patch_status(namespace, name, {"conditions": conds})
        return "profile_unavailable"
    drift_cond = drift_condition(spec, name, namespace, bundle, served, generation, now, previous)
    _warn_on_drift(body, previous, drift_cond)
    drifts = [drift_cond] if drift_cond else []
    if rate is None:
        msg = error or "no arrival rate; keeping the last plan"
        if pending:  # the scheduling problem is the one to show
            problems = logic.unschedulable_conditions(pending, generation, now, previous)
        else:
            problems = [
                logic.condition("Degraded", True, "MetricsUnavailable", msg, generation, now, previous),
                *logic.ready_once_cleared(previous, status.get("plan"), generation, now),
            ]
        conds = logic.merge_conditions(previous, [rollout, *problems, *drifts])
        _warn_on_change(body, previous, conds)
        if conds != previous:
            _patch_status(namespace, name, {"conditions": conds})
        return "metrics_unavailable"
    conv = planned(
        spec, name, namespace, trigger, now,
        lambda: logic.converge(
            spec, name, namespace, bundle, rate, {**status, "conditions": previous}, view.rollouts, generation, now,
            trigger=trigger, images=default_images(), unschedulable=pending,
        ),
    )  # fmt: skip
    if conv.status is None:
        conds = logic.merge_conditions(previous, drifts)
        if conds != previous:  # only the served latency's verdict moved
            _patch_status(namespace, name, {"conditions": conds})
        return "unchanged"  # idle: no API writes
    if pending:
        _warn_on_change(body, previous, conv.status["conditions"])
    conds = apply_pass(conv, body, name, namespace, generation, now, previous)
    conv.status["conditions"] = logic.merge_conditions(conds, drifts)
    if conv.events:
        logger.info("re-planned (%s, %.2f req/s): %s", trigger, rate, conv.decision.plan.summary())
    _patch_status(namespace, name, conv.status)
    return "applied" if conv.objects else "unchanged"
