"""Wake a scaled-to-zero cascade: annotate its wake Lease (the I/O half of a cold start).

A request that finds a tier with no pod, in a cascade that may scale to zero, is held
(``hadis.router.holding``) while the router asks the operator for workers: it merge-patches
``WAKE_ANNOTATION`` on the Lease the operator made for the cascade, which the operator watches.
At most one patch per ``MIN_INTERVAL_S``: a burst of cold requests is one wake. Credentials are
the watch's (``discovery.api_client``); without any the wake is logged and skipped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

from hadis.contract import WAKE_ANNOTATION
from hadis.router.config import ColdStart
from hadis.router.discovery import REQUEST_TIMEOUT_S, api_client

log = logging.getLogger("hadis.router")

MIN_INTERVAL_S = 5.0


class Waker:
    """Sends at most one wake per ``MIN_INTERVAL_S``; ``sent`` counts them."""

    def __init__(self) -> None:
        self._last: float | None = None
        self.sent = 0
        self._tasks: set[asyncio.Task] = set()

    def due(self, now: float) -> bool:
        return self._last is None or now - self._last >= MIN_INTERVAL_S

    def wake(self, cold: ColdStart) -> bool:
        """Ask for workers (in the background); False when one was asked for moments ago."""
        now = time.monotonic()
        if not self.due(now):
            return False
        self._last = now
        self.sent += 1
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(_patch, cold))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True


def _patch(cold: ColdStart) -> None:
    client = api_client()
    if client is None:
        log.warning("cannot wake the cascade: no Kubernetes credentials (lease %s/%s)", cold.namespace, cold.lease)
        return
    import kubernetes

    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    body = {"metadata": {"annotations": {WAKE_ANNOTATION: stamp}}}
    try:
        kubernetes.client.CoordinationV1Api(client).patch_namespaced_lease(
            cold.lease, cold.namespace, body, _request_timeout=REQUEST_TIMEOUT_S
        )
        log.info("asked the operator to wake the cascade (lease %s/%s)", cold.namespace, cold.lease)
    except Exception as e:  # the next cold request asks again
        log.error("waking the cascade failed (lease %s/%s): %s", cold.namespace, cold.lease, e)
