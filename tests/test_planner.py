import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hadis.core.pareto import Config, ParetoTable
from hadis.core.planner import Demand, Objective, plan_cascade, plan_hadis_reference
from hadis.core.profile import LatencyCurve, ModelProfile, Profile
from hadis.core.queueing import erlang_c_table, pool_latency


def erlang_c(c: int, a: float) -> float:
    """Textbook Erlang C by factorials, independent of the recursion under test."""
    if a >= c:
        return 1.0
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


@pytest.mark.parametrize("c, a", [(1, 0.5), (2, 1.0), (4, 3.2), (10, 7.5), (16, 15.9)])
def test_erlang_c_matches_the_formula(c, a):
    assert erlang_c_table(np.array(a), c)[c] == pytest.approx(erlang_c(c, a))


def test_pool_latency_shape_and_monotone_in_gpus():
    lat, batch = pool_latency(
        np.array([5.0, 0.0]), np.array([0, 0]), np.array([1, 2]), np.array([1.0, 1.8]), 8, 0.7, 0.97
    )
    assert lat.shape == (2, 9)
    assert math.isinf(lat[0, 0]) and math.isinf(lat[0, 2])  # 2 GPUs carry at most 2.2 req/s
    finite = lat[0][np.isfinite(lat[0])]
    assert np.all(np.diff(finite) <= 1e-12)  # more GPUs never slower
    assert lat[1].tolist() == [0.0] * 9  # no demand, no backlog: nothing to wait for
    # A backlog adds its drain time.
    one = (np.array([1]), np.array([1.0]), 8, 0.7, 0.97)
    without, _ = pool_latency(np.array([5.0]), np.array([0]), *one)
    with_backlog, _ = pool_latency(np.array([5.0]), np.array([20]), *one)
    assert with_backlog[0, 8] == pytest.approx(without[0, 8] + 20 / 8)
    assert set(batch[0][np.isfinite(lat[0])]) <= {1, 2}


def small_profile(lat_light: float, lat_heavy: float) -> Profile:
    return Profile(
        device="test",
        models=(
            ModelProfile("L", "", 2, 0.0, 512, LatencyCurve({1: lat_light}, rule="scaled", factor=0.9)),
            ModelProfile("H", "", 20, 5.0, 512, LatencyCurve({1: lat_heavy}, rule="scaled", factor=0.9)),
        ),
        batch_sizes=(1, 2, 4, 8),
    )


def table_from(shares: list[tuple[float, float]]) -> ParetoTable:
    rows = [Config("L", "H", r, d, quality=30 - 10 * (r + (1 - r) * d)) for r, d in shares]
    return ParetoTable(rows)


def brute_force(profile, table, gpus, slo, demand, quantile, max_util, per=None, min_gpus=0, max_fid=None):
    """Every row x every pair of replica counts (one of each tier at least) x every batch size,
    scalar arithmetic only. Returns (quality, GPUs) of the best plan by the planner's objective."""
    per = per or {"L": 1, "H": 1}
    options = []
    for c in table.rows:
        lam_l, lam_h = (1 - c.router_ratio) * demand, c.heavy_ratio * demand
        for n_l in range(1, gpus // per["L"] + 1):
            for n_h in range(1, gpus // per["H"] + 1):
                used = n_l * per["L"] + n_h * per["H"]
                if not min_gpus <= used <= gpus:
                    continue

                def pool(model, lam, g):
                    if lam == 0:
                        return 0.0
                    best = math.inf
                    for b, s in profile.feasible_batches(model):
                        a = lam * s / b
                        if a / g >= max_util:
                            continue
                        cc = erlang_c(g, a)
                        spare = g / s - lam / b
                        wait = max(0.0, math.log(cc / (1 - quantile))) / (2 * spare) if cc > 0 else 0.0
                        best = min(best, wait + s)
                    return best

                wl, wh = pool("L", lam_l, n_l), pool("H", lam_h, n_h)
                paths = []
                if c.router_ratio < 1 and c.disc_ratio < 1:
                    paths.append(wl)
                if c.router_ratio < 1 and c.disc_ratio > 0:
                    paths.append(wl + wh)
                if c.router_ratio > 0:
                    paths.append(wh)
                if max(paths) <= slo:
                    options.append((c.quality, used))
    if not options:
        return None
    if max_fid is not None:
        within = [o for o in options if o[0] <= max_fid + 1e-9]
        if within:
            return min(within, key=lambda o: (o[1], o[0]))
    return min(options)


GRID = [(r / 10, d / 10) for r in range(0, 11, 2) for d in range(0, 11, 2)]


@settings(max_examples=60, deadline=None)
@given(
    gpus=st.integers(2, 9),
    per_light=st.integers(1, 2),
    per_heavy=st.integers(1, 3),
    min_share=st.floats(0.0, 1.0),
    demand=st.floats(0.1, 12.0),
    slo=st.floats(1.0, 8.0),
    shares=st.lists(st.sampled_from(GRID), min_size=1, max_size=8, unique=True),
    max_fid=st.one_of(st.none(), st.floats(20.0, 30.0)),
)
def test_cascade_planner_is_optimal_by_brute_force(gpus, per_light, per_heavy, min_share, demand, slo, shares, max_fid):
    profile, table = small_profile(0.2, 1.5), table_from(shares)
    per = {"L": per_light, "H": per_heavy}
    if per_light + per_heavy > gpus:
        with pytest.raises(ValueError, match="cannot hold one replica of each tier"):
            plan_cascade(profile, table, gpus, slo, Demand(demand), gpus_per_replica=per)
        return
    min_gpus = int(min_share * gpus)
    objective = Objective(max_fid)
    plan = plan_cascade(
        profile, table, gpus, slo, Demand(demand), gpus_per_replica=per, min_gpus=min_gpus, objective=objective
    )
    expected = brute_force(profile, table, gpus, slo, demand, 0.7, 0.97, per, min_gpus, max_fid)
    for a in plan.allocations:  # GPUs are whole replicas, and both tiers of the pair are served
        assert a.gpus == a.replicas * per[a.model] and a.replicas >= 1
    assert plan.total_gpus <= gpus
    if expected is None:
        assert not plan.feasible and plan.reason
    else:
        assert plan.feasible
        assert (plan.predicted_quality, plan.total_gpus) == (pytest.approx(expected[0]), expected[1])
        assert plan.total_gpus >= min_gpus
        assert plan.predicted_latency_s <= slo
        assert plan.objective_met == (max_fid is None or expected[0] <= max_fid + 1e-9)


@settings(max_examples=40, deadline=None)
@given(
    gpus=st.integers(1, 8),
    demand=st.floats(0.1, 12.0),
    slo=st.floats(1.0, 8.0),
    delay=st.floats(0.0, 2.0),
    shares=st.lists(st.sampled_from(GRID), min_size=1, max_size=8, unique=True),
)
def test_reference_planner_is_optimal_by_brute_force(gpus, demand, slo, delay, shares):
    profile, table = small_profile(0.2, 1.5), table_from(shares)
    plan = plan_hadis_reference(profile, table, gpus, slo, Demand(demand), queue_delay_s=delay)
    best = None
    for c in table.rows:
        for (b_l, s_l), (b_h, s_h) in itertools.product(profile.feasible_batches("L"), profile.feasible_batches("H")):
            for g_l, g_h in itertools.product(range(1, gpus + 1), range(gpus + 1)):
                if g_l + g_h > gpus or (c.heavy_ratio > 0 and g_h == 0):
                    continue
                if g_l * b_l / s_l + 1e-9 < demand or g_h * b_h / s_h + 1e-9 < c.heavy_ratio * demand:
                    continue
                if s_l + s_h + 1.2 * delay > slo:
                    continue
                best = c.quality if best is None else min(best, c.quality)
    if best is None:
        assert not plan.feasible
    else:
        assert plan.feasible and plan.predicted_quality == pytest.approx(best)
        assert sum(a.gpus for a in plan.allocations) == gpus  # left-over GPUs are handed out (the replay's choice)


def test_each_model_is_provisioned_for_the_traffic_that_reaches_it():
    profile, table = small_profile(0.2, 1.5), table_from([(0.3, 0.5)])
    plan = plan_cascade(profile, table, 16, 10.0, Demand(10.0))
    rates = {a.model: a.arrival_rate for a in plan.allocations}
    assert rates["L"] == pytest.approx(7.0)  # (1 - r) of demand
    assert rates["H"] == pytest.approx(6.5)  # r + (1 - r) d of demand
    ref = plan_hadis_reference(profile, table, 16, 10.0, Demand(10.0))
    assert {a.model: a.arrival_rate for a in ref.allocations}["L"] == pytest.approx(10.0)


def test_queues_push_the_planner_to_more_capacity():
    profile = small_profile(0.2, 1.5)
    table = table_from([(0.0, 0.0), (0.0, 0.5), (0.0, 1.0)])
    calm = plan_cascade(profile, table, 8, 6.0, Demand(3.0))
    backlog = plan_cascade(profile, table, 8, 6.0, Demand(3.0, {"H": 40}))
    assert backlog.config.heavy_ratio < calm.config.heavy_ratio


def test_infeasible_gives_reason_and_a_fallback_that_serves_everything_light():
    profile, table = small_profile(0.2, 1.5), table_from([(0.5, 0.5), (1.0, 0.0)])
    plan = plan_cascade(profile, table, 3, 6.0, Demand(1000.0))
    assert not plan.feasible
    assert "exceeds the capacity" in plan.reason
    assert plan.config.router_ratio == 0 and plan.config.disc_ratio == 0  # nothing goes to heavy ...
    assert plan.gpus("L") == 2 and plan.gpus("H") == 1  # ... which keeps one replica all the same
    ref = plan_hadis_reference(profile, table, 2, 6.0, Demand(1000.0))
    assert not ref.feasible and ref.gpus("L") == 2


def test_bad_inputs_are_refused():
    profile, table = small_profile(0.2, 1.5), table_from([(0.5, 0.5)])
    with pytest.raises(ValueError, match="GPU budget"):
        plan_cascade(profile, table, 0, 6.0, Demand(1.0))
    with pytest.raises(ValueError, match="SLO"):
        plan_cascade(profile, table, 2, 0.0, Demand(1.0))
    with pytest.raises(ValueError, match="demand"):
        plan_cascade(profile, table, 2, 6.0, Demand(math.nan))


def test_e1_plans_are_sensible(sim_data):
    low = plan_cascade(sim_data.profile, sim_data.table, 16, 6.0, Demand(2.0))
    high = plan_cascade(sim_data.profile, sim_data.table, 16, 6.0, Demand(60.0))
    assert low.feasible and high.feasible
    assert low.config.pair == ("sd3.5-medium", "sd3.5-large")
    assert high.predicted_quality > low.predicted_quality  # more load, lighter configuration


def test_without_moves_the_swap_aware_plan_is_the_plain_plan():
    profile, table = small_profile(0.2, 1.5), table_from(GRID)
    plain = plan_cascade(profile, table, 8, 6.0, Demand(4.0))
    here = {a.model: a.gpus for a in plain.allocations}
    again = plan_cascade(profile, table, 8, 6.0, Demand(4.0), current=here, swap_s={"L": 3.0, "H": 3.0})
    assert again.config == plain.config
    assert {a.model: a.gpus for a in again.allocations} == here


def test_swap_time_counts_while_gpus_load_the_heavy_model():
    """All GPUs on light now: a row that needs heavy GPUs waits for them to load."""
    profile = small_profile(0.2, 1.5)
    table = table_from([(0.0, 0.0), (0.5, 0.5)])  # the cascade row has the better FID
    free = plan_cascade(profile, table, 8, 6.0, Demand(2.0))
    assert free.config.heavy_ratio > 0 and free.gpus("H") > 1
    now = {"L": 8, "H": 0}
    slow = plan_cascade(profile, table, 8, 6.0, Demand(2.0), current=now, swap_s={"H": 100.0})
    assert slow.config == free.config  # the steady state still decides the row ...
    assert slow.predicted_latency_s > 100.0  # ... and the prediction counts the load
    quick = plan_cascade(profile, table, 8, 6.0, Demand(2.0), current=now, swap_s={"H": 0.5})
    assert quick.config == free.config and quick.predicted_latency_s <= 6.0


def test_a_small_gain_does_not_move_gpus():
    profile = small_profile(0.2, 1.5)
    table = table_from([(0.0, 0.4), (0.0, 0.8)])  # 0.8 is better by 4 FID but needs more heavy GPUs
    now = {"L": 5, "H": 3}  # serves the 0.4 row in time, not the 0.8 row

    def moved(plan):
        return sum(max(0, plan.gpus(m) - now[m]) for m in now)

    free = plan_cascade(profile, table, 8, 6.0, Demand(4.0))
    assert free.config.disc_ratio == 0.8
    keep = plan_cascade(profile, ParetoTable([table.rows[0]]), 8, 6.0, Demand(4.0), current=now)
    extra = moved(free) - moved(keep)  # what the better row costs in GPUs moved
    assert extra > 0
    gain = table.rows[0].quality - table.rows[1].quality
    stay = plan_cascade(profile, table, 8, 6.0, Demand(4.0), current=now, move_penalty_fid=gain / extra + 0.01)
    assert stay.config.disc_ratio == 0.4 and moved(stay) == moved(keep)
    go = plan_cascade(profile, table, 8, 6.0, Demand(4.0), current=now, move_penalty_fid=gain / extra - 0.01)
    assert go.config.disc_ratio == 0.8 and moved(go) == moved(free)


@pytest.fixture(scope="module")
def tiny():
    """The demo's tiny profile: a light replica serves 4 images/s, a heavy one 1.33."""
    from pathlib import Path

    from hadis.core.bundle import parse_configmap
    from hadis.core.pareto import planning_table

    b = parse_configmap((Path(__file__).resolve().parents[1] / "profiles" / "configmap-tiny.yaml").read_text())
    return b.profile, planning_table(b.table)


def test_spare_replicas_are_priced_as_surge_headroom(tiny):
    """With the whole budget kept (fill_budget), an idle plan's spare GPUs go where a surge
    needs them: 3 light + 1 heavy serve 13.3 images/s against 8 for 1 + 3, at the same FID and
    the same idle latency (the router overflows and degrades between the tiers). It used to be
    1 + 3, the first of the equally fast splits."""
    from hadis.core.planner import throughput

    profile, table = tiny
    assert (throughput(profile, "tiny-light", 6.0), throughput(profile, "tiny-heavy", 6.0)) == (4.0, 4 / 3)
    idle = plan_cascade(profile, table, 4, 6.0, Demand(0.1), fill_budget=True)
    assert (idle.replicas("tiny-light"), idle.replicas("tiny-heavy")) == (3, 1)
    released = plan_cascade(profile, table, 4, 6.0, Demand(0.1))
    assert idle.config == released.config and idle.predicted_latency_s == released.predicted_latency_s
    # at 1 image/s 3 + 1 would take 6.0 s (one heavy replica, 73% of the images): beyond the
    # margin of a quarter of the SLO over the fastest split, so the spare goes to heavy
    busy = plan_cascade(profile, table, 4, 6.0, Demand(1.0), fill_budget=True)
    assert (busy.replicas("tiny-light"), busy.replicas("tiny-heavy")) == (2, 2)
    assert busy.predicted_latency_s <= 4.0 + 1e-9
    # and a re-plan never moves a GPU for headroom alone: from 2 + 2 at idle it stays
    kept = plan_cascade(
        profile, table, 4, 6.0, Demand(0.1), fill_budget=True, current={"tiny-light": 2, "tiny-heavy": 2}
    )
    assert (kept.replicas("tiny-light"), kept.replicas("tiny-heavy")) == (2, 2)


def test_a_rise_keeps_the_images_per_second_of_the_current_split(tiny):
    """At 9 images/s the best FID is 2 light + 2 heavy; from the idle 3 + 1 (13.3 images/s) a
    rising demand keeps 3 + 1 and changes the row (free), since each estimate of a building
    surge is short of what comes; once it stops rising the split is re-balanced. With no row
    that keeps the capacity, the floor is dropped."""
    profile, table = tiny
    now = {"tiny-light": 3, "tiny-heavy": 1}
    kw = dict(fill_budget=True, current=now)
    steady = plan_cascade(profile, table, 4, 6.0, Demand(9.0), **kw)
    rising = plan_cascade(profile, table, 4, 6.0, Demand(9.0), rising=True, **kw)
    assert (steady.replicas("tiny-light"), steady.replicas("tiny-heavy")) == (2, 2)
    assert (rising.replicas("tiny-light"), rising.replicas("tiny-heavy")) == (3, 1) and rising.feasible
    assert rising.config.router_ratio < steady.config.router_ratio  # a lighter row carries the surge
    past = plan_cascade(profile, table, 4, 6.0, Demand(30.0), rising=True, **kw)  # beyond every split
    assert past == plan_cascade(profile, table, 4, 6.0, Demand(30.0), **kw)
