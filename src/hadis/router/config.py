"""The router's configuration file (``hadis.router-config/v1``), parsed and validated.

The operator writes it into a ConfigMap that is mounted into the router pod; ``hadis up``
writes one for a local data plane. Example::

    apiVersion: hadis.router-config/v1
    cascade: demo                 # the label on every metric
    sloSeconds: 6
    size: 64x64                   # the image size the models produce
    routerRatio: 0.2              # share of prompts sent straight to heavy
    discRatio: 0.3                # share of light results escalated
    light:
      name: tiny-light            # Triton model name
      endpoints: [127.0.0.1:8000] # Triton HTTP endpoints, one per replica (or the tier's Service)
      # optional: the Service whose EndpointSlices list the tier's pods; the router then sends
      # each image to the ready pod with the least work in flight (endpoints are the fallback)
      discovery: {namespace: default, service: demo-tiny-light, port: http}
      # optional: the planning profile's figures, used until the router has measured its own;
      # slotsPerReplica: images one pod takes at once (late binding), startSeconds: a new pod's
      # start (requests are held for the pods the plan is bringing up)
      capacity: {baseSeconds: 1.0, imagesPerSecondPerReplica: 4.0, replicas: 2, slotsPerReplica: 4, startSeconds: 20}
    heavy:
      name: tiny-heavy
      endpoints: [127.0.0.1:8010]
    routers: {replicas: 1}        # router replicas sharing the tiers (and their discovery)
    scoring: {mode: rule}         # or {mode: learned, modelFile: /etc/hadis/router-model.json}
    limits: {maxN: 4, maxPromptChars: 4000, maxBodyBytes: 65536, maxInFlight: 64, bodyTimeoutSeconds: 10,
             holdRequests: true}  # false: shed at once what a tier cannot start now
    # optional: API keys (one file per key, as a mounted Secret: file name = key name, content =
    # token); requests need "Authorization: Bearer <token>". requestsPerMinute: a quota per key.
    auth: {apiKeysDir: /etc/hadis/api-keys, requestsPerMinute: 60, burst: 10}
    # optional, scale to zero: hold a request that finds no pod up to timeoutSeconds, and wake
    # the cascade by annotating this Lease (the operator watches it)
    coldStart: {timeoutSeconds: 180, wakeLease: {namespace: default, name: demo-wake}}

Unknown keys are refused (a typo must not silently change behaviour).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from hadis.core.errors import DataError

API_VERSION = "hadis.router-config/v1"
_SIZE_RE = re.compile(r"^(\d{2,5})x(\d{2,5})$")
_ENDPOINT_RE = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


@dataclass(frozen=True)
class Discovery:
    """A Service whose EndpointSlices the router watches (``port``: the port's name)."""

    namespace: str
    service: str
    port: str = "http"


@dataclass(frozen=True)
class Capacity:
    """What the planning profile says one tier can do, before the router has measured it."""

    base_s: float  # one image alone
    per_replica: float  # images per second one busy replica completes
    replicas: int  # planned; the discovered ready replicas replace it when known
    slots: int | None = None  # images one replica takes at once (late binding); None: no limit
    start_s: float | None = None  # a new replica's start, created to Ready (holding counts on it)


@dataclass(frozen=True)
class Tier:
    name: str  # the Triton model name the tier's workers serve
    endpoints: tuple[str, ...]
    timeout_s: float | None = None  # per call; default: the remaining deadline
    discovery: Discovery | None = None
    capacity: Capacity | None = None


@dataclass(frozen=True)
class Routers:
    """The router replicas that share the tiers: each admits against 1/replicas of them."""

    replicas: int = 1
    discovery: Discovery | None = None  # the routers' own Service: its ready pods are counted


@dataclass(frozen=True)
class Limits:
    max_n: int = 4
    max_prompt_chars: int = 4000
    max_body_bytes: int = 64 * 1024
    max_in_flight: int = 64  # images in flight per tier before new requests are shed
    # Hold a request that a tier cannot start now while a slot or a coming pod can still serve it
    # within the SLO (hadis.router.holding); off: shed it at once, as before holding existed.
    hold: bool = True
    # A body not received whole within this long is refused (408): a slow upload, or a chunked
    # one that never ends, holds neither memory nor a connection for longer.
    body_timeout_s: float = 10.0


@dataclass(frozen=True)
class Auth:
    """API keys read from ``api_keys_dir``; with ``requests_per_minute``, a quota per key."""

    api_keys_dir: str
    requests_per_minute: float | None = None
    burst: int = 10


@dataclass(frozen=True)
class ColdStart:
    """Scale to zero: a request that finds a tier with no pod is held up to ``timeout_s`` (past
    the SLO if need be) while the router wakes the cascade by annotating the Lease
    ``namespace/lease``."""

    timeout_s: float
    namespace: str
    lease: str


@dataclass(frozen=True)
class Scoring:
    mode: str = "rule"
    model_file: str | None = None
    window: int = 2000


@dataclass(frozen=True)
class RouterConfig:
    cascade: str
    slo_s: float
    size: str
    light: Tier
    heavy: Tier
    router_ratio: float = 0.0
    disc_ratio: float = 0.0
    scoring: Scoring = field(default_factory=Scoring)
    limits: Limits = field(default_factory=Limits)
    routers: Routers = field(default_factory=Routers)
    auth: Auth | None = None  # None: no key is asked for
    cold_start: ColdStart | None = None  # None: the cascade is never scaled to zero

    @property
    def width_height(self) -> tuple[int, int]:
        m = _SIZE_RE.match(self.size)
        assert m
        return int(m.group(1)), int(m.group(2))


def _take(doc: dict, source: str, path: str, allowed: set[str]) -> None:
    extra = sorted(set(doc) - allowed)
    if extra:
        raise DataError(source, f"unknown key(s) {', '.join(extra)}; allowed: {', '.join(sorted(allowed))}", field=path)


def _number(doc: dict, key: str, source: str, path: str, lo: float, hi: float, default: float | None = None) -> float:
    v = doc.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not lo <= v <= hi:
        raise DataError(source, f"must be a number in [{lo:g}, {hi:g}], got {v!r}", field=f"{path}{key}")
    return float(v)


def _int(doc: dict, key: str, source: str, path: str, lo: int, hi: int, default: int) -> int:
    v = doc.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise DataError(source, f"must be an integer in [{lo}, {hi}], got {v!r}", field=f"{path}{key}")
    return v


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def _discovery(doc: Any, source: str, key: str, need_port: bool = True) -> Discovery | None:
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise DataError(source, "must be a mapping with namespace and service", field=key)
    _take(doc, source, key, {"namespace", "service", "port"} if need_port else {"namespace", "service"})
    for k in ("namespace", "service"):
        if not isinstance(doc.get(k), str) or not _DNS_LABEL.match(doc[k]):
            raise DataError(source, "must be a DNS label", field=f"{key}.{k}")
    port = doc.get("port", "http")
    if not isinstance(port, str) or not port:
        raise DataError(source, "must be a port name", field=f"{key}.port")
    return Discovery(doc["namespace"], doc["service"], port)


def _capacity(doc: Any, source: str, key: str) -> Capacity | None:
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise DataError(source, "must be a mapping", field=key)
    _take(doc, source, key, {"baseSeconds", "imagesPerSecondPerReplica", "replicas", "slotsPerReplica", "startSeconds"})
    return Capacity(
        base_s=_number(doc, "baseSeconds", source, f"{key}.", 0.0001, 86400),
        per_replica=_number(doc, "imagesPerSecondPerReplica", source, f"{key}.", 0.0001, 1e6),
        replicas=_int(doc, "replicas", source, f"{key}.", 0, 100_000, 1),
        slots=_int(doc, "slotsPerReplica", source, f"{key}.", 1, 4096, 1) if "slotsPerReplica" in doc else None,
        start_s=_number(doc, "startSeconds", source, f"{key}.", 0.0, 86400) if "startSeconds" in doc else None,
    )


def _cold_start(doc: Any, source: str) -> ColdStart | None:
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise DataError(source, "must be a mapping with timeoutSeconds and wakeLease", field="coldStart")
    _take(doc, source, "coldStart", {"timeoutSeconds", "wakeLease"})
    lease = doc.get("wakeLease")
    if not isinstance(lease, dict):
        raise DataError(source, "must be a mapping with namespace and name", field="coldStart.wakeLease")
    _take(lease, source, "coldStart.wakeLease", {"namespace", "name"})
    for k in ("namespace", "name"):
        if not isinstance(lease.get(k), str) or not _DNS_SUBDOMAIN.match(lease[k]):
            raise DataError(source, "must be a DNS name", field=f"coldStart.wakeLease.{k}")
    timeout = _number(doc, "timeoutSeconds", source, "coldStart.", 1, 86400)
    return ColdStart(timeout, lease["namespace"], lease["name"])


def _limits(limits_doc: Any, source: str) -> Limits:
    limits_doc = limits_doc or {}
    if not isinstance(limits_doc, dict):
        raise DataError(source, "must be a mapping", field="limits")
    _take(
        limits_doc,
        source,
        "limits",
        {"maxN", "maxPromptChars", "maxBodyBytes", "maxInFlight", "bodyTimeoutSeconds", "holdRequests"},
    )
    hold = limits_doc.get("holdRequests", Limits.hold)
    if not isinstance(hold, bool):
        raise DataError(source, f"must be true or false, got {hold!r}", field="limits.holdRequests")
    return Limits(
        max_n=_int(limits_doc, "maxN", source, "limits.", 1, 16, Limits.max_n),
        max_prompt_chars=_int(limits_doc, "maxPromptChars", source, "limits.", 1, 1_000_000, Limits.max_prompt_chars),
        max_body_bytes=_int(
            limits_doc, "maxBodyBytes", source, "limits.", 1024, 16 * 1024 * 1024, Limits.max_body_bytes
        ),
        max_in_flight=_int(limits_doc, "maxInFlight", source, "limits.", 1, 100_000, Limits.max_in_flight),
        body_timeout_s=_number(limits_doc, "bodyTimeoutSeconds", source, "limits.", 0.1, 600, Limits.body_timeout_s),
        hold=hold,
    )


def _tier(doc: Any, source: str, key: str) -> Tier:
    if not isinstance(doc, dict):
        raise DataError(source, "must be a mapping with name and endpoints", field=key)
    _take(doc, source, key, {"name", "endpoints", "timeoutSeconds", "discovery", "capacity"})
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise DataError(source, "must be a non-empty string (the Triton model name)", field=f"{key}.name")
    eps = doc.get("endpoints")
    if not isinstance(eps, list) or not eps or not all(isinstance(e, str) and _ENDPOINT_RE.match(e) for e in eps):
        raise DataError(source, "must be a non-empty list of host:port", field=f"{key}.endpoints")
    timeout = None
    if "timeoutSeconds" in doc:
        timeout = _number(doc, "timeoutSeconds", source, f"{key}.", 0.001, 3600)
    return Tier(
        name,
        tuple(eps),
        timeout,
        _discovery(doc.get("discovery"), source, f"{key}.discovery"),
        _capacity(doc.get("capacity"), source, f"{key}.capacity"),
    )


def _routers(doc: Any, source: str) -> Routers:
    if doc is None:
        return Routers()
    if not isinstance(doc, dict):
        raise DataError(source, "must be a mapping", field="routers")
    _take(doc, source, "routers", {"replicas", "discovery"})
    return Routers(
        _int(doc, "replicas", source, "routers.", 1, 10_000, 1),
        _discovery(doc.get("discovery"), source, "routers.discovery", need_port=False),
    )


def _auth(doc: Any, source: str) -> Auth | None:
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise DataError(source, "must be a mapping with apiKeysDir", field="auth")
    _take(doc, source, "auth", {"apiKeysDir", "requestsPerMinute", "burst"})
    keys_dir = doc.get("apiKeysDir")
    if not isinstance(keys_dir, str) or not keys_dir.startswith("/"):
        raise DataError(source, "must be an absolute directory path", field="auth.apiKeysDir")
    rpm = None
    if doc.get("requestsPerMinute") is not None:
        rpm = _number(doc, "requestsPerMinute", source, "auth.", 0.001, 1e7)
    return Auth(keys_dir, rpm, _int(doc, "burst", source, "auth.", 1, 1_000_000, Auth.burst))


def parse_config(text: str, source: str) -> RouterConfig:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = None if line is None else line + 1
        raise DataError(source, f"invalid YAML: {getattr(e, 'problem', e)}", line=where) from None
    if not isinstance(doc, dict):
        raise DataError(source, "must be a YAML mapping")
    _take(
        doc,
        source,
        "",
        {
            "apiVersion",
            "cascade",
            "sloSeconds",
            "size",
            "routerRatio",
            "discRatio",
            "light",
            "heavy",
            "scoring",
            "limits",
            "routers",
            "auth",
            "coldStart",
        },
    )
    if doc.get("apiVersion") != API_VERSION:
        raise DataError(source, f"must be {API_VERSION}, got {doc.get('apiVersion')!r}", field="apiVersion")
    cascade = doc.get("cascade")
    if not isinstance(cascade, str) or not _DNS_LABEL.match(cascade):
        raise DataError(source, "must be a DNS label (lower-case letters, digits, '-')", field="cascade")
    size = doc.get("size")
    if not isinstance(size, str) or not _SIZE_RE.match(size):
        raise DataError(source, f"must look like 1024x1024, got {size!r}", field="size")
    scoring_doc = doc.get("scoring") or {}
    if not isinstance(scoring_doc, dict):
        raise DataError(source, "must be a mapping", field="scoring")
    _take(scoring_doc, source, "scoring", {"mode", "modelFile", "window"})
    mode = scoring_doc.get("mode", "rule")
    if mode not in ("rule", "learned"):
        raise DataError(source, f"must be rule or learned, got {mode!r}", field="scoring.mode")
    model_file = scoring_doc.get("modelFile")
    if model_file is not None and not isinstance(model_file, str):
        raise DataError(source, "must be a path", field="scoring.modelFile")
    if mode == "learned" and not model_file:
        raise DataError(source, "learned scoring needs a model file", field="scoring.modelFile")
    scoring = Scoring(mode, model_file, _int(scoring_doc, "window", source, "scoring.", 10, 1_000_000, 2000))
    return RouterConfig(
        cascade=cascade,
        slo_s=_number(doc, "sloSeconds", source, "", 0.001, 86400),
        size=size,
        light=_tier(doc.get("light"), source, "light"),
        heavy=_tier(doc.get("heavy"), source, "heavy"),
        router_ratio=_number(doc, "routerRatio", source, "", 0.0, 1.0, 0.0),
        disc_ratio=_number(doc, "discRatio", source, "", 0.0, 1.0, 0.0),
        scoring=scoring,
        limits=_limits(doc.get("limits"), source),
        routers=_routers(doc.get("routers"), source),
        auth=_auth(doc.get("auth"), source),
        cold_start=_cold_start(doc.get("coldStart"), source),
    )


def _discovery_doc(d: Discovery, with_port: bool = True) -> dict[str, str]:
    out = {"namespace": d.namespace, "service": d.service}
    if with_port:
        out["port"] = d.port
    return out


def dump_config(cfg: RouterConfig) -> str:
    doc: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "cascade": cfg.cascade,
        "sloSeconds": cfg.slo_s,
        "size": cfg.size,
        "routerRatio": cfg.router_ratio,
        "discRatio": cfg.disc_ratio,
        "light": {"name": cfg.light.name, "endpoints": list(cfg.light.endpoints)},
        "heavy": {"name": cfg.heavy.name, "endpoints": list(cfg.heavy.endpoints)},
        "scoring": {"mode": cfg.scoring.mode, "window": cfg.scoring.window},
        "limits": {
            "maxN": cfg.limits.max_n,
            "maxPromptChars": cfg.limits.max_prompt_chars,
            "maxBodyBytes": cfg.limits.max_body_bytes,
            "maxInFlight": cfg.limits.max_in_flight,
            "bodyTimeoutSeconds": cfg.limits.body_timeout_s,
            "holdRequests": cfg.limits.hold,
        },
    }
    for key, tier in (("light", cfg.light), ("heavy", cfg.heavy)):
        if tier.timeout_s is not None:
            doc[key]["timeoutSeconds"] = tier.timeout_s
        if tier.discovery is not None:
            doc[key]["discovery"] = _discovery_doc(tier.discovery)
        if tier.capacity is not None:
            c = tier.capacity
            doc[key]["capacity"] = {
                "baseSeconds": c.base_s,
                "imagesPerSecondPerReplica": c.per_replica,
                "replicas": c.replicas,
            }
            if c.slots is not None:
                doc[key]["capacity"]["slotsPerReplica"] = c.slots
            if c.start_s is not None:
                doc[key]["capacity"]["startSeconds"] = c.start_s
    doc["routers"] = {"replicas": cfg.routers.replicas}
    if cfg.routers.discovery is not None:
        doc["routers"]["discovery"] = _discovery_doc(cfg.routers.discovery, with_port=False)
    if cfg.scoring.model_file:
        doc["scoring"]["modelFile"] = cfg.scoring.model_file
    if cfg.cold_start is not None:
        c = cfg.cold_start
        doc["coldStart"] = {"timeoutSeconds": c.timeout_s, "wakeLease": {"namespace": c.namespace, "name": c.lease}}
    if cfg.auth is not None:
        doc["auth"] = {"apiKeysDir": cfg.auth.api_keys_dir, "burst": cfg.auth.burst}
        if cfg.auth.requests_per_minute is not None:
            doc["auth"]["requestsPerMinute"] = cfg.auth.requests_per_minute
    return yaml.safe_dump(doc, sort_keys=False)
