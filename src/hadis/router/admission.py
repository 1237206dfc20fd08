"""Deadline-aware admission: shed a request early when its tier cannot finish it within the SLO.

Pure bookkeeping, no I/O. Per tier the router keeps the images in flight and learns two things
from completions:

- ``base_s``: how long one image takes when it meets no queue (an average over images that
  started while the tier was idle or nearly so);
- ``capacity``: how many images per second the tier completes while it is busy (completions
  counted over a short sliding window, averaged over windows in which work was waiting).

A new request of ``n`` images is predicted to finish after the work ahead of it and its own
first ``n - 1`` images drain, plus one image's service: ``(in_flight + n - 1) / capacity + base_s``
(seconds: images over images per second, plus seconds). When that is past the SLO, or the tier already
holds ``max_in_flight`` images, it is refused at once with a ``Retry-After`` that says when the
backlog should have drained, instead of waiting in a queue that grows without bound.

With a planning profile (``prior_base_s``, ``prior_capacity``: the ready replicas times one
replica's best batch throughput) a burst that meets a cold router is admitted against what the
tier can do, not waved through; the measured ``base_s`` then scales that capacity to the speed the
tier really runs at.

Holding (``hold``): the work ahead is drained by the ready replicas now and, from the moment they
are expected Ready, by the replicas the plan is bringing up (``coming_capacity`` from
``coming_at``): a request that the tier cannot start now is admitted when that capacity finishes
it within the SLO, and waits for a pod (``hadis.router.holding``) instead of being shed.

With several router replicas each one sees only its own images. Each admits against its
``share`` (1/N of the tier's capacity and of ``max_in_flight``); what it learns needs no
correction, because under load its own completions are its share of the tier's: own in-flight
over own throughput is the tier's backlog over the tier's throughput.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


@dataclass
class TierLoad:
    """Live load of one tier (all its replicas)."""

    in_flight: int = 0
    base_s: float | None = None
    capacity: float | None = None  # images per second while busy
    alpha: float = 0.2
    window_s: float = 2.0
    idle_below: int = 2  # an image that starts with fewer ahead of it measures base_s
    prior_base_s: float | None = None
    prior_capacity: float | None = None  # the whole tier's, images per second
    share: float = 1.0  # this router's part of the tier (1 / router replicas)
    coming_capacity: float = 0.0  # the whole tier's images per second from replicas not yet Ready
    coming_at: float | None = None  # when they are expected Ready (time.monotonic())
    _done: deque = field(default_factory=deque)
    _window_start: float | None = None
    _busy_window: bool = False

    def effective(self) -> tuple[float | None, float | None]:
        """(base seconds, images per second) for this router.

        With a profile, capacity is its share of the profile's, scaled by how fast images really
        run (the profile's base latency over the measured one): throughput counted at the router
        measures the offered load whenever the tier is not saturated, so it is no capacity. Without
        a profile, the busy-window throughput is all there is."""
        base = self.base_s if self.base_s is not None else self.prior_base_s
        if not self.prior_capacity:
            return base, self.capacity
        capacity = self.prior_capacity * self.share
        if self.base_s and self.prior_base_s:
            capacity *= min(10.0, max(0.1, self.prior_base_s / self.base_s))
        return base, capacity

    def predicted_latency(self, n: int = 1, now: float | None = None) -> float:
        """Seconds until ``n`` more images would be done (0 when nothing is known yet). With
        ``now`` given, capacity that is coming counts from when it is expected."""
        base, capacity = self.effective()
        if base is None:
            return 0.0
        work = self.in_flight + max(0, n - 1)
        coming = self.coming_capacity * self.share if now is not None and self.coming_at is not None else 0.0
        if not coming:
            return work / capacity + base if capacity else base
        eta = max(0.0, self.coming_at - now)
        return drain_seconds(work, capacity or 0.0, coming, eta) + base

    def start(self, n: int = 1) -> int:
        """Count ``n`` images in; returns how many were ahead of them."""
        ahead = self.in_flight
        self.in_flight += n
        if ahead > 0:
            self._busy_window = True
        return ahead

    def finish(self, latency_s: float, now: float, ahead: int, n: int = 1) -> None:
        """Record completed images: their latency, how many were ahead, the completion time."""
        self.in_flight = max(0, self.in_flight - n)
        a = self.alpha
        if ahead < self.idle_below:
            self.base_s = latency_s if self.base_s is None else (1 - a) * self.base_s + a * latency_s
        if self._window_start is None:
            self._window_start = now
        self._done.append(n)
        if now - self._window_start >= self.window_s:
            if self._busy_window:  # only a window with waiting work measures capacity
                rate = sum(self._done) / (now - self._window_start)
                self.capacity = rate if self.capacity is None else (1 - a) * self.capacity + a * rate
            self._done.clear()
            self._window_start = now
            self._busy_window = self.in_flight > 0

    def abandon(self, n: int = 1) -> None:
        """Images that ended without a result (failure, timeout)."""
        self.in_flight = max(0, self.in_flight - n)


def drain_seconds(work: float, rate: float, coming_rate: float, coming_after_s: float) -> float:
    """Seconds to drain ``work`` images at ``rate`` images per second now, joined by
    ``coming_rate`` after ``coming_after_s`` seconds."""
    if rate > 0 and work <= rate * coming_after_s:
        return work / rate
    total = rate + coming_rate
    if total <= 0:
        return math.inf
    return coming_after_s + (work - rate * coming_after_s) / total


@dataclass(frozen=True)
class Admission:
    admitted: bool
    reason: str = ""
    retry_after_s: float = 0.0
    predicted_s: float = 0.0


def admit(load: TierLoad, n: int, slo_s: float, max_in_flight: int, now: float | None = None) -> Admission:
    """Admit ``n`` images to a tier, or say why not and when to retry. ``max_in_flight`` is the
    tier's; this router holds its share of it (at least one image). ``now``: count the capacity
    that is coming (holding); without it, only the ready replicas'."""
    predicted = load.predicted_latency(n, now)
    limit = max(1, math.ceil(max_in_flight * load.share))
    if load.in_flight + n > limit:
        capacity = load.effective()[1]
        drain = load.in_flight / capacity if capacity else slo_s
        return Admission(False, "in-flight limit reached", max(1.0, drain), predicted)
    if predicted > slo_s:
        wait = predicted - slo_s if math.isfinite(predicted) else slo_s
        return Admission(False, "predicted latency exceeds the SLO", max(1.0, wait), predicted)
    return Admission(True, predicted_s=predicted)
