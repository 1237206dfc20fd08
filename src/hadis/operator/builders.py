"""Pure builders of the objects a DiffusionCascade owns: worker Deployments, the router, Services
and the router's config ConfigMap. No API calls here; the kopf handlers adopt and apply them.

Every object carries the ``app.kubernetes.io/*`` labels and ``serving.hadis.dev/cascade``. The
operator owns only the fields built here (server-side apply with its own field manager), so
``kubectl apply`` or a GitOps tool may add annotations or sidecars without a fight.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hadis import __version__
from hadis.router.config import Limits, RouterConfig, Scoring, Tier, dump_config, model_ready_path

GROUP = "serving.hadis.dev"
VERSION = "v1alpha1"
PLURAL = "diffusioncascades"
CASCADE_LABEL = f"{GROUP}/cascade"
MODEL_LABEL = f"{GROUP}/model"
# The images this version ships (``make images``); the chart passes its own to the operator.
ROUTER_IMAGE = f"ghcr.io/hadis-serving/hadis:{__version__}"
WORKER_IMAGE = f"ghcr.io/hadis-serving/hadis-worker:{__version__}"
USER_ID = 65532  # the images' non-root user, with a passwd entry
WORKER_HTTP, WORKER_GRPC, WORKER_METRICS, ROUTER_PORT = 8000, 8001, 8002, 8080
ROUTER_CONFIG_KEY = "router.yaml"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    worker_spec: str
    image: str | None = None
    gpus_per_replica: int = 1
    resources: Mapping[str, Any] | None = None
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Images:
    router: str = ROUTER_IMAGE
    worker: str = WORKER_IMAGE


def images_of(spec: Mapping[str, Any], defaults: Images) -> Images:
    """A cascade's images: ``spec.router.image`` and ``spec.workerImage`` over the operator's."""
    return Images(
        router=(spec.get("router") or {}).get("image") or defaults.router,
        worker=spec.get("workerImage") or defaults.worker,
    )


def placement_of(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The pod-spec fields of ``spec.placement`` (node selector, tolerations) that are set."""
    placement = spec.get("placement") or {}
    return {k: placement[k] for k in ("nodeSelector", "tolerations") if placement.get(k)}


def cpu_threads(resources: Mapping[str, Any] | None) -> int | None:
    """Threads for a CPU limit ("1", "1500m"): torch's default of one per host core oversubscribes
    a pod limited to fewer (a batch took 3.6x as long here with two workers on two cores)."""
    cpu = ((resources or {}).get("limits") or {}).get("cpu")
    if cpu is None:
        return None
    text = str(cpu)
    cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    return max(1, math.ceil(cores))


def models_of(spec: Mapping[str, Any]) -> list[ModelEntry]:
    return [
        ModelEntry(
            name=m["name"],
            worker_spec=m["workerSpec"],
            image=m.get("image"),
            gpus_per_replica=int(m.get("gpusPerReplica", 1)),
            resources=m.get("resources"),
            args=tuple(m.get("args") or ()),
        )
        for m in spec["models"]
    ]


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


def _dns(name: str) -> str:
    """Object names: model names may hold dots (sd3.5-large); object names may not in all kinds."""
    return name.replace(".", "-").lower()


def worker_name(cascade: str, model: str) -> str:
    return f"{cascade}-{_dns(model)}"


def router_name(cascade: str) -> str:
    return f"{cascade}-router"


_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": USER_ID,
    "runAsGroup": USER_ID,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def worker_deployment(
    cascade: str,
    namespace: str,
    model: ModelEntry,
    replicas: int,
    image: str = WORKER_IMAGE,
    placement: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One model variant's Triton workers; ``replicas`` comes from the plan. The device comes
    from the worker spec (cuda, or cpu for the tiny variants); ``model.image`` wins over ``image``."""
    sel = {CASCADE_LABEL: cascade, MODEL_LABEL: _dns(model.name)}
    gpu = {"nvidia.com/gpu": str(model.gpus_per_replica)}
    resources = dict(model.resources or {})
    resources["requests"] = {**resources.get("requests", {}), **gpu}
    resources["limits"] = {**resources.get("limits", {}), **gpu}
    probe_port = WORKER_HTTP
    env = [{"name": "HF_HOME", "value": "/models/hf"}]
    threads = cpu_threads(resources)
    if threads is not None:
        env.append({"name": "OMP_NUM_THREADS", "value": str(threads)})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": worker_name(cascade, model.name),
            "namespace": namespace,
            "labels": labels(cascade, "worker", _dns(model.name)),
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": sel},
            # The plan hands out every GPU of the budget: a surge pod would wait for a GPU that
            # only the pod it replaces can free, and the rollout would never finish.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": labels(cascade, "worker", _dns(model.name))},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "fsGroup": USER_ID},
                    **dict(placement or {}),
                    "containers": [
                        {
                            "name": "worker",
                            "image": model.image or image,
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
                            # every 2 s: a new replica takes traffic within 2 s of its model
                            # loading (a scale-up under load waits on it); up to 30 min to load
                            "startupProbe": {
                                "httpGet": {"path": model_ready_path(model.name), "port": probe_port},
                                "periodSeconds": 2,
                                "failureThreshold": 900,
                            },
                            "readinessProbe": {
                                "httpGet": {"path": model_ready_path(model.name), "port": probe_port},
                                "periodSeconds": 2,
                                "failureThreshold": 2,
                            },
                            "livenessProbe": {
                                "httpGet": {"path": "/v2/health/live", "port": probe_port},
                                "periodSeconds": 10,
                            },
                            "securityContext": _SECURITY,
                            "volumeMounts": [
                                {"name": "model-cache", "mountPath": "/models"},
                                {"name": "dshm", "mountPath": "/dev/shm"},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "model-cache", "emptyDir": {}},
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
            "labels": labels(cascade, "worker", _dns(model.name)),
        },
        "spec": {
            "selector": {CASCADE_LABEL: cascade, MODEL_LABEL: _dns(model.name)},
            "ports": [
                {"name": "http", "port": WORKER_HTTP, "targetPort": "http"},
                {"name": "metrics", "port": WORKER_METRICS, "targetPort": "metrics"},
            ],
        },
    }


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
) -> RouterConfig:
    def tier(model: str) -> Tier:
        return Tier(model, (f"{worker_name(cascade, model)}.{namespace}.svc:{WORKER_HTTP}",))

    return RouterConfig(
        cascade=cascade,
        slo_s=slo_s,
        size=size,
        light=tier(light),
        heavy=tier(heavy),
        router_ratio=router_ratio,
        disc_ratio=disc_ratio,
        scoring=Scoring(scoring, model_file),
        limits=Limits(),
    )


def router_configmap(cascade: str, namespace: str, cfg: RouterConfig) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": router_name(cascade), "namespace": namespace, "labels": labels(cascade, "router")},
        "data": {ROUTER_CONFIG_KEY: dump_config(cfg)},
    }


def router_deployment(
    cascade: str,
    namespace: str,
    replicas: int,
    image: str = ROUTER_IMAGE,
    placement: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    sel = {CASCADE_LABEL: cascade, "app.kubernetes.io/component": "router"}
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
                            ],
                            "ports": [{"name": "http", "containerPort": ROUTER_PORT}],
                            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 2},
                            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
                            "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
                            "securityContext": _SECURITY,
                            "volumeMounts": [
                                {"name": "config", "mountPath": "/etc/hadis", "readOnly": True},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "config", "configMap": {"name": router_name(cascade)}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
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
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
