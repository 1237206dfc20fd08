"""Streaming percentiles: where a new value falls among the recent ones.

The router's cuts are shares (``router_ratio``, ``disc_ratio``), so each decision needs the
percentile of a score among the scores of recent prompts. The router never sees all prompts
upfront and the mix drifts, so it keeps a sliding window of the last ``window`` values in
sorted order, warm-started from the quantiles the profile ships, so that the first requests
are routed at the right share too.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence

DEFAULT_WINDOW = 2000


class StreamingPercentile:
    """Percentile of a value among the last ``window`` observed values.

    ``percentile(x, u)`` is the share of the window below ``x``; ``u`` in [0, 1) places ``x``
    among values equal to it, so that ties (integer-valued features tie often) are split in
    proportion instead of all falling on one side of a cut. Pass a stable hash of the prompt
    for ``u`` to keep a prompt's decision reproducible. O(window) per update (a list insert),
    which is a few microseconds at the default window.
    """

    def __init__(self, window: int = DEFAULT_WINDOW, warm_start: Sequence[float] = ()):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self._recent: deque[float] = deque()
        self._sorted: list[float] = []
        for v in _spread(warm_start, window):
            self.observe(v)

    def __len__(self) -> int:
        return len(self._sorted)

    def percentile(self, value: float, u: float = 0.5) -> float:
        """Share of the window below ``value`` (0..1); 0.5 when the window is empty."""
        n = len(self._sorted)
        if n == 0 or math.isnan(value):
            return 0.5
        lo = bisect.bisect_left(self._sorted, value)
        hi = bisect.bisect_right(self._sorted, value)
        return (lo + u * (hi - lo)) / n

    def observe(self, value: float) -> None:
        """Add a value; the oldest leaves once the window is full. NaN is ignored."""
        if math.isnan(value):
            return
        if len(self._recent) == self.window:
            old = self._recent.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._recent.append(value)
        bisect.insort(self._sorted, value)

    def percentile_and_observe(self, value: float, u: float = 0.5) -> float:
        p = self.percentile(value, u)
        self.observe(value)
        return p


def _spread(quantiles: Sequence[float], n: int) -> list[float]:
    """``n`` values with the given evenly spaced quantiles (linear between them), shuffled in a
    fixed order so that they leave the window evenly rather than lowest first."""
    q = [float(v) for v in quantiles if not math.isnan(float(v))]
    if not q:
        return []
    if len(q) == 1:
        return [q[0]] * n
    values = []
    for i in range(n):
        pos = (i + 0.5) / n * (len(q) - 1)
        k = min(int(pos), len(q) - 2)
        frac = pos - k
        values.append(q[k] + frac * (q[k + 1] - q[k]))
    # a fixed stride permutation (coprime with n) interleaves low and high values
    stride = next(s for s in range(max(1, n // 2 + 1), 2 * n + 2) if math.gcd(s, n) == 1)
    return [values[(i * stride) % n] for i in range(n)]
