"""``hadis profile job``: the objects that run ``hadis profile run`` in the cluster (pure builders),
and ``apply_configmaps``, which the Job's pod uses to write its result.

- a PVC for the run folder: images, confidences, features and partial results live there, so a
  pod that is rescheduled (node drained, preempted, deleted) resumes where the last one stopped;
- a ConfigMap with the prompts (and, for a small set, the reference images as binary data);
- a ServiceAccount with a Role that may write ConfigMaps in the namespace, and nothing else;
- the Job: the worker image on a GPU node, pod security ``restricted``, retried up to
  ``backoffLimit`` times, each retry resuming from the PVC.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hadis.contract import USER_ID, WORKER_IMAGE
from hadis.core.errors import DataError

WORK_DIR = "/work"
INPUTS_DIR = "/inputs"
REFERENCE_DIR = "/reference"
CONFIGMAP_LIMIT = 1_000_000  # bytes: a ConfigMap holds at most 1 MiB


@dataclass(frozen=True)
class JobSettings:
    name: str
    namespace: str
    models: tuple[str, ...]
    prompts: Path
    reference_images: Path | None = None
    reference_claim: str | None = None  # CLAIM:PATH
    image: str | None = None
    device: str = "cuda"
    images_per_prompt: int = 4
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    feature_net: str = "inception"
    inception_weights: str | None = None  # a path in the pod (on the run PVC, or the image)
    claim: str | None = None
    storage: str = "50Gi"
    storage_class: str | None = None
    gpus: int | None = None
    memory: str | None = None  # the pod's memory request (default: 16Gi with a GPU, 2Gi on the CPU)
    configmap: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()
    repeats: int = 5
    backoff_limit: int = 6


def _labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "hadis",
        "app.kubernetes.io/part-of": "hadis",
        "app.kubernetes.io/component": "profiler",
        "app.kubernetes.io/instance": name,
    }


def _meta(name: str, s: JobSettings) -> dict[str, Any]:
    return {"name": name, "namespace": s.namespace, "labels": _labels(s.name)}


def _inputs(s: JobSettings) -> dict[str, Any]:
    try:
        prompts = s.prompts.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(str(s.prompts), f"cannot read: {e.strerror}") from None
    cm: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(f"{s.name}-inputs", s),
                          "data": {"prompts.txt": prompts}}  # fmt: skip
    if s.reference_images is not None:
        from hadis.profiling.features import image_files

        files = image_files(s.reference_images)
        cm["binaryData"] = {f"ref-{i:05d}{p.suffix.lower()}": base64.b64encode(p.read_bytes()).decode()
                            for i, p in enumerate(files)}  # fmt: skip
    size = len(prompts.encode()) + sum(len(v) for v in (cm.get("binaryData") or {}).values())
    if size > CONFIGMAP_LIMIT:
        raise DataError(
            str(s.reference_images or s.prompts),
            f"prompts and reference images are {size / 2**20:.1f} MiB, more than a ConfigMap holds (1 MiB): "
            "put the reference images on a PVC and pass --reference-claim CLAIM:PATH",
        )
    return cm


def job_manifests(s: JobSettings) -> list[dict[str, Any]]:
    if (s.reference_images is None) == (s.reference_claim is None):
        raise DataError("--reference-images", "give exactly one of --reference-images and --reference-claim")
    if len(s.models) < 2:
        raise DataError("--model", "give at least two variants, light to heavy")
    if s.feature_net == "inception" and not s.inception_weights:
        raise DataError(
            "--inception-weights",
            "the FID Inception weights must be a file in the pod (for example on the run PVC: "
            f"{WORK_DIR}/weights/weights-inception-2015-12-05-6726825d.pth); nothing is downloaded at run time",
        )
    claim = s.claim or f"{s.name}-work"
    configmap = s.configmap or s.name
    objects: list[dict[str, Any]] = []
    if s.claim is None:
        pvc_spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": s.storage}}}
        if s.storage_class:
            pvc_spec["storageClassName"] = s.storage_class
        objects.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _meta(claim, s),
                        "spec": pvc_spec})  # fmt: skip
    objects.append(_inputs(s))
    objects += [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(s.name, s)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(s.name, s),
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(s.name, s),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": s.name},
            "subjects": [{"kind": "ServiceAccount", "name": s.name, "namespace": s.namespace}],
        },
    ]
    objects.append(_job(s, claim, configmap))
    return objects


def _job(s: JobSettings, claim: str, configmap: str) -> dict[str, Any]:
    if s.reference_claim is not None:
        ref_claim, _, ref_path = s.reference_claim.partition(":")
        ref_volume = {"name": "reference", "persistentVolumeClaim": {"claimName": ref_claim, "readOnly": True}}
        ref_mount = {"name": "reference", "mountPath": REFERENCE_DIR, "readOnly": True}
        if ref_path:
            ref_mount["subPath"] = ref_path
        reference = REFERENCE_DIR
    else:
        ref_volume, ref_mount, reference = None, None, f"{INPUTS_DIR}/reference"
    args = ["profile", "run"]
    for m in s.models:
        args += ["--model", m]
    args += [
        "--prompts", f"{INPUTS_DIR}/prompts.txt", "--reference-images", reference,
        "--images-per-prompt", str(s.images_per_prompt), "--batch-sizes", ",".join(map(str, s.batch_sizes)),
        "--device", s.device, "--feature-net", s.feature_net, "--repeats", str(s.repeats),
        "--out", f"{WORK_DIR}/run", "--name", configmap, "--namespace", s.namespace, "--apply",
    ]  # fmt: skip
    if s.inception_weights:
        args += ["--inception-weights", s.inception_weights]
    gpus = s.gpus if s.gpus is not None else (1 if s.device.startswith("cuda") else 0)
    memory = s.memory or ("16Gi" if gpus else "2Gi")  # a pipeline's weights pass through host memory
    resources: dict[str, Any] = {"requests": {"cpu": "1", "memory": memory}}
    if gpus:
        resources["limits"] = {"nvidia.com/gpu": gpus}
    inputs_volume: dict[str, Any] = {"name": "inputs", "configMap": {"name": f"{s.name}-inputs", "items": [
        {"key": "prompts.txt", "path": "prompts.txt"}]}}  # fmt: skip
    if s.reference_images is not None:
        from hadis.profiling.features import image_files

        for i, p in enumerate(image_files(s.reference_images)):
            key = f"ref-{i:05d}{p.suffix.lower()}"
            inputs_volume["configMap"]["items"].append({"key": key, "path": f"reference/{key}"})
    mounts = [
        {"name": "work", "mountPath": WORK_DIR},
        {"name": "inputs", "mountPath": INPUTS_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes = [
        {"name": "work", "persistentVolumeClaim": {"claimName": claim}},
        inputs_volume,
        {"name": "tmp", "emptyDir": {}},
    ]
    if ref_volume:
        mounts.append(ref_mount)
        volumes.append(ref_volume)
    pod: dict[str, Any] = {
        "serviceAccountName": s.name,
        "restartPolicy": "OnFailure",
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "runAsGroup": USER_ID,
            "fsGroup": USER_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "profile",
                "image": s.image or WORKER_IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "args": args,
                "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}],
                "resources": resources,
                "volumeMounts": mounts,
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
        "volumes": volumes,
    }
    if s.node_selector:
        pod["nodeSelector"] = dict(s.node_selector)
    if s.tolerations:
        pod["tolerations"] = [dict(t) for t in s.tolerations]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(s.name, s),
        "spec": {
            "backoffLimit": s.backoff_limit,
            "template": {"metadata": {"labels": _labels(s.name)}, "spec": pod},
        },
    }


def dump_manifests(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False, width=1000)


def apply_configmaps(paths: Sequence[Path], namespace: str | None) -> list[str]:
    """Server-side apply each ConfigMap file (in a pod: its service account's token)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    core = client.CoreV1Api()
    names = []
    for path in paths:
        doc = yaml.safe_load(path.read_text())
        ns = namespace or doc["metadata"].get("namespace") or "default"
        doc["metadata"]["namespace"] = ns
        core.patch_namespaced_config_map(
            doc["metadata"]["name"], ns, doc, field_manager="hadis-profiler", force=True,
            _content_type="application/apply-patch+yaml",
        )  # fmt: skip
        names.append(doc["metadata"]["name"])
    return names
