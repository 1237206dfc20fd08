"""Which worker pod gets the next image: the ready one with the least work in flight.

Pure bookkeeping, no I/O. A tier's Service balances *connections* at random (kube-proxy), so a
busy pod gets as many images as an idle one and its queue grows while another idles. The router
knows what it has sent to each pod and not yet had back, so it picks the pod with the fewest
(ties in turn). The pods come from the Service's EndpointSlices (``ready_addresses``); while no
watch has reported (or the watch is unavailable), the tier's configured endpoints (its Service)
are used as before.

A pod that is terminating is not ready in its EndpointSlice, so it gets nothing new from the
moment its deletion starts, and finishes what it holds (see the workers' ``preStop``). When the
watch reports no ready pod at all, the tier has none: the router fails over to the other tier at
once. It does not fall back to the Service then, because kube-proxy sends a Service's traffic to
terminating pods when no ready one is left, and those are about to stop (a rollout of a one-pod
tier lost every request for the length of the drain that way).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def _host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def ready_addresses(slices: Iterable[Mapping[str, Any]], port_name: str = "http") -> tuple[str, ...]:
    """``host:port`` of every ready endpoint in EndpointSlices (API JSON, camelCase), sorted.

    ``conditions.ready`` absent means ready (the API's rule); a terminating pod is not ready.
    One address per endpoint: they are the same pod."""
    out: set[str] = set()
    for s in slices:
        port = next((p.get("port") for p in s.get("ports") or () if (p.get("name") or "") == port_name), None)
        if port is None:
            continue
        for ep in s.get("endpoints") or ():
            cond = ep.get("conditions") or {}
            if cond.get("ready") is False or cond.get("terminating") is True:
                continue
            addrs = ep.get("addresses") or ()
            if addrs:
                out.add(_host_port(addrs[0], int(port)))
    return tuple(sorted(out))


def ready_count(slices: Iterable[Mapping[str, Any]]) -> int:
    """How many endpoints of a Service are ready, whatever their ports (the routers' peers)."""
    n = 0
    for s in slices:
        for ep in s.get("endpoints") or ():
            cond = ep.get("conditions") or {}
            if cond.get("ready") is not False and cond.get("terminating") is not True:
                n += 1
    return n


class EndpointPool:
    """One tier's endpoints and the images this router has in flight at each."""

    def __init__(self, fallback: tuple[str, ...]):
        self.fallback = fallback
        self.discovered: tuple[str, ...] | None = None  # None: no watch has reported
        self.in_flight: dict[str, int] = {}
        self._turn = 0

    @property
    def source(self) -> str:
        """``endpointslices`` when the pods themselves are dispatched to, else ``service``."""
        return "service" if self.discovered is None else "endpointslices"

    def candidates(self) -> tuple[str, ...]:
        return self.fallback if self.discovered is None else self.discovered

    def update(self, discovered: tuple[str, ...] | None) -> None:
        self.discovered = discovered
        live = set(self.candidates())
        for ep in [e for e, n in self.in_flight.items() if n <= 0 and e not in live]:
            del self.in_flight[ep]

    def order(self) -> list[str]:
        """Every candidate, the least loaded first: the first is tried, the rest on failure."""
        eps = self.candidates()
        if not eps:
            return []
        self._turn = (self._turn + 1) % len(eps)
        rotated = eps[self._turn :] + eps[: self._turn]  # ties go round, not always to the first
        return sorted(rotated, key=lambda e: self.in_flight.get(e, 0))

    def start(self, endpoint: str) -> None:
        self.in_flight[endpoint] = self.in_flight.get(endpoint, 0) + 1

    def finish(self, endpoint: str) -> None:
        n = self.in_flight.get(endpoint, 0) - 1
        if n > 0 or endpoint in self.candidates():
            self.in_flight[endpoint] = max(0, n)
        else:
            self.in_flight.pop(endpoint, None)
