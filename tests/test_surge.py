"""Surges: the early re-plan trigger, the overload routing rules, and the replay's evidence."""

import pytest

from hadis.core.routing import after_light, entry_tier
from hadis.core.surge import SurgeSettings, SurgeTrigger, climbing
from hadis.sim.engine import Simulation
from hadis.sim.metrics import summarise
from hadis.sim.policies import Hadis
from hadis.sim.run import SimSettings, context_for, run_system
from hadis.sim.tracegen import maf, read_hourly, spikes, staircase, trace

# ------------------------------------------------------------------------------ trigger


def test_first_check_plans_for_the_estimate():
    t = SurgeTrigger()
    assert t.check(0.0, 5.0).reason == "initial"
    assert t.planned_rate == 5.0


def test_a_rise_replans_at_once_after_the_cooldown():
    t = SurgeTrigger(SurgeSettings(rise_ratio=1.25, cooldown_s=2.0))
    t.check(0.0, 8.0)
    assert t.check(1.0, 40.0) is None  # within the cooldown of the last plan
    rise = t.check(2.0, 40.0)
    assert rise is not None and (rise.reason, rise.rate) == ("rise", 40.0)
    assert t.check(10.0, 45.0) is None  # inside the hysteresis band: 45 < 1.25 x 40


def test_low_rates_need_an_absolute_rise_too():
    t = SurgeTrigger(SurgeSettings(min_rise_rps=1.0))
    t.check(0.0, 0.2)
    assert t.check(5.0, 0.9) is None  # 4.5x, but only 0.7 req/s more
    assert t.check(6.0, 1.3).reason == "rise"


def test_backlog_replans_for_at_least_the_planned_rate():
    t = SurgeTrigger(SurgeSettings(backlog_ratio=0.5))
    t.check(0.0, 20.0)
    assert t.check(3.0, 15.0, backlog=0.3) is None
    b = t.check(4.0, 15.0, backlog=0.6)
    assert (b.reason, b.rate) == ("backlog", 20.0)


def test_capacity_is_released_only_after_the_fall_lasts():
    t = SurgeTrigger(SurgeSettings(fall_ratio=0.8, scale_down_delay_s=10.0))
    t.check(0.0, 40.0)
    assert t.check(3.0, 10.0) is None  # no early re-plan on a fall
    held = t.check(5.0, 10.0, timer_due=True)
    assert (held.reason, held.rate) == ("timer", 40.0)  # fallen for 2 s: hold the capacity
    assert t.check(10.0, 35.0, timer_due=True).rate == 40.0  # inside the band: the clock resets
    t.check(11.0, 10.0)
    assert t.check(15.0, 10.0, timer_due=True).rate == 40.0
    fall = t.check(21.0, 10.0, timer_due=True)
    assert (fall.reason, fall.rate) == ("fall", 10.0)


def test_timer_follows_a_mild_rise_and_by_default_a_fall():
    t = SurgeTrigger()
    t.check(0.0, 10.0)
    assert t.check(5.0, 11.0, timer_due=True).rate == 11.0
    assert t.check(10.0, 7.0, timer_due=True).rate == 7.0  # defaults: the estimator decays slowly


def test_a_climb_counts_as_rising_for_the_settle_time_after_its_last_rise():
    """The rate stands still between scrapes: a pass at the rate of the last rise is still in the
    climb until the settle time has passed since that rise; a new rise starts it again."""
    assert climbing(5.0, None, None, 0.0, 60.0) == (False, None)  # no plan yet: nothing to rise above
    assert climbing(5.0, 2.0, None, 10.0, 60.0) == (True, 10.0)
    assert climbing(5.0, 5.0, 10.0, 69.0, 60.0) == (True, 10.0)  # the same rate, within the settle time
    assert climbing(4.0, 5.0, 10.0, 69.0, 60.0) == (True, 10.0)  # a dip, too
    assert climbing(5.0, 5.0, 10.0, 70.0, 60.0) == (False, 10.0)  # settled: re-balance for this rate
    assert climbing(5.5, 5.0, 10.0, 75.0, 60.0) == (True, 75.0)
    assert climbing(5.0, 5.0, 10.0, 11.0, 0.0) == (False, 10.0)  # no settle time: the strict rule
    # with a noise margin, a read within it above the last rise's rate is no new rise
    assert climbing(5.4, 5.0, 10.0, 69.0, 60.0, noise=0.1) == (True, 10.0)
    assert climbing(5.4, 5.0, 10.0, 70.0, 60.0, noise=0.1) == (False, 10.0)
    assert climbing(5.6, 5.0, 10.0, 70.0, 60.0, noise=0.1) == (True, 70.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rise_ratio": 1.0}, "rise_ratio"),
        ({"fall_ratio": 0.0}, "fall_ratio"),
        ({"cooldown_s": -1}, "cooldown_s"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SurgeSettings(**kwargs)


# ------------------------------------------------------------------------------ routing rules


def test_light_results_degrade_instead_of_escalating_into_a_late_heavy_tier():
    assert after_light(0.9, 0.5, heavy_in_time=False) == "accept"  # confident: never escalated
    assert after_light(0.1, 0.5, heavy_in_time=True) == "escalate"
    assert after_light(0.1, 0.5, heavy_in_time=False) == "degrade"


@pytest.mark.parametrize(
    "pct, heavy, light, expected",
    [
        (0.95, True, True, "heavy"),
        (0.95, False, True, "degrade"),
        (0.95, False, False, "shed"),
        (0.10, False, True, "light"),
        (0.10, True, False, "overflow"),  # light saturated, heavy has room: heavy, in time
        (0.10, False, False, "shed"),
    ],
)
def test_entry_tier(pct, heavy, light, expected):
    assert entry_tier(pct, 0.2, heavy, light) == expected


# ------------------------------------------------------------------------------ replay

SETTINGS = SimSettings(gpus=16, slo_s=6.0, time_scale=0.1)


def replay(sim_data, trace, **policy):
    ctx = context_for(sim_data, SETTINGS)
    sim = Simulation(
        trace,
        sim_data.prompts,
        sim_data.profile,
        Hadis(ctx, **policy),
        total_gpus=16,
        slo_s=6.0,
        replan_interval_s=SETTINGS.interval,
        swap_delay_s=ctx.swap_s.__getitem__,
    )
    result = sim.run()
    summary, _ = summarise(result, 6.0, sim_data.grid, sim_data.profile, sim_data.prompts, SETTINGS.interval)
    return result, summary


@pytest.fixture(scope="module")
def spike_trace():
    return trace(spikes(8, 64, every_s=60, width_s=5, duration_s=180), seed=3)


def test_degraded_requests_are_served_light_and_never_escalated(sim_data, spike_trace):
    result, s = replay(sim_data, spike_trace)
    degraded = [r for r in result.requests if r.degraded]
    assert degraded and s["degraded"] == len(degraded)
    assert all(not r.dropped and r.path == "L" for r in degraded)
    lights = {p.light for _, p in result.plans}
    assert all(r.model in lights for r in degraded)  # served by the light model of its time
    assert s["shed"] == 0  # shedding is off in the replay by default (no client retries)
    _, off = replay(sim_data, spike_trace, degrade=False)
    assert off["degraded"] == 0


def test_shedding_refuses_at_arrival_and_counts_as_a_violation(sim_data, spike_trace):
    result, s = replay(sim_data, spike_trace, shed=True)
    shed = [r for r in result.requests if r.shed]
    assert shed and s["shed"] == len(shed)
    assert all(r.dropped and r.done == r.arrival and r.model == "" for r in shed)
    assert s["served"] + s["dropped"] == s["arrivals"]


def test_early_replans_fire_on_spikes_and_cut_violations(sim_data, spike_trace):
    _, early = replay(sim_data, spike_trace)
    _, timer = replay(sim_data, spike_trace, early=False, degrade=False)
    assert early["early_replans"] >= 3  # one per spike at least
    assert timer["early_replans"] == 0
    assert early["slo_violation_ratio"] < timer["slo_violation_ratio"] / 2


def test_swap_aware_plans_move_fewer_gpus(sim_data):
    surge = trace(staircase([2, 20, 40, 60], step_s=60), seed=0)
    _, aware = replay(sim_data, surge)
    _, blind = replay(sim_data, surge, swap_aware=False)
    assert aware["model_swaps"] < blind["model_swaps"]


# The acceptance, on traces of our own making (seeded, so deterministic).
SURGES = {
    "staircase": staircase([2, 20, 40, 60], step_s=60),
    "spikes": spikes(8, 64, every_s=60, width_s=5, duration_s=300),
}


@pytest.mark.parametrize("name", sorted(SURGES))
def test_hadis_halves_surge_violations_for_at_most_half_a_fid(sim_data, name):
    surge = trace(SURGES[name], seed=0)
    ref = run_system("hadis-ref", sim_data, surge, SETTINGS).summary
    ours = run_system("hadis", sim_data, surge, SETTINGS).summary
    assert ref["slo_violation_ratio"] > 0.01  # the surge hurts the reference
    assert ours["slo_violation_ratio"] <= ref["slo_violation_ratio"] / 2
    assert ours["fid_mean"] <= ref["fid_mean"] + 0.5


def test_hadis_is_no_worse_on_a_maf_shaped_trace(sim_data, data_dir):
    hourly = read_hourly((data_dir / "traces" / "maf_hourly_invocations.csv").read_text(), "maf")
    shaped = trace(maf(hourly, 1, 32), seed=0)
    ref = run_system("hadis-ref", sim_data, shaped, SETTINGS).summary
    ours = run_system("hadis", sim_data, shaped, SETTINGS).summary
    assert ours["slo_violation_ratio"] <= ref["slo_violation_ratio"]
    assert ours["fid_mean"] <= ref["fid_mean"]
