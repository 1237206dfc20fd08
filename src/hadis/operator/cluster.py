"""The operator's I/O with the API server: clients, server-side apply, pruning, reads.

Everything the kopf handlers need from the cluster goes through here; the decisions live in
``logic`` and ``builders``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kopf
import kubernetes
from kubernetes.client.rest import ApiException

from hadis import contract
from hadis.core.bundle import Bundle, from_configmap
from hadis.core.errors import NotFound
from hadis.operator import builders, logic

FIELD_MANAGER = "hadis-operator"
APPLY = "application/apply-patch+yaml"
CRD_NAME = f"{contract.PLURAL}.{contract.GROUP}"

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


def require_crd() -> None:
    """Refuse to start without the CRD (kopf would serve nothing and never notice it later)."""
    try:
        api("ApiextensionsV1Api").read_custom_resource_definition(CRD_NAME, _request_timeout=30)
    except ApiException as e:
        if e.status == 404:
            raise kopf.PermanentError(f"the CRD {CRD_NAME} is not installed (kubectl apply -f crds/)") from None
        raise


# The API call that server-side applies each kind the operator builds: (API class, method).
_PATCH = {
    "Deployment": ("AppsV1Api", "patch_namespaced_deployment"),
    "Service": ("CoreV1Api", "patch_namespaced_service"),
    "ConfigMap": ("CoreV1Api", "patch_namespaced_config_map"),
    "ServiceAccount": ("CoreV1Api", "patch_namespaced_service_account"),
    "Role": ("RbacAuthorizationV1Api", "patch_namespaced_role"),
    "RoleBinding": ("RbacAuthorizationV1Api", "patch_namespaced_role_binding"),
    "NetworkPolicy": ("NetworkingV1Api", "patch_namespaced_network_policy"),
    "Lease": ("CoordinationV1Api", "patch_namespaced_lease"),
}
_LIST = {
    "Deployment": ("AppsV1Api", "list_namespaced_deployment"),
    "Service": ("CoreV1Api", "list_namespaced_service"),
    "NetworkPolicy": ("NetworkingV1Api", "list_namespaced_network_policy"),
}
_DELETE = {
    "Deployment": ("AppsV1Api", "delete_namespaced_deployment"),
    "Service": ("CoreV1Api", "delete_namespaced_service"),
    "NetworkPolicy": ("NetworkingV1Api", "delete_namespaced_network_policy"),
}


def apply(obj: dict[str, Any], owner: dict[str, Any]) -> None:
    """Server-side apply with the operator's field manager: it owns only the fields it sets."""
    kopf.adopt(obj, owner=owner)
    ns, name, kind = obj["metadata"]["namespace"], obj["metadata"]["name"], obj["kind"]
    cls, method = _PATCH[kind]
    getattr(api(cls), method)(name, ns, obj, field_manager=FIELD_MANAGER, force=True, _content_type=APPLY)


@dataclass(frozen=True)
class NamespaceObjects:
    """The objects of ``builders.PRUNED_KINDS`` in a namespace that carry a cascade label, read
    once a pass for both name conflicts and pruning: ``(kind, name)`` -> the cascade label, and
    -> the UIDs of the objects that own it."""

    labels: dict[tuple[str, str], str]
    owners: dict[tuple[str, str], frozenset[str]]


def cascade_objects(namespace: str) -> NamespaceObjects:
    labels: dict[tuple[str, str], str] = {}
    owners: dict[tuple[str, str], frozenset[str]] = {}
    for kind in builders.PRUNED_KINDS:
        cls, method = _LIST[kind]
        for o in getattr(api(cls), method)(namespace, label_selector=contract.CASCADE_LABEL).items:
            key = (kind, o.metadata.name)
            labels[key] = (o.metadata.labels or {}).get(contract.CASCADE_LABEL, "")
            owners[key] = frozenset(r.uid for r in o.metadata.owner_references or [])
    return NamespaceObjects(labels, owners)


def prune(namespace: str, cascade: Mapping[str, Any], owned: Sequence[dict], found: NamespaceObjects) -> list[str]:
    """Delete the cascade's objects (in ``found``) that ``owned`` (built from its spec) no longer
    has; their names. Only objects this cascade owns (its UID among their owners): a workload
    that merely carries the label, made by someone else, is left alone."""
    name, uid = cascade["metadata"]["name"], cascade["metadata"]["uid"]
    gone = []
    for kind, obj in builders.prunable(found.labels, name, list(owned)):
        if uid not in found.owners.get((kind, obj), frozenset()):
            continue
        cls, method = _DELETE[kind]
        try:
            getattr(api(cls), method)(obj, namespace)
        except ApiException as e:
            if e.status != 404:
                raise
        gone.append(f"{kind} {obj}")
    return gone


def refused(e: ApiException) -> bool:
    """A 4xx other than a conflict or throttling: the request itself is wrong (invalid, forbidden)."""
    return e.status is not None and 400 <= e.status < 500 and e.status not in (409, 429)


def api_message(e: ApiException) -> str:
    """The API server's own words for a refusal (its Status message), else the HTTP reason."""
    try:
        return str(json.loads(e.body or "{}").get("message") or e.reason)
    except (ValueError, AttributeError):
        return str(e.reason)


_BUNDLES: dict[tuple[str, str], tuple[str, Bundle]] = {}


def bundle_of_data(namespace: str, name: str, version: str, data: dict) -> Bundle:
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
    return bundle_of_data(namespace, name, cm.metadata.resource_version or "", cm.data or {})


def bundle_of(namespace: str, name: str, profile: tuple[str, dict] | None) -> Bundle:
    """The parsed profile: from the index when it has the ConfigMap, else read now."""
    return read_bundle(namespace, name) if profile is None else bundle_of_data(namespace, name, *profile)


def worker_selector(cascade: str) -> str:
    return f"{contract.CASCADE_LABEL}={cascade},app.kubernetes.io/component=worker"


def worker_rollout(name: str, namespace: str) -> list[logic.WorkerRollout]:
    """Each worker Deployment's progress, read now (one list call; after applying a plan)."""
    apps = api("AppsV1Api")
    deps = apps.list_namespaced_deployment(namespace, label_selector=worker_selector(name))
    as_dicts = [apps.api_client.sanitize_for_serialization(d) for d in deps.items]
    return sorted((logic.rollout_of(d) for d in as_dicts), key=lambda w: w.model)


def patch_status(namespace: str, name: str, status: dict) -> None:
    api("CustomObjectsApi").patch_namespaced_custom_object_status(
        contract.GROUP, contract.VERSION, namespace, contract.PLURAL, name, {"status": status}
    )
