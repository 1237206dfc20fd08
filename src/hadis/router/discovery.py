"""Watch a Service's EndpointSlices from the router (the I/O half of ``dispatch``).

A thread runs the kubernetes client's list-then-watch (it reconnects with the last
resourceVersion, relists on 410 Gone) and hands every change to the event loop as the full list
of the Service's slices, in API JSON. Credentials: the pod's service account (the operator gives
the router one that may read EndpointSlices), else ``$KUBECONFIG``. When neither exists, or the
API refuses, the watch reports ``None`` and the router keeps using the tier's Service.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("hadis.router")

Slices = list[dict[str, Any]]
WATCH_TIMEOUT_S = 60  # the server ends a watch after this; the thread starts the next at once
REQUEST_TIMEOUT_S = 10.0  # a list, or a watch that hears nothing for this long beyond its timeout
RETRY_S = 2.0

_CLIENT: dict[str, Any] = {}
_CLIENT_LOCK = threading.Lock()


def api_client() -> Any | None:
    """A kubernetes ApiClient, or None when there are no credentials (the router is not in a
    cluster): then every tier uses its Service."""
    with _CLIENT_LOCK:
        if "client" not in _CLIENT:
            import kubernetes

            cfg = kubernetes.client.Configuration()
            try:
                kubernetes.config.load_incluster_config(client_configuration=cfg)
            except kubernetes.config.ConfigException:
                path = os.environ.get("KUBECONFIG")
                try:
                    if not path:
                        raise kubernetes.config.ConfigException("no service account and no KUBECONFIG")
                    kubernetes.config.load_kube_config(config_file=path, client_configuration=cfg)
                except (kubernetes.config.ConfigException, OSError) as e:
                    log.warning("no Kubernetes credentials (%s): each tier is reached through its Service", e)
                    _CLIENT["client"] = None
                    return None
            _CLIENT["client"] = kubernetes.client.ApiClient(cfg)
        return _CLIENT["client"]


class SliceWatch:
    """List and watch the EndpointSlices of one Service; ``on_change(slices or None)`` runs on
    ``loop`` after each change (``None``: the watch is unavailable, use the Service)."""

    def __init__(self, namespace: str, service: str, on_change: Callable[[Slices | None], None]):
        self.namespace = namespace
        self.service = service
        self.on_change = on_change
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run, name=f"endpointslices-{self.namespace}/{self.service}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _emit(self, slices: Slices | None) -> None:
        if self._loop is not None and not self._stop.is_set():
            self._loop.call_soon_threadsafe(self.on_change, slices)

    def _run(self) -> None:
        client = api_client()
        if client is None:
            self._emit(None)
            return
        import kubernetes
        from kubernetes.client.rest import ApiException

        api = kubernetes.client.DiscoveryV1Api(client)
        selector = f"kubernetes.io/service-name={self.service}"
        failures = 0
        while not self._stop.is_set():
            try:
                lst = api.list_namespaced_endpoint_slice(
                    self.namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT_S
                )
                slices = {s.metadata.name: client.sanitize_for_serialization(s) for s in lst.items}
                self._emit(list(slices.values()))
                failures = 0
                watch = kubernetes.watch.Watch()
                for ev in watch.stream(
                    api.list_namespaced_endpoint_slice,
                    self.namespace,
                    label_selector=selector,
                    resource_version=lst.metadata.resource_version,
                    timeout_seconds=WATCH_TIMEOUT_S,
                    _request_timeout=WATCH_TIMEOUT_S + REQUEST_TIMEOUT_S,
                ):
                    if self._stop.is_set():
                        watch.stop()
                        return
                    obj = client.sanitize_for_serialization(ev["object"])
                    name = (obj.get("metadata") or {}).get("name")
                    if ev["type"] == "DELETED":
                        slices.pop(name, None)
                    elif ev["type"] in ("ADDED", "MODIFIED"):
                        slices[name] = obj
                    else:
                        continue  # BOOKMARK, or ERROR (410 Gone): relist below
                    self._emit(list(slices.values()))
            except ApiException as e:
                failures += 1
                log.warning("EndpointSlices of %s/%s: %s %s", self.namespace, self.service, e.status, e.reason)
                if e.status in (401, 403) or failures >= 3:
                    self._emit(None)  # not allowed (or the API is away): use the Service meanwhile
            except Exception as e:  # a dropped connection, a timeout: try again
                failures += 1
                log.warning("EndpointSlices of %s/%s: %r", self.namespace, self.service, e)
                if failures >= 3:
                    self._emit(None)
            self._stop.wait(min(30.0, RETRY_S * failures))
