"""Demand estimation.

``FastRiseEstimator`` (ours) and ``EwmaEstimator`` take arrival counts per fixed-width bin,
oldest first (what a Prometheus range query returns), and return requests per second; the
operator feeds ours rate samples from Prometheus, the simulator one-second bins.
``ControllerSignals`` is what the HADIS artifact's controller plans with: the requests in the
system and per-model arrivals and queues, one sample a second (the simulator's ``Sample``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


def rates(counts: Sequence[float], bin_s: float) -> list[float]:
    """Counts per bin to requests per second."""
    if bin_s <= 0:
        raise ValueError("bin width must be > 0")
    return [max(0.0, float(c)) / bin_s for c in counts]


@dataclass
class EwmaEstimator:
    """An EWMA of the mean rate per interval, times a margin (1.05): what this replay took for
    HADIS's demand before it followed the artifact (``ControllerSignals`` is the artifact's)."""

    alpha: float = 0.5
    margin: float = 1.05
    value: float | None = None

    def update(self, counts: Sequence[float], bin_s: float) -> float:
        if not counts:
            return self.estimate
        mean = sum(rates(counts, bin_s)) / len(counts)
        self.value = mean if self.value is None else self.alpha * mean + (1 - self.alpha) * self.value
        return self.estimate

    @property
    def estimate(self) -> float:
        return 0.0 if self.value is None else self.value * self.margin


@dataclass
class FastRiseEstimator:
    """Ours: reacts within a bin to a rise, decays slowly on a fall.

    Each bin updates an EWMA with ``alpha_up`` when the bin's rate is above the estimate and
    ``alpha_down`` otherwise. The estimate is the larger of that EWMA and the mean of the last
    ``recent`` bins, times ``margin``: a sudden jump shows up at once, a brief lull does not
    release capacity that will be needed again a few seconds later.
    """

    alpha_up: float = 0.6
    alpha_down: float = 0.4
    margin: float = 1.0
    recent: int = 5
    value: float | None = None
    history: list[float] = field(default_factory=list)

    def update(self, counts: Sequence[float], bin_s: float) -> float:
        for rate in rates(counts, bin_s):
            if self.value is None:
                self.value = rate
            else:
                alpha = self.alpha_up if rate > self.value else self.alpha_down
                self.value = alpha * rate + (1 - alpha) * self.value
            self.history.append(rate)
        del self.history[: -self.recent]
        return self.estimate

    @property
    def estimate(self) -> float:
        if self.value is None:
            return 0.0
        recent = sum(self.history) / len(self.history) if self.history else 0.0
        return max(self.value, recent) * self.margin


@dataclass
class WindowedEwma:
    """An EWMA over the last ``window`` samples, recomputed from the oldest each time.

    This is pandas' ``ewm(halflife=h, adjust=False).mean()`` over a sliding window, as HADIS's
    controller computes it (``controller.py``, ``computeSystemEWMA``): the first sample of the
    window seeds the average, each later one moves it by ``1 - 2 ** (-1 / h)``."""

    window: int = 20
    halflife: float = 3.0
    margin: float = 1.0
    samples: list[float] = field(default_factory=list)

    def update(self, value: float) -> float:
        self.samples.append(float(value))
        del self.samples[: -self.window]
        return self.estimate

    @property
    def estimate(self) -> float:
        if not self.samples:
            return 0.0
        alpha = 1.0 - 2.0 ** (-1.0 / self.halflife)
        value = self.samples[0]
        for x in self.samples[1:]:
            value = (1 - alpha) * value + alpha * x
        return value * self.margin


HADIS_OVER_PROVISION = 1.05  # controller.py OVER_PROVISION_FACTOR
HADIS_QUEUE_SAFETY = 1.2  # qaware_multi_cascade_ILP.py queue_safety_factor


@dataclass
class ControllerSignals:
    """What HADIS's controller plans with, from one sample per second.

    ``demand``: the requests in the system (arrived, not yet finished), x1.05, smoothed by a
    :class:`WindowedEwma`: a backlog-aware count that the MILP uses as a rate. Per model: the
    arrivals at its workers per second and the requests waiting there, smoothed alike. As in
    the artifact, a second with nothing in the system leaves every average where it was."""

    window: int = 20
    halflife: float = 3.0
    system: WindowedEwma = field(init=False)
    model_demand: dict[str, WindowedEwma] = field(default_factory=dict)
    model_queue: dict[str, WindowedEwma] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.system = WindowedEwma(self.window, self.halflife, HADIS_OVER_PROVISION)

    def _series(self, table: dict[str, WindowedEwma], model: str) -> WindowedEwma:
        if model not in table:
            table[model] = WindowedEwma(self.window, self.halflife, 1.0, [0.0])
        return table[model]

    def update(self, in_system: int, arrivals: Mapping[str, int], queues: Mapping[str, int]) -> None:
        if in_system <= 0:
            return
        for m in set(arrivals) | set(queues) | set(self.model_demand):
            self._series(self.model_demand, m).update(arrivals.get(m, 0))
            self._series(self.model_queue, m).update(queues.get(m, 0))
        self.system.update(in_system)

    @property
    def demand(self) -> float:
        return self.system.estimate

    def arrival_rate(self, model: str) -> float:
        s = self.model_demand.get(model)
        return s.estimate if s else 0.0

    def queue(self, model: str) -> float:
        s = self.model_queue.get(model)
        return s.estimate if s else 0.0

    def queue_delay(self, model: str, *, guard: bool = True, factor: float = HADIS_QUEUE_SAFETY) -> float:
        """Little's law on the smoothed signals: ``factor`` x queue / arrival rate.

        Zero without arrivals; with ``guard`` (HADIS's MILP) also zero when the smoothed queue
        is below one request, DiffServe's and Proteus's have no such guard."""
        rate, queue = self.arrival_rate(model), self.queue(model)
        if rate <= 0 or (guard and queue < 1):
            return 0.0
        return factor * queue / rate
