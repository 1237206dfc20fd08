"""Deadline-aware admission: shed a request early when its tier cannot finish it within the SLO.

Pure bookkeeping, no I/O. Per tier the router keeps the images in flight and exponentially
weighted averages of how long one image takes end to end and how many images the tier
completes per second. A new request of ``n`` images is predicted to finish after the work
ahead of it drains (``in_flight / throughput``) plus one service time; when that exceeds the
SLO, or the tier already holds ``max_in_flight`` images, it is refused at once with a
``Retry-After`` that says when the backlog should have drained, instead of waiting in a queue
that grows without bound.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TierLoad:
    """Live load of one tier (all its replicas)."""

    in_flight: int = 0
    service_s: float | None = None  # EWMA of one image's latency when admitted
    throughput: float | None = None  # EWMA of completions per second while busy
    alpha: float = 0.2
    _last_done: float | None = None

    def predicted_latency(self, n: int) -> float:
        """Seconds until ``n`` more images would be done (0 when nothing is known yet)."""
        if self.service_s is None:
            return 0.0
        wait = self.in_flight / self.throughput if self.throughput else 0.0
        return wait + self.service_s * (1 if n <= 1 else 1 + (n - 1) / max(n, 1))

    def start(self, n: int = 1) -> None:
        self.in_flight += n

    def finish(self, latency_s: float, now: float, n: int = 1) -> None:
        """Record completed images: their latency and the tier's completion rate."""
        self.in_flight = max(0, self.in_flight - n)
        a = self.alpha
        self.service_s = latency_s if self.service_s is None else (1 - a) * self.service_s + a * latency_s
        if self._last_done is not None and now > self._last_done:
            rate = n / (now - self._last_done)
            if self.in_flight > 0 or self.throughput is None:
                self.throughput = rate if self.throughput is None else (1 - a) * self.throughput + a * rate
        self._last_done = now

    def abandon(self, n: int = 1) -> None:
        """Images that ended without a result (failure, timeout)."""
        self.in_flight = max(0, self.in_flight - n)


@dataclass(frozen=True)
class Admission:
    admitted: bool
    reason: str = ""
    retry_after_s: float = 0.0
    predicted_s: float = 0.0


def admit(load: TierLoad, n: int, slo_s: float, max_in_flight: int) -> Admission:
    """Admit ``n`` images to a tier, or say why not and when to retry."""
    predicted = load.predicted_latency(n)
    if load.in_flight + n > max_in_flight:
        drain = load.in_flight / load.throughput if load.throughput else slo_s
        return Admission(False, "in-flight limit reached", max(1.0, drain), predicted)
    if predicted > slo_s:
        return Admission(False, "predicted latency exceeds the SLO", max(1.0, predicted - slo_s), predicted)
    return Admission(True, predicted_s=predicted)
