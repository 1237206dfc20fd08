"""The operator's own Prometheus metrics, served at ``/metrics`` by ``hadis operator run``.

They say what the operator did, so a dashboard (or a test) can tell a re-plan that changed
nothing from one that did not happen: re-plans by outcome, reconciles, and the Lease.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # process_resident_memory_bytes and the rest, as exporters do

RECONCILES = Counter(
    "hadis_operator_reconciles_total",
    "Reconciles of a cascade (create, spec change, operator start)",
    ["namespace", "cascade"],
    registry=REGISTRY,
)
REPLANS = Counter(
    "hadis_operator_replans_total",
    "Re-plans of a cascade by outcome: applied (the plan changed), unchanged (the same plan; "
    "no API write unless a condition changed), metrics_unavailable and profile_unavailable (the "
    "last plan kept), awaiting_reconcile (a new spec not yet reconciled), failed",
    ["namespace", "cascade", "outcome"],
    registry=REGISTRY,
)
PROFILE_DRIFT = Gauge(
    "hadis_operator_profile_drift_ratio",
    "Served seconds per batch (Triton) over the profile's at the served batch size, per model (1 = as profiled)",
    ["namespace", "cascade", "model"],
    registry=REGISTRY,
)
PLANS = Counter(
    "hadis_operator_plans_total",
    "Planning passes by trigger: reconcile (create, spec change, operator start), timer (the "
    "planner interval), and the surge trigger's initial, rise, backlog and fall (hadis.core.surge)",
    ["namespace", "cascade", "trigger"],
    registry=REGISTRY,
)
PLAN_DURATION = Histogram(
    "hadis_operator_plan_duration_seconds",
    "Time of one planning pass: the planner's decision and the objects built from it",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "hadis_operator_reconcile_errors_total",
    "Handler runs that raised (handler=reconcile, kopf retries it) or re-plans that failed "
    "(handler=replan, the next check tries again)",
    ["namespace", "cascade", "handler"],
    registry=REGISTRY,
)
PLAN_DEMAND = Gauge(
    "hadis_operator_plan_demand_requests_per_second",
    "The arrival rate the plan in force was made for",
    ["namespace", "cascade"],
    registry=REGISTRY,
)
PLAN_PREDICTED_LATENCY = Gauge(
    "hadis_operator_plan_predicted_latency_seconds",
    "The planner's predicted latency of the plan in force at its demand (NaN: none predicted)",
    ["namespace", "cascade"],
    registry=REGISTRY,
)
PLAN_INFO = Gauge(
    "hadis_operator_plan_info",
    "The model pair of the plan in force (1 for the pair in force; no series for others)",
    ["namespace", "cascade", "light", "heavy"],
    registry=REGISTRY,
)
PLAN_RATIO = Gauge(
    "hadis_operator_plan_ratio",
    "The plan's shares: kind=router (prompts sent straight to heavy), kind=disc (light images escalated)",
    ["namespace", "cascade", "kind"],
    registry=REGISTRY,
)
PLAN_REPLICAS = Gauge(
    "hadis_operator_plan_replicas",
    "Worker replicas the plan in force asks for, per model",
    ["namespace", "cascade", "model"],
    registry=REGISTRY,
)
PLAN_FEASIBLE = Gauge(
    "hadis_operator_plan_feasible",
    "1 when the plan in force meets the SLO at its demand within the GPU budget, 0 for the fallback",
    ["namespace", "cascade"],
    registry=REGISTRY,
)
SLO = Gauge(
    "hadis_operator_slo_seconds",
    "The cascade's latency SLO (spec.sloSeconds)",
    ["namespace", "cascade"],
    registry=REGISTRY,
)
METRICS_AVAILABLE = Gauge(
    "hadis_operator_demand_metrics_available",
    "1 when the last re-plan read the arrival rate from Prometheus, 0 when it could not (plan kept)",
    ["namespace", "cascade"],
    registry=REGISTRY,
)
UNSCHEDULABLE = Gauge(
    "hadis_operator_unschedulable_worker_pods",
    "Worker pods the scheduler reports Unschedulable (waiting for GPUs), as of the last re-plan",
    ["namespace", "cascade"],
    registry=REGISTRY,
)
LEADER = Gauge("hadis_operator_leader", "1 while this replica holds the Lease and acts", registry=REGISTRY)
LEASE_ATTEMPTS = Counter(
    "hadis_operator_lease_attempts_total",
    "Attempts to take or renew the Lease by result: acquired, renewed, held_by_other, error",
    ["result"],
    registry=REGISTRY,
)


_PER_CASCADE = (
    RECONCILES, REPLANS, PROFILE_DRIFT, PLANS, RECONCILE_ERRORS, PLAN_DEMAND, PLAN_PREDICTED_LATENCY,
    PLAN_INFO, PLAN_RATIO, PLAN_REPLICAS, PLAN_FEASIBLE, SLO, METRICS_AVAILABLE, UNSCHEDULABLE,
)  # fmt: skip


def record_plan(namespace: str, cascade: str, plan: Mapping[str, Any], slo_s: float) -> None:
    """The plan in force (a ``status.plan`` document) as gauges: one pair series, the shares,
    replicas per model, its demand and whether it is feasible."""
    _remove(PLAN_INFO, namespace, cascade)
    PLAN_INFO.labels(namespace, cascade, plan["light"], plan["heavy"]).set(1)
    PLAN_RATIO.labels(namespace, cascade, "router").set(plan["routerRatio"])
    PLAN_RATIO.labels(namespace, cascade, "disc").set(plan["discRatio"])
    _remove(PLAN_REPLICAS, namespace, cascade)
    for model, n in plan["replicas"].items():
        PLAN_REPLICAS.labels(namespace, cascade, model).set(n)
    PLAN_DEMAND.labels(namespace, cascade).set(plan["demandRps"])
    latency = plan.get("predictedLatencySeconds")
    PLAN_PREDICTED_LATENCY.labels(namespace, cascade).set(float("nan") if latency is None else latency)
    PLAN_FEASIBLE.labels(namespace, cascade).set(1 if plan.get("feasible", True) else 0)
    SLO.labels(namespace, cascade).set(slo_s)


def forget(namespace: str, cascade: str) -> None:
    """Drop a cascade's series: it is deleted, or this replica no longer acts for it."""
    for metric in _PER_CASCADE:
        _remove(metric, namespace, cascade)


def forget_plans() -> None:
    """Drop every plan gauge (this replica lost the Lease: the leader reports the plans now)."""
    for metric in _PER_CASCADE:
        if isinstance(metric, Gauge):
            metric.clear()


def _remove(metric: Any, namespace: str, cascade: str) -> None:
    for labels in [k for k in list(metric._metrics) if k[:2] == (namespace, cascade)]:  # the client lists no children
        metric.remove(*labels)


def sample(name: str, **labels: str) -> float:
    """The current value of one series (0 when it has not been written yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0
