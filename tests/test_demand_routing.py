import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hadis.core.demand import EwmaEstimator, FastRiseEstimator, rates
from hadis.core.routing import escalates, percentiles, routes_to_heavy, rule_scores


def test_rates_from_counts():
    assert rates([5, 10, -1], 0.5) == [10.0, 20.0, 0.0]
    with pytest.raises(ValueError):
        rates([1], 0)


def test_ewma_estimator_is_hadis_formula():
    e = EwmaEstimator(alpha=0.5, margin=1.05)
    assert e.update([10, 10], 1.0) == pytest.approx(10 * 1.05)
    assert e.update([20, 20], 1.0) == pytest.approx(15 * 1.05)
    assert e.update([], 1.0) == pytest.approx(15 * 1.05)


def test_fast_rise_reacts_at_once_and_decays_slowly():
    fast, ewma = FastRiseEstimator(), EwmaEstimator()
    for est in (fast, ewma):
        est.update([8] * 10, 1.0)
    jump = [8, 8, 8, 64, 64]
    assert fast.update(jump, 1.0) > ewma.update(jump, 1.0)
    f = FastRiseEstimator(alpha_up=0.6, alpha_down=0.1, recent=1, margin=1.0)
    f.update([10], 1.0)
    assert f.update([20], 1.0) == pytest.approx(20.0)  # the last bin shows at once
    up = f.value - 10
    f2 = FastRiseEstimator(alpha_up=0.6, alpha_down=0.1, recent=1, margin=1.0)
    f2.update([20], 1.0)
    f2.update([30] * 20, 1.0)
    before = f2.value
    f2.update([10], 1.0)
    down = before - f2.value
    assert up == pytest.approx(6.0) and down == pytest.approx(0.1 * (before - 10))


@given(st.lists(st.integers(0, 3), min_size=10, max_size=400), st.floats(0, 1))
def test_percentile_cut_realises_the_share_even_with_ties(values, share):
    pct = percentiles(values)
    heavy = sum(routes_to_heavy(p, share) for p in pct)
    assert abs(heavy - share * len(values)) <= 1
    esc = sum(escalates(p, share) for p in pct)
    assert abs(esc - share * len(values)) <= 1


def test_zero_shares_route_nothing():
    assert not routes_to_heavy(0.999, 0.0)
    assert not escalates(0.0, 0.0)
    assert routes_to_heavy(0.0, 1.0) and escalates(0.999, 1.0)


def test_rule_score_weights():
    x = np.array([[1, 0, 0, 0, 0, 0, 0, 0], [3, 0, 0, 0, 0, 0, 0, 0]], dtype=float)
    s = rule_scores(x)
    assert s.tolist() == pytest.approx([-0.85, 0.85])
