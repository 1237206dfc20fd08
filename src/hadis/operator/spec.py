"""A DiffusionCascade's spec, parsed once into one typed, immutable object (pure).

The kopf handlers parse the raw spec with ``CascadeSpec.parse`` at the edge and hand the object
on; builders, planning and the re-plan daemon never read the dict. Every default lives in
``DEFAULTS`` (and ``MODEL_DEFAULTS``), the same values as the CRD's ``default:`` entries, so a
spec the API server did not default (``hadis plan --cascade``, an old object) reads the same;
``tests/test_cascade_spec.py`` reads every CRD default and compares.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hadis.core.surge import SurgeSettings

# The CRD's defaults, by path under spec (``models`` items apart). A default of the CRD that is
# not here, or differs, fails the test that compares them.
DEFAULTS: dict[str, Any] = {
    "gpuBudget": {"min": 2, "maxSurge": 0},
    "prometheus": {"url": "http://prometheus-operated:9090", "window": "2m", "timeoutSeconds": 5},
    "networkPolicy": {"enabled": True},
    "scaleToZero": {"enabled": False, "idleSeconds": 300, "coldStartTimeoutSeconds": 180},
    "profileDrift": {"enabled": True, "tolerance": 0.5, "window": "2m", "minBatches": 5},
    "planner": {
        "intervalSeconds": 10,
        "policy": "hadis",
        "objective": {"spareGpus": "Release"},
        "surge": {
            "enabled": True,
            "checkSeconds": 2,
            "window": "1m",
            "riseRatio": 1.25,
            "minRiseRps": 1,
            "fallRatio": 0.8,
            "cooldownSeconds": 2,
            "scaleDownDelaySeconds": 60,
        },
    },
    "router": {"replicas": 1, "scoring": "rule", "holdRequests": True},
}
MODEL_DEFAULTS: dict[str, Any] = {"gpusPerReplica": 1}


def with_defaults(raw: Mapping[str, Any] | None, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` over ``defaults``, nested mappings merged; a key set to null reads as its default."""
    out = copy.deepcopy(dict(defaults))
    for key, value in (raw or {}).items():
        if value is None:
            continue
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = with_defaults(value, out[key])
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class ModelEntry:
    """One of ``spec.models``: a model variant and how its workers run."""

    name: str
    worker_spec: str
    image: str | None = None
    gpus_per_replica: int = MODEL_DEFAULTS["gpusPerReplica"]
    resources: Mapping[str, Any] | None = None
    args: tuple[str, ...] = ()
    revision: str | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> ModelEntry:
        m = with_defaults(raw, MODEL_DEFAULTS)
        return cls(
            name=str(m["name"]),
            worker_spec=str(m["workerSpec"]),
            image=m.get("image") or None,
            gpus_per_replica=int(m["gpusPerReplica"]),
            resources=m.get("resources"),
            args=tuple(str(a) for a in m.get("args") or ()),
            revision=m.get("revision"),
        )


@dataclass(frozen=True)
class PrometheusSpec:
    url: str
    window: str  # rate window of the interval's demand query
    timeout_s: float


@dataclass(frozen=True)
class SurgeSpec:
    """``spec.planner.surge``: how often to check the rate, over which window, and the trigger."""

    check_s: float
    window: str
    settings: SurgeSettings


@dataclass(frozen=True)
class DriftSpec:
    enabled: bool
    tolerance: float
    window: str
    min_batches: int


@dataclass(frozen=True)
class ScaleToZeroSpec:
    """spec.scaleToZero: workers to 0 after ``idle_s`` without a request; a request wakes them
    and is held up to ``cold_start_timeout_s``."""

    idle_s: float
    cold_start_timeout_s: float


@dataclass(frozen=True)
class RouterAuthSpec:
    """spec.router.auth: the Secret of API keys (a key per data entry) and a quota per key."""

    secret_name: str
    requests_per_minute: float | None = None
    burst: int = 10


@dataclass(frozen=True)
class RouterSpec:
    replicas: int
    image: str | None
    scoring: str  # rule or learned
    model_configmap: str | None  # a learned router model's ConfigMap (scoring: learned only)
    resources: Mapping[str, Any] | None
    auth: RouterAuthSpec | None = None  # None: the images API asks for no key
    allow_from: tuple[Mapping[str, Any], ...] | None = None  # NetworkPolicy peers; None: anyone
    hold_requests: bool = True  # hold what a tier cannot start now while it can still be served


@dataclass(frozen=True)
class CascadeSpec:
    """What the operator reads of a DiffusionCascade spec, defaults applied."""

    models: tuple[ModelEntry, ...]
    slo_s: float
    gpu_min: int
    gpu_max: int
    profile_configmap: str
    prometheus: PrometheusSpec
    interval_s: float
    policy: str  # hadis or hadis-ref
    max_fid: float | None
    fill_budget: bool  # spec.planner.objective.spareGpus: Keep
    surge: SurgeSpec | None  # None: re-plans on the interval only
    drift: DriftSpec
    router: RouterSpec
    worker_image: str | None = None
    model_cache: Mapping[str, Any] | None = None  # spec.modelCache as written
    placement: Mapping[str, Any] | None = None  # spec.placement as written
    network_policy: bool = True
    scale_to_zero: ScaleToZeroSpec | None = None  # None: workers never go below the plan's
    max_surge: int = 0  # GPUs beyond gpu_max that pods a re-plan gives up may hold until new ones are Ready

    @property
    def rise_settle_s(self) -> float:
        """How long the demand counts as rising after a pass found it above the plan's rate
        (``hadis.core.surge.climbing``): the window of the rate the re-plans read, over which a
        step's rate climbs."""
        return duration_seconds(self.surge.window if self.surge else self.prometheus.window)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> CascadeSpec:
        """The typed spec; raises KeyError, TypeError or ValueError on a spec the CRD refuses."""
        s = with_defaults(raw, DEFAULTS)
        planner, prom, drift = s["planner"], s["prometheus"], s["profileDrift"]
        router = s["router"]
        max_fid = planner["objective"].get("maxFid")
        return cls(
            models=tuple(ModelEntry.parse(m) for m in s["models"]),
            slo_s=float(s["sloSeconds"]),
            gpu_min=int(s["gpuBudget"]["min"]),
            gpu_max=int(s["gpuBudget"]["max"]),
            profile_configmap=str(s["profile"]["configMapName"]),
            prometheus=PrometheusSpec(str(prom["url"]), str(prom["window"]), float(prom["timeoutSeconds"])),
            interval_s=float(planner["intervalSeconds"]),
            policy=str(planner["policy"]),
            max_fid=None if max_fid is None else float(max_fid),
            fill_budget=planner["objective"]["spareGpus"] == "Keep",
            surge=_surge(planner["surge"]),
            drift=DriftSpec(
                bool(drift["enabled"]), float(drift["tolerance"]), str(drift["window"]), int(drift["minBatches"])
            ),
            router=RouterSpec(
                replicas=int(router["replicas"]),
                image=router.get("image") or None,
                scoring=str(router["scoring"]),
                model_configmap=router.get("modelConfigMapName") if router["scoring"] == "learned" else None,
                resources=router.get("resources"),
                auth=_router_auth(router.get("auth")),
                allow_from=None if router.get("allowFrom") is None else tuple(router["allowFrom"]),
                hold_requests=bool(router["holdRequests"]),
            ),
            worker_image=s.get("workerImage") or None,
            model_cache=s.get("modelCache") or None,
            placement=s.get("placement") or None,
            network_policy=bool(s["networkPolicy"]["enabled"]),
            scale_to_zero=_scale_to_zero(s["scaleToZero"]),
            max_surge=int(s["gpuBudget"]["maxSurge"]),
        )

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    @property
    def gpus_per_replica(self) -> dict[str, int]:
        return {m.name: m.gpus_per_replica for m in self.models}

    def smallest_pair_gpus(self) -> int:
        """GPUs of one replica of each of the two models with the fewest GPUs per replica: no
        plan of this cascade can use fewer (a cascade serves a light and a heavy model)."""
        per = sorted(m.gpus_per_replica for m in self.models)
        return per[0] + per[1]


def _scale_to_zero(doc: Mapping[str, Any]) -> ScaleToZeroSpec | None:
    if not doc["enabled"]:
        return None
    return ScaleToZeroSpec(float(doc["idleSeconds"]), float(doc["coldStartTimeoutSeconds"]))


def _router_auth(auth: Mapping[str, Any] | None) -> RouterAuthSpec | None:
    if not auth:
        return None
    rpm = auth.get("requestsPerMinute")
    return RouterAuthSpec(
        str(auth["apiKeySecretName"]), None if rpm is None else float(rpm), int(auth.get("burst", RouterAuthSpec.burst))
    )


_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(duration: str) -> float:
    """Seconds of a Prometheus duration as the CRD admits it (``^[0-9]+(ms|s|m|h)$``)."""
    match = re.fullmatch(r"([0-9]+)(ms|s|m|h)", duration)
    if match is None:
        raise ValueError(f"not a duration like 30s, 1m or 500ms: {duration!r}")
    return int(match[1]) * _UNIT_SECONDS[match[2]]


def _surge(surge: Mapping[str, Any]) -> SurgeSpec | None:
    if not surge["enabled"]:
        return None
    settings = SurgeSettings(
        rise_ratio=float(surge["riseRatio"]),
        min_rise_rps=float(surge["minRiseRps"]),
        fall_ratio=float(surge["fallRatio"]),
        backlog_ratio=0.0,  # the operator sees rates, not queues
        cooldown_s=float(surge["cooldownSeconds"]),
        scale_down_delay_s=float(surge["scaleDownDelaySeconds"]),
    )
    return SurgeSpec(float(surge["checkSeconds"]), str(surge["window"]), settings)
