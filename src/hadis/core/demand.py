"""Demand estimation from a series of arrival counts (what a Prometheus range query returns).

Both estimators take counts per fixed-width bin, oldest first, and return requests per second.
The simulator feeds them the bins of each re-plan interval; the operator feeds them
``increase(...)`` samples from Prometheus.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


def rates(counts: Sequence[float], bin_s: float) -> list[float]:
    """Counts per bin to requests per second."""
    if bin_s <= 0:
        raise ValueError("bin width must be > 0")
    return [max(0.0, float(c)) / bin_s for c in counts]


@dataclass
class EwmaEstimator:
    """HADIS's estimator: an EWMA of the mean rate per interval, times a margin (1.05)."""

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
