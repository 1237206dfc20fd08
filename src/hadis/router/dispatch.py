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

Late binding (``slots``): a pod takes at most ``slots`` images at once (its batch); ``pick``
answers the least loaded pod with room, or nothing, and the request waits for one
(``hadis.router.holding``) rather than queueing inside a pod that may be slower than another
that frees first. ``expected`` is the plan's replica count: a shortfall of ready pods is
capacity that is coming, dated from when the router first saw it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
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
        self.slots: int | None = None  # images one pod takes at once; None: no limit
        self.expected = 0  # the plan's replicas (0: not known)
        self.short_since: float | None = None  # when fewer than ``expected`` were first ready
        self.on_change: Callable[[], None] | None = None  # a slot freed or the pods changed

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
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def plan(self, expected: int, slots: int | None, now: float) -> None:
        """The plan's replica count and a pod's slots; dates a shortfall of ready pods."""
        self.expected, self.slots = expected, slots
        short = self.discovered is not None and len(self.discovered) < expected
        if not short:
            self.short_since = None
        elif self.short_since is None:
            self.short_since = now
        self._changed()

    def coming(self) -> int:
        """Replicas the plan has asked for that are not Ready yet (0 before a watch reports)."""
        return 0 if self.discovered is None else max(0, self.expected - len(self.discovered))

    def room(self, endpoint: str) -> float:
        """Images ``endpoint`` can still take now. Through a Service (no watch) one address stands
        for all the planned replicas, so it holds their slots between them."""
        if self.slots is None:
            return math.inf
        cap = self.slots
        if self.discovered is None:
            cap = math.ceil(self.slots * max(1, self.expected) / max(1, len(self.fallback)))
        return cap - self.in_flight.get(endpoint, 0)

    def pick(self, exclude: Iterable[str] = ()) -> str | None:
        """The least loaded candidate with room (ties in turn), not in ``exclude``; else None."""
        skip = set(exclude)
        for endpoint in self.order():
            if endpoint not in skip and self.room(endpoint) > 0:
                return endpoint
        return None

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
        self._changed()
