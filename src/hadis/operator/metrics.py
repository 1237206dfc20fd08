"""The operator's own Prometheus metrics, served at ``/metrics`` by ``hadis operator run``.

They say what the operator did, so a dashboard (or a test) can tell a re-plan that changed
nothing from one that did not happen: re-plans by outcome, reconciles, and the Lease.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector

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
    "last plan kept), failed",
    ["namespace", "cascade", "outcome"],
    registry=REGISTRY,
)
PROFILE_DRIFT = Gauge(
    "hadis_operator_profile_drift_ratio",
    "Served seconds per batch (Triton) over the profile's at the served batch size, per model (1 = as profiled)",
    ["namespace", "cascade", "model"],
    registry=REGISTRY,
)
LEADER = Gauge("hadis_operator_leader", "1 while this replica holds the Lease and acts", registry=REGISTRY)
LEASE_ATTEMPTS = Counter(
    "hadis_operator_lease_attempts_total",
    "Attempts to take or renew the Lease by result: acquired, renewed, held_by_other, error",
    ["result"],
    registry=REGISTRY,
)


def sample(name: str, **labels: str) -> float:
    """The current value of one series (0 when it has not been written yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0
