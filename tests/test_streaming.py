"""Streaming percentiles: the realised router share tracks its target, also under drift."""

from __future__ import annotations

import numpy as np
import pytest

from hadis.core.routing import routes_to_heavy
from hadis.core.streaming import StreamingPercentile
from hadis.scoring.model import quantile_summary


def _realised_share(scores, share, estimator, u=None):
    routed = []
    for k, s in enumerate(scores):
        pct = estimator.percentile_and_observe(float(s), 0.5 if u is None else u[k])
        routed.append(routes_to_heavy(pct, share))
    return np.array(routed)


def test_warm_start_routes_the_target_share_from_the_first_request():
    rng = np.random.default_rng(1)
    profile = rng.normal(0, 1, 5000)
    est = StreamingPercentile(window=1000, warm_start=quantile_summary(profile))
    assert len(est) == 1000
    routed = _realised_share(rng.normal(0, 1, 200), 0.3, est)
    assert abs(routed.mean() - 0.3) < 0.08  # the first 200 requests, with no history of their own


def test_share_tracks_target_under_drift():
    """The score distribution shifts by 2 standard deviations, then spreads 3x.

    A fixed cut taken from the profile sends far too many prompts to heavy after the shift;
    the streaming percentile returns to the target within one window."""
    rng = np.random.default_rng(2)
    profile = rng.normal(0, 1, 5000)
    phases = [rng.normal(0, 1, 3000), rng.normal(2, 1, 3000), rng.normal(2, 3, 3000)]
    scores = np.concatenate(phases)
    share, window = 0.3, 1000
    est = StreamingPercentile(window=window, warm_start=quantile_summary(profile))
    routed = _realised_share(scores, share, est)
    fixed_cut = np.quantile(profile, 1 - share)
    for k in range(3):
        settled = routed[k * 3000 + window : (k + 1) * 3000]  # after one window in the phase
        assert abs(settled.mean() - share) < 0.04, (k, settled.mean())
    static = (scores[3000 + window : 6000] >= fixed_cut).mean()
    assert static > 0.8  # what a cut fixed at profiling time would have done


def test_ties_are_split_in_proportion():
    """Integer features make many equal scores; a stable per-prompt u splits them at the cut."""
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 4, 6000).astype(float)  # four distinct values
    u = rng.random(6000)
    est = StreamingPercentile(window=1000, warm_start=quantile_summary(scores[:1000]))
    routed = _realised_share(scores[1000:], 0.3, est, u[1000:])
    assert abs(routed.mean() - 0.3) < 0.03
    est2 = StreamingPercentile(window=1000, warm_start=quantile_summary(scores[:1000]))
    no_split = _realised_share(scores[1000:], 0.3, est2)  # u fixed at 0.5: all-or-none per value
    assert abs(no_split.mean() - 0.3) > abs(routed.mean() - 0.3)


def test_window_is_bounded_and_forgets_old_values():
    est = StreamingPercentile(window=3)
    assert est.percentile(1.0) == 0.5  # empty: no information
    for v in [1, 2, 3, 10, 11, 12]:
        est.observe(v)
    assert len(est) == 3
    assert est.percentile(5) == 0.0
    assert est.percentile(13) == 1.0
    est.observe(float("nan"))
    assert len(est) == 3
    assert est.percentile(float("nan")) == 0.5
    with pytest.raises(ValueError):
        StreamingPercentile(window=0)
