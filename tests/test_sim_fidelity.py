"""The replay as the HADIS artifact runs it: its controller's signals, dispatch, worker timing
and baselines (docs/simulator.md, "Fidelity to the artifact")."""

import math

import numpy as np
import pytest

from hadis.core.demand import ControllerSignals, WindowedEwma
from hadis.core.planner import Demand, plan_hadis_reference
from hadis.sim.data import Trace
from hadis.sim.engine import ARTIFACT_DISCRIMINATOR_S, Observation, Sample, ServingPlan, Simulation
from hadis.sim.policies import DiffServe, InfaasAcc, Proteus, clipper
from hadis.sim.run import SimSettings, context_for

LIGHT, TURBO, MEDIUM, LARGE = "sdxl-lightning-2step", "sd3.5-large-turbo", "sd3.5-medium", "sd3.5-large"


def pandas_ewm_adjust_false(values, halflife):
    """pandas' ewm(halflife, adjust=False).mean()[-1], written out."""
    alpha = 1 - math.exp(-math.log(2) / halflife)
    y = values[0]
    for x in values[1:]:
        y = (1 - alpha) * y + alpha * x
    return y


def test_windowed_ewma_is_the_controllers_smoothing_over_the_last_20_samples():
    e = WindowedEwma(window=20, halflife=3.0, margin=1.05)
    series = [float(x) for x in range(1, 31)]
    for x in series:
        e.update(x)
    assert e.estimate == pytest.approx(1.05 * pandas_ewm_adjust_false(series[-20:], 3.0))
    assert e.estimate != pytest.approx(1.05 * pandas_ewm_adjust_false(series, 3.0))  # the window matters
    assert WindowedEwma().estimate == 0.0


def test_controller_signals_skip_idle_seconds_and_guard_the_queue_delay():
    s = ControllerSignals()
    s.update(0, {LIGHT: 5}, {LIGHT: 50})  # nothing in the system: ignored, as the artifact does
    assert s.demand == 0.0 and s.queue(LIGHT) == 0.0
    for _ in range(30):
        s.update(40, {LIGHT: 10, LARGE: 2}, {LIGHT: 20, LARGE: 0})
    assert s.demand == pytest.approx(40 * 1.05)  # a count in the system, used as a rate
    assert s.queue_delay(LIGHT) == pytest.approx(1.2 * 20 / 10, rel=1e-3)
    assert s.queue_delay(LARGE) == 0.0  # below one request waiting: no delay (HADIS's guard)
    s.update(40, {LIGHT: 10, LARGE: 2}, {LIGHT: 20, LARGE: 0.5})
    assert s.queue(LARGE) < 1
    assert s.queue_delay(LARGE) == 0.0 < s.queue_delay(LARGE, guard=False)


def steady_trace(rate: float, seconds: float, prompt: int = 7) -> Trace:
    n = int(rate * seconds)
    return Trace(np.arange(n) / rate, np.full(n, prompt), f"{rate}/s for {seconds}s")


def simulation(sim_data, trace: Trace, policy, gpus: int, slo_s: float = 6.0, **kw) -> Simulation:
    """A replay of ``trace`` on ``gpus`` GPUs, re-planned every 5 s."""
    return Simulation(
        trace, sim_data.prompts, sim_data.profile, policy, total_gpus=gpus, slo_s=slo_s, replan_interval_s=5, **kw
    )


def test_dropped_requests_stay_in_the_system_count_until_twice_the_slo(sim_data):
    # One GPU of the heaviest model at 4 req/s: most requests are dropped at dequeue.
    plan = ServingPlan(gpus={LARGE: 1}, batch={LARGE: 1}, mixture={LARGE: 1.0})
    sim = simulation(sim_data, steady_trace(4, 30), lambda obs: plan, 1, dispatch="random-worker")
    res = sim.run()
    drops = [r for r in res.requests if r.dropped]
    assert drops
    for sample in sim.samples:
        t = sample.t
        arrived = [r for r in res.requests if r.arrival <= t]
        gone = [r for r in arrived if (not r.dropped and r.done <= t) or (r.dropped and r.arrival + 12.0 <= t)]
        assert sample.in_system == len(arrived) - len(gone), t


def test_random_worker_dispatch_keeps_a_gpus_queue_across_a_model_switch(sim_data):
    plans = iter(
        [
            ServingPlan(gpus={LARGE: 2}, batch={LARGE: 1}, mixture={LARGE: 1.0}),
            ServingPlan(gpus={LARGE: 1, LIGHT: 1}, batch={LARGE: 1, LIGHT: 1}, mixture={LARGE: 1.0}),
        ]
    )
    last = {}

    def policy(obs):
        last["plan"] = next(plans, last.get("plan"))
        return last["plan"]

    sim = simulation(sim_data, steady_trace(3, 10), policy, 2, dispatch="random-worker", timing="artifact")
    res = sim.run()
    # Requests queued for sd3.5-large at the GPU that switched were served by its new model.
    moved = [r for r in res.requests if not r.dropped and r.model == LIGHT]
    assert moved and all(r.arrival < 5.0 for r in moved)


def test_least_in_flight_dispatch_joins_the_least_loaded_gpu(sim_data):
    plan = ServingPlan(gpus={LARGE: 4}, batch={LARGE: 1}, mixture={LARGE: 1.0})
    sim = simulation(sim_data, steady_trace(2, 4), lambda obs: plan, 4, slo_s=60.0, dispatch="least-in-flight")
    original = sim._enqueue
    loads: list[tuple[int, int]] = []

    def spy(req, model):
        before = [len(g.queue) + len(sim._in_flight.get(i, ())) for i, g in enumerate(sim.gpus)]
        original(req, model)
        after = [len(g.queue) + len(sim._in_flight.get(i, ())) for i, g in enumerate(sim.gpus)]
        chosen = next(i for i in range(len(after)) if after[i] > before[i])
        loads.append((before[chosen], min(before)))

    sim._enqueue = spy
    sim.run()
    assert loads and all(chosen == least for chosen, least in loads)


def test_artifact_worker_timing(sim_data):
    sim = simulation(sim_data, steady_trace(1, 1), lambda obs: None, 1, timing="artifact")
    lat = sim_data.profile.model(TURBO).batch_latency
    d = ARTIFACT_DISCRIMINATOR_S
    assert sim.batch_seconds(TURBO, 8) == pytest.approx(lat(8) + d)
    assert sim.batch_seconds(TURBO, 3) == pytest.approx((lat(2) + lat(4)) / 2 + d)
    assert sim.batch_seconds(TURBO, 7) == pytest.approx(((lat(4) + lat(8)) / 2 + lat(8)) / 2 + d)
    assert sim.batch_seconds(TURBO, 12) == pytest.approx(lat(4) + d)  # outside the table: timed as 4
    profile_sim = simulation(sim_data, steady_trace(1, 1), lambda obs: None, 1)
    assert profile_sim.batch_seconds(TURBO, 12) == pytest.approx(lat(12))  # the profile's own curve


def test_unknown_dispatch_and_timing_are_refused():
    with pytest.raises(ValueError, match="unknown dispatch 'fifo'"):
        SimSettings(16, 6.0, 0.1, dispatch="fifo")
    with pytest.raises(ValueError, match="unknown timing 'real'"):
        SimSettings(16, 6.0, 0.1, timing="real")


def observation(samples, now=10.0, plan=None):
    return Observation(now, [], 1.0, {}, 0, plan, (), {}, samples)


def steady_samples(in_system, arrivals, queues, n=20):
    return [Sample(t, in_system, arrivals, queues) for t in range(1, n + 1)]


@pytest.fixture
def ctx(sim_data):
    return context_for(sim_data, SimSettings(16, 6.0, 0.1))


def test_clipper_uses_the_largest_batch_within_the_slo_and_heavy_admits_at_1x(ctx):
    heavy = clipper(ctx, heavy=True)(observation([]))
    assert heavy.drop_factor == 1.0 and heavy.gpus == {LARGE: 16}
    fits = [b for b, s in ctx.data.profile.feasible_batches(LARGE) if s <= 6.0]
    assert heavy.batch[LARGE] == max(fits)
    assert clipper(ctx, heavy=False)(observation([])).drop_factor == 1.5


def test_proteus_maximises_fid_weighted_gpus_and_splits_traffic_by_gpu(ctx):
    p = Proteus(ctx)
    first = p(observation([]))  # no demand seen yet: the artifact's round-robin, batch 1
    assert set(first.gpus.values()) == {4} and set(first.batch.values()) == {1}
    low = p(observation(steady_samples(2, {LARGE: 2}, {})))
    assert low.gpus == {LARGE: 16}  # the best model has the largest weight, and it carries 2.1/s
    high = Proteus(ctx)(observation(steady_samples(60, {LARGE: 60}, {})))
    assert sum(high.gpus.values()) == 16 and len(high.gpus) > 1
    assert high.mixture == pytest.approx({m: g / 16 for m, g in high.gpus.items()})


def test_infaas_steps_by_queue_and_jumps_to_the_lightest_past_60_waiting(ctx):
    infaas = InfaasAcc(ctx)
    calm = infaas(observation(steady_samples(5, {LARGE: 5}, {LARGE: 0})))
    assert calm.gpus == {LARGE: 16}  # best quality first; the arrival rate plays no part
    swamped = infaas(observation(steady_samples(200, {LARGE: 5}, {LARGE: 100}, n=40)))
    assert swamped.gpus == {LIGHT: 16}


def test_diffserve_escalates_the_largest_share_its_heavy_stage_carries(ctx, sim_data):
    plan = DiffServe(ctx)(observation(steady_samples(20, {TURBO: 20}, {TURBO: 0, LARGE: 0})))
    assert plan.light == TURBO and plan.heavy == LARGE and plan.router_ratio == 0
    p = sim_data.profile
    demand = 20 * 1.05
    heavy_capacity = plan.gpus[LARGE] * plan.batch[LARGE] / p.model(LARGE).batch_latency(plan.batch[LARGE])
    light_capacity = plan.gpus[TURBO] * plan.batch[TURBO] / p.model(TURBO).batch_latency(plan.batch[TURBO])
    assert light_capacity >= demand and heavy_capacity >= plan.disc_ratio * demand
    assert 0 < plan.disc_ratio < 1


def test_hadis_reference_adds_each_models_queue_delay_to_the_latency(sim_data):
    free = plan_hadis_reference(sim_data.profile, sim_data.hadis_table, 16, 6.0, Demand(20.0))
    delayed = plan_hadis_reference(
        sim_data.profile, sim_data.hadis_table, 16, 6.0, Demand(20.0), queue_delay_s={LIGHT: 2.0, LARGE: 2.0}
    )
    assert free.feasible and delayed.feasible
    assert delayed.predicted_latency_s <= 6.0
    assert delayed.predicted_quality >= free.predicted_quality  # a delay never buys quality
    c = delayed.config
    extra = 2.0 * ((c.light == LIGHT) + (c.heavy == LARGE))
    batch_s = sum(a.latency_s for a in delayed.allocations)
    assert delayed.predicted_latency_s == pytest.approx(batch_s + extra)
