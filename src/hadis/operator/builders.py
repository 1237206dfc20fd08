"""Pure builders of the objects a DiffusionCascade owns: worker Deployments, the router, Services
and the router's config ConfigMap. No API calls here; the kopf handlers adopt and apply them.

Every object carries the ``app.kubernetes.io/*`` labels and ``serving.hadis.dev/cascade``. The
operator owns only the fields built here (server-side apply with its own field manager), so
``kubectl apply`` or a GitOps tool may add annotations or sidecars without a fight.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hadis.contract import (
    CASCADE_LABEL,
    LIVE_PATH,
    MODEL_LABEL,
    ROUTER_ADMIN_PORT,
    ROUTER_CONFIG_KEY,
    ROUTER_IMAGE,
    ROUTER_KEYS_DIR,
    ROUTER_MODEL_DIR,
    ROUTER_MODEL_KEY,
    ROUTER_PORT,
    USER_ID,
    WAKE_COMPONENT,
    WEIGHTS_DIR,
    WORKER_GRPC,
    WORKER_HTTP,
    WORKER_IMAGE,
    WORKER_METRICS,
    model_ready_path,
)
from hadis.core.bundle import Bundle
from hadis.core.planner import Plan
from hadis.core.profile import Profile
from hadis.operator.spec import CascadeSpec, ModelEntry, RouterAuthSpec
from hadis.router.config import (
    Auth,
    Capacity,
    ColdStart,
    Discovery,
    Limits,
    RouterConfig,
    Routers,
    Scoring,
    Tier,
    dump_config,
)

# A terminating worker keeps serving this long before SIGTERM, so the routers' EndpointSlice
# watches (well under a second) and kube-proxy have mostly stopped sending to it before it stops
# accepting; a router sends an image a stopped pod refuses to another pod. Short: the pod's GPU
# is held until it exits, and a re-plan's new pod may be waiting for that GPU.
PRESTOP_S = 3
ROUTER_RESOURCES = {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


@dataclass(frozen=True)
class Images:
    router: str = ROUTER_IMAGE
    worker: str = WORKER_IMAGE


def images_of(spec: CascadeSpec, defaults: Images) -> Images:
    """A cascade's images: ``spec.router.image`` and ``spec.workerImage`` over the operator's."""
    return Images(router=spec.router.image or defaults.router, worker=spec.worker_image or defaults.worker)


def model_cache_volume(spec: CascadeSpec) -> dict[str, Any] | None:
    """The pod volume of ``spec.modelCache`` (None: an emptyDir per pod, no fetch step)."""
    cache = spec.model_cache or {}
    if cache.get("hostPath"):
        return {"name": "model-cache", "hostPath": {"path": cache["hostPath"]["path"], "type": "DirectoryOrCreate"}}
    if cache.get("persistentVolumeClaim"):
        claim = cache["persistentVolumeClaim"]["claimName"]
        return {"name": "model-cache", "persistentVolumeClaim": {"claimName": claim}}
    return None


def placement_of(spec: CascadeSpec) -> dict[str, Any]:
    """The pod-spec fields of ``spec.placement`` (node selector, tolerations) that are set."""
    placement = spec.placement or {}
    return {k: placement[k] for k in ("nodeSelector", "tolerations") if placement.get(k)}


def cpu_threads(resources: Mapping[str, Any] | None) -> int | None:
    """Threads for a CPU limit ("1", "1500m"): torch's default of one per host core oversubscribes
    a pod limited to fewer (a batch took 3.6x as long here with two workers on two cores)."""
    cpu = ((resources or {}).get("limits") or {}).get("cpu")
    if cpu is None:
        return None
    text = str(cpu)
    try:
        cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:  # not a quantity: the API server refuses the pod spec and says why
        return None
    return max(1, math.ceil(cores))


def labels(cascade: str, component: str, model: str | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "hadis",
        "app.kubernetes.io/instance": cascade,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "hadis",
        "app.kubernetes.io/managed-by": "hadis-operator",
        CASCADE_LABEL: cascade,
    }
    if model:
        out[MODEL_LABEL] = model
    return out


def dns_name(name: str) -> str:
    """Object names: model names may hold dots (sd3.5-large); object names may not in all kinds."""
    return name.replace(".", "-").lower()


def worker_name(cascade: str, model: str) -> str:
    return f"{cascade}-{dns_name(model)}"


def router_name(cascade: str) -> str:
    return f"{cascade}-router"


def wake_lease_name(cascade: str) -> str:
    return f"{cascade}-wake"


def wake_lease(cascade: str, namespace: str) -> dict[str, Any]:
    """The Lease a router annotates (``WAKE_ANNOTATION``) when a request finds a scaled-to-zero
    cascade; the operator watches it and wakes the workers. A Lease, not the cascade: the router
    may touch this one object and nothing of the spec."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": wake_lease_name(cascade),
            "namespace": namespace,
            "labels": labels(cascade, WAKE_COMPONENT),
        },
        "spec": {},
    }


_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": USER_ID,
    "runAsGroup": USER_ID,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def drain_seconds(slo_s: float, slowest_batch_s: float | None) -> int:
    """How long a terminating worker may take to finish what it holds: every image it accepted
    was due within the SLO, and a batch already running ends within the slowest batch latency."""
    return math.ceil(max(slo_s, slowest_batch_s or 0.0)) + 5


def _worker_container(
    model: ModelEntry, image: str, env: list, resources: Mapping[str, Any], drain_s: int, cache_args: list
) -> dict[str, Any]:
    """The worker container: Triton serving the model, probed on the model's own readiness."""
    probe_port = WORKER_HTTP
    return {
        "name": "worker",
        "image": image,
        "command": ["hadis"],
        "args": [
            "worker",
            "serve",
            "--model",
            model.worker_spec,
            "--host",
            "0.0.0.0",
            "--http-port",
            str(WORKER_HTTP),
            "--grpc-port",
            str(WORKER_GRPC),
            "--metrics-port",
            str(WORKER_METRICS),
            "--drain-seconds",
            str(drain_s),
            *cache_args,
            *model.args,
        ],
        "env": env,
        "ports": [
            {"name": "http", "containerPort": WORKER_HTTP},
            {"name": "grpc", "containerPort": WORKER_GRPC},
            {"name": "metrics", "containerPort": WORKER_METRICS},
        ],
        "resources": resources,
        # The model-level endpoint: Triton's server-level /v2/health/ready
        # answers while the model is still loading and requests still fail.
        # every second: a new replica takes traffic within a second or two of its
        # model loading (a scale-up under load waits on it); up to 30 min to load
        "startupProbe": {
            "httpGet": {"path": model_ready_path(model.name), "port": probe_port},
            "periodSeconds": 1,
            "failureThreshold": 1800,
        },
        "readinessProbe": {
            "httpGet": {"path": model_ready_path(model.name), "port": probe_port},
            "periodSeconds": 2,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": LIVE_PATH, "port": probe_port},
            "periodSeconds": 10,
        },
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_S}}},
        "securityContext": _SECURITY,
        "volumeMounts": [
            {"name": "model-cache", "mountPath": "/models"},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def worker_deployment(
    cascade: str,
    namespace: str,
    model: ModelEntry,
    replicas: int,
    image: str = WORKER_IMAGE,
    placement: Mapping[str, Any] | None = None,
    drain_s: int = 30,
    cache: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One model variant's Triton workers; ``replicas`` comes from the plan. The device comes
    from the worker spec (cuda, or cpu for the tiny variants); ``model.image`` wins over ``image``.

    With ``cache`` (a volume, ``model_cache_volume``), an init container fetches the weights into
    it unless they are there, and the worker loads them from it: a restarted pod downloads nothing.

    Drain on scale-down and rollout: the pod leaves its EndpointSlice (not ready, terminating) the
    moment its deletion starts, serves on for ``PRESTOP_S`` while routers and kube-proxy stop
    sending, then on SIGTERM Triton finishes the requests in flight for up to ``drain_s``."""
    sel = {CASCADE_LABEL: cascade, MODEL_LABEL: dns_name(model.name)}
    gpu = {"nvidia.com/gpu": str(model.gpus_per_replica)}
    resources = dict(model.resources or {})
    resources["requests"] = {**resources.get("requests", {}), **gpu}
    resources["limits"] = {**resources.get("limits", {}), **gpu}
    env = [{"name": "HF_HOME", "value": "/models/hf"}]
    threads = cpu_threads(resources)
    if threads is not None:
        env.append({"name": "OMP_NUM_THREADS", "value": str(threads)})
    revision = ["--revision", model.revision] if model.revision else []
    cache_args = ["--weights-cache", WEIGHTS_DIR, *revision] if cache else []
    init = []
    if cache:
        init.append(
            {
                "name": "fetch-weights",
                "image": model.image or image,
                "command": ["hadis"],
                "args": ["worker", "fetch", "--model", model.worker_spec, "--cache", WEIGHTS_DIR, *revision],
                "env": env,
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
                "securityContext": _SECURITY,
                "volumeMounts": [{"name": "model-cache", "mountPath": "/models"}, {"name": "tmp", "mountPath": "/tmp"}],
            }
        )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": worker_name(cascade, model.name),
            "namespace": namespace,
            "labels": labels(cascade, "worker", dns_name(model.name)),
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": sel},
            # The plan hands out every GPU of the budget: a surge pod would wait for a GPU that
            # only the pod it replaces can free, and the rollout would never finish.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": labels(cascade, "worker", dns_name(model.name))},
                "spec": {
                    # Least privilege: a worker never calls the API server, so it holds no token.
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {"runAsNonRoot": True, "fsGroup": USER_ID},
                    **dict(placement or {}),
                    "terminationGracePeriodSeconds": PRESTOP_S + drain_s + 5,
                    **({"initContainers": init} if init else {}),
                    "containers": [_worker_container(model, model.image or image, env, resources, drain_s, cache_args)],
                    "volumes": [
                        dict(cache) if cache else {"name": "model-cache", "emptyDir": {}},
                        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
                        {"name": "tmp", "emptyDir": {}},  # PyTriton's workspace; the root is read-only
                    ],
                },
            },
        },
    }


def worker_service(cascade: str, namespace: str, model: ModelEntry) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": worker_name(cascade, model.name),
            "namespace": namespace,
            "labels": labels(cascade, "worker", dns_name(model.name)),
        },
        "spec": {
            "selector": {CASCADE_LABEL: cascade, MODEL_LABEL: dns_name(model.name)},
            "ports": [
                {"name": "http", "port": WORKER_HTTP, "targetPort": "http"},
                {"name": "metrics", "port": WORKER_METRICS, "targetPort": "metrics"},
            ],
        },
    }


def tier_capacity(
    profile: Profile, model: str, slo_s: float, replicas: int, start_s: float | None = None
) -> Capacity | None:
    """The profile's view of one tier for the router's admission, until it measures its own:
    one image alone, the best throughput of a batch that fits the SLO, and twice that batch as the
    images a pod takes at once (late binding): the batch it runs and the next, which Triton's
    batcher gathers meanwhile (with one batch only, the next arrived an image at a time after
    the last finished, and a pod ran partial batches: 17 of 108 requests timed out in a rollout
    on the real node). ``start_s``: a new pod's start, created to Ready, as measured on the
    cluster; else the profile's weight load time, when it has one."""
    batches = [(b, s) for b, s in profile.feasible_batches(model) if s <= slo_s]
    if not batches:
        return None
    base = min(s for b, s in batches if b == min(b for b, _ in batches))
    best, best_s = max(batches, key=lambda bs: (bs[0] / bs[1], -bs[0]))
    if start_s is None:
        start_s = profile.model(model).load_seconds
    return Capacity(base_s=base, per_replica=best / best_s, replicas=replicas, slots=2 * best, start_s=start_s)


def router_config(
    cascade: str,
    namespace: str,
    light: str,
    heavy: str,
    router_ratio: float,
    disc_ratio: float,
    slo_s: float,
    size: str,
    scoring: str = "rule",
    model_file: str | None = None,
    capacities: Mapping[str, Capacity | None] | None = None,
    router_replicas: int = 1,
    auth: RouterAuthSpec | None = None,
    hold: bool = True,
    cold_start_s: float | None = None,
) -> RouterConfig:
    """The router's config: each tier's Service (the fallback), its EndpointSlices to watch, and
    the profile's capacity; the routers' own Service, to count the replicas sharing the tiers;
    ``hold``: hold what a tier cannot start now (``spec.router.holdRequests``); ``cold_start_s``
    (scale to zero): how long to hold a request that finds no pod, waking the cascade's Lease."""

    def tier(model: str) -> Tier:
        svc = worker_name(cascade, model)
        return Tier(
            model,
            (f"{svc}.{namespace}.svc:{WORKER_HTTP}",),
            discovery=Discovery(namespace, svc, "http"),
            capacity=(capacities or {}).get(model),
        )

    return RouterConfig(
        cascade=cascade,
        slo_s=slo_s,
        size=size,
        light=tier(light),
        heavy=tier(heavy),
        router_ratio=router_ratio,
        disc_ratio=disc_ratio,
        scoring=Scoring(scoring, model_file),
        limits=Limits(hold=hold),
        routers=Routers(router_replicas, Discovery(namespace, router_name(cascade))),
        auth=None if auth is None else Auth(ROUTER_KEYS_DIR, auth.requests_per_minute, auth.burst),
        cold_start=None if cold_start_s is None else ColdStart(cold_start_s, namespace, wake_lease_name(cascade)),
    )


def router_configmap(cascade: str, namespace: str, cfg: RouterConfig) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": router_name(cascade), "namespace": namespace, "labels": labels(cascade, "router")},
        "data": {ROUTER_CONFIG_KEY: dump_config(cfg)},
    }


def router_rbac(cascade: str, namespace: str, wake: bool = False) -> list[dict[str, Any]]:
    """The router's service account, allowed to watch the EndpointSlices of its namespace (the
    tiers' pods and its peers) and, with ``wake`` (scale to zero), to annotate its cascade's wake
    Lease; nothing else."""
    name, meta = router_name(cascade), {"namespace": namespace, "labels": labels(cascade, "router")}
    rules: list[dict[str, Any]] = [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}
    ]
    if wake:
        rules.append(
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": [wake_lease_name(cascade)],
                "verbs": ["get", "patch"],
            }
        )
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, **meta}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name, **meta},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, **meta},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]


def router_deployment(
    cascade: str,
    namespace: str,
    replicas: int,
    image: str = ROUTER_IMAGE,
    placement: Mapping[str, Any] | None = None,
    model_configmap: str | None = None,
    resources: Mapping[str, Any] | None = None,
    keys_secret: str | None = None,
) -> dict[str, Any]:
    """The router pods; ``model_configmap`` (a learned router model) is mounted at
    ``ROUTER_MODEL_DIR``, ``keys_secret`` (the API keys) at ``ROUTER_KEYS_DIR``, and the router
    reloads either when it changes. The Secret must exist: until it does the pods do not start
    (and the rollout, Progressing, says so) rather than serve without keys."""
    sel = {CASCADE_LABEL: cascade, "app.kubernetes.io/component": "router"}
    mounts = [
        {"name": "config", "mountPath": "/etc/hadis", "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": router_name(cascade)}},
        {"name": "tmp", "emptyDir": {}},
    ]
    if model_configmap:
        mounts.append({"name": "router-model", "mountPath": ROUTER_MODEL_DIR, "readOnly": True})
        volumes.append({"name": "router-model", "configMap": {"name": model_configmap}})
    if keys_secret:
        mounts.append({"name": "api-keys", "mountPath": ROUTER_KEYS_DIR, "readOnly": True})
        # readable by the router's non-root user: with no fsGroup, 0440 leaves the files root's only
        volumes.append({"name": "api-keys", "secret": {"secretName": keys_secret, "defaultMode": 0o444}})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": router_name(cascade), "namespace": namespace, "labels": labels(cascade, "router")},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": sel},
            "template": {
                "metadata": {"labels": labels(cascade, "router")},
                "spec": {
                    # The one token of a cascade's pods: the router watches EndpointSlices
                    # (``router_rbac``: get, list and watch them in its namespace, nothing else).
                    "serviceAccountName": router_name(cascade),
                    "enableServiceLinks": False,
                    "securityContext": {"runAsNonRoot": True},
                    **dict(placement or {}),
                    "containers": [
                        {
                            "name": "router",
                            "image": image,
                            "command": ["hadis"],
                            "args": [
                                "router",
                                "serve",
                                "--config",
                                f"/etc/hadis/{ROUTER_CONFIG_KEY}",
                                "--host",
                                "0.0.0.0",
                                "--port",
                                str(ROUTER_PORT),
                                "--admin-port",
                                str(ROUTER_ADMIN_PORT),
                            ],
                            "ports": [
                                {"name": "http", "containerPort": ROUTER_PORT},
                                {"name": "metrics", "containerPort": ROUTER_ADMIN_PORT},
                            ],
                            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 2},
                            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
                            "resources": dict(resources or ROUTER_RESOURCES),
                            "securityContext": _SECURITY,
                            "volumeMounts": mounts,
                        }
                    ],
                    "volumes": volumes,
                },
            },
        },
    }


def router_service(cascade: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": router_name(cascade), "namespace": namespace, "labels": labels(cascade, "router")},
        "spec": {
            "selector": {CASCADE_LABEL: cascade, "app.kubernetes.io/component": "router"},
            "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "metrics", "port": ROUTER_ADMIN_PORT, "targetPort": "metrics"},
            ],
        },
    }


def _ingress_policy(
    name: str,
    cascade: str,
    namespace: str,
    component: str,
    peers: Sequence[Mapping[str, Any]],
    ports: Sequence[int],
    open_port: int,
) -> dict[str, Any]:
    """A NetworkPolicy on the cascade's ``component`` pods: only ``peers`` reach ``ports``, and
    anyone (a scraper) reaches ``open_port``. Enforced only where the cluster's CNI implements
    NetworkPolicy."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": labels(cascade, component)},
        "spec": {
            "podSelector": {"matchLabels": {CASCADE_LABEL: cascade, "app.kubernetes.io/component": component}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [dict(p) for p in peers], "ports": [{"protocol": "TCP", "port": p} for p in ports]},
                {"ports": [{"protocol": "TCP", "port": open_port}]},
            ],
        },
    }


def worker_network_policy(cascade: str, namespace: str) -> dict[str, Any]:
    """Only the cascade's routers reach its workers' inference ports; their metrics port stays
    open to any scraper."""
    routers = {"podSelector": {"matchLabels": {CASCADE_LABEL: cascade, "app.kubernetes.io/component": "router"}}}
    return _ingress_policy(
        f"{cascade}-workers", cascade, namespace, "worker", [routers], [WORKER_HTTP, WORKER_GRPC], WORKER_METRICS
    )


def router_network_policy(cascade: str, namespace: str, allow_from: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Only ``allow_from`` (NetworkPolicy peers: pods, namespaces, CIDRs) reaches the routers'
    inference port; their admin port (metrics, OpenAPI) stays open to scrapers."""
    return _ingress_policy(
        router_name(cascade), cascade, namespace, "router", allow_from, [ROUTER_PORT], ROUTER_ADMIN_PORT
    )


def _slowest_batch(profile: Profile, model: str) -> float | None:
    try:
        return max((s for _, s in profile.feasible_batches(model)), default=None)
    except KeyError:  # a model the profile does not know: the SLO bounds its drain
        return None


def owned_objects(
    spec: CascadeSpec,
    name: str,
    namespace: str,
    bundle: Bundle,
    plan: Plan,
    replicas: Mapping[str, int],
    default_images: Images,
    starts: Mapping[str, float] | None = None,
    workers: Mapping[str, int] | None = None,
) -> list[dict]:
    """Every object a cascade owns, for a plan and its replicas per model: worker Deployments and
    Services per model, the router's config, RBAC, Deployment and Service, and the workers'
    NetworkPolicy. What a cascade owned and this set no longer has is pruned (``prunable``).
    ``workers`` (default: ``replicas``) are the worker Deployments' replicas when a re-plan
    keeps pods it gives up serving until its new pods are Ready (``logic.surge_replicas``)."""
    images = images_of(spec, default_images)
    placement = placement_of(spec)
    cache = model_cache_volume(spec)
    profile = bundle.profile
    light = profile.model(plan.config.light)
    measured = starts or {}
    capacities = {
        m: tier_capacity(profile, m, spec.slo_s, replicas.get(m, 0), measured.get(dns_name(m)))
        for m in (plan.config.light, plan.config.heavy)
    }
    learned = spec.router.scoring == "learned"
    cfg = router_config(
        name,
        namespace,
        plan.config.light,
        plan.config.heavy,
        plan.config.router_ratio,
        plan.config.disc_ratio,
        spec.slo_s,
        f"{light.resolution}x{light.resolution}",
        spec.router.scoring,
        f"{ROUTER_MODEL_DIR}/{ROUTER_MODEL_KEY}" if learned else None,
        capacities,
        spec.router.replicas,
        spec.router.auth,
        spec.router.hold_requests,
        spec.scale_to_zero.cold_start_timeout_s if spec.scale_to_zero else None,
    )
    objs: list[dict] = []
    for m in spec.models:
        drain = drain_seconds(spec.slo_s, _slowest_batch(profile, m.name))
        objs.append(
            worker_deployment(
                name, namespace, m, (workers or replicas).get(m.name, 0), images.worker, placement, drain, cache
            )
        )
        objs.append(worker_service(name, namespace, m))
    objs.append(router_configmap(name, namespace, cfg))
    objs += router_rbac(name, namespace, wake=spec.scale_to_zero is not None)
    if spec.scale_to_zero is not None:
        objs.append(wake_lease(name, namespace))
    objs.append(
        router_deployment(
            name, namespace, spec.router.replicas, images.router, placement, spec.router.model_configmap,
            spec.router.resources, spec.router.auth.secret_name if spec.router.auth else None,
        )
    )  # fmt: skip
    objs.append(router_service(name, namespace))
    if spec.network_policy:
        objs.append(worker_network_policy(name, namespace))
    if spec.router.allow_from is not None:
        objs.append(router_network_policy(name, namespace, spec.router.allow_from))
    return objs


# The kinds a cascade owns, and so may prune (``prunable``): a NetworkPolicy goes when its option
# is turned off.
PRUNED_KINDS = ("Deployment", "Service", "NetworkPolicy")


def prunable(taken: Mapping[tuple[str, str], str], cascade: str, owned: list[dict]) -> list[tuple[str, str]]:
    """``(kind, name)`` of the cascade's objects (``taken``: ``(kind, name)`` -> the owning
    cascade's label) that the owned set built from its spec no longer has: the workers of a model
    removed from ``spec.models``. Only PRUNED_KINDS: the router's objects are always in the set."""
    keep = {(o["kind"], o["metadata"]["name"]) for o in owned}
    mine = [key for key, owner in taken.items() if owner == cascade and key[0] in PRUNED_KINDS]
    return sorted(key for key in mine if key not in keep)


def name_conflicts(taken: Mapping[tuple[str, str], str], cascade: str, owned: list[dict]) -> list[str]:
    """Objects the cascade would build whose names another cascade's objects already hold
    (``taken``: ``(kind, name)`` -> the owning cascade's label). Names join the cascade's and the
    model's (``a`` + ``b-c`` and ``a-b`` + ``c`` are both ``a-b-c``); applying would take the
    other cascade's object over, so the operator refuses and says which."""
    out = []
    for o in owned:
        other = taken.get((o["kind"], o["metadata"]["name"]))
        if other is not None and other != cascade:
            out.append(f"{o['kind']} {o['metadata']['name']} belongs to cascade {other}")
    return out
