"""What the tests share to wait on the cluster and read a cascade: one wait helper, one status
helper. Tests wait on conditions, never on fixed sleeps (docs/testing.md)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from hadis.local import wait_until  # the one wait helper

__all__ = ["cascade", "condition", "idle_router", "status", "wait_until"]


@contextlib.contextmanager
def idle_router(*cascades: str) -> Iterator[tuple[str, Any]]:
    """An idle router's metrics (the router's own ``RouterMetrics``, every series of
    ``cascades`` at zero) served on a free loopback port for Prometheus to scrape: yields the
    scrape address and the metrics (a test may count requests on them)."""
    from prometheus_client import CollectorRegistry, start_http_server

    from hadis.local import free_port
    from hadis.router.metrics import RouterMetrics

    metrics = RouterMetrics(CollectorRegistry())
    for c in cascades:
        metrics.expose(c, ("light", "heavy"))
    port = free_port()
    server, thread = start_http_server(port, "127.0.0.1", registry=metrics.registry)
    try:
        yield f"127.0.0.1:{port}", metrics
    finally:
        server.shutdown()
        thread.join(5)


def cascade(kube, namespace: str, name: str) -> dict:
    """The live DiffusionCascade (``kube``: the conftest fixture's kubectl runner)."""
    return json.loads(kube("get", "dcas", name, "-n", namespace, "-o", "json"))


def status(kube, namespace: str, name: str) -> dict:
    """The cascade's status ({} before the operator writes one)."""
    return cascade(kube, namespace, name).get("status") or {}


def condition(doc: dict, type_: str) -> dict:
    """The condition of ``type_`` in a status, or in an object's status; {} when absent."""
    st = doc if "conditions" in doc else (doc.get("status") or {})
    return next((c for c in st.get("conditions", []) if c["type"] == type_), {})
