"""The serving systems compared in the replay, each a policy: observation -> serving plan.

The baselines and ``hadis-ref`` are the HADIS artifact's controllers (``qizhengyang98/HADIS``,
``hadis/src/controller/``), planning from what that controller sees (``ControllerSignals``:
the requests in the system, EWMA half-life 3 over 20 one-second samples, x1.05; per model the
smoothed arrivals and queue) and dispatched as the artifact does (one FIFO per GPU, a GPU of
the right model drawn at random). The fidelity table in docs/simulator.md lists each choice and its file.

- ``clipper-light`` / ``clipper-heavy``: every GPU on the lightest / heaviest model, the
  largest batch within the SLO; clipper-heavy starts only what it can finish within 1.0x SLO;
- ``infaas-acc`` (``infaas.py``): one model at a time, blind to the arrival rate: expected
  latency = batch latency + 0.225 x queue / throughput; a step lighter above the SLO, a step
  better below 0.89x SLO, straight to the lightest when the queue passes 60;
- ``proteus`` (``solve_proteus_milp``): GPUs over all models maximising GPUs weighted by
  normalised FID, throughput >= 1.25x demand, batch latency x (1 + queue delay) <= SLO;
  traffic split equally across GPUs whatever they run;
- ``diffserve`` (``diffserve_cascade_ILP.py``): the fixed pair sd3.5-large-turbo ->
  sd3.5-large, the largest escalated share whose stages carry the demand within the SLO;
- ``hadis-ref`` (``solve_milp_loop``): the paper's MILP over the 49-row table, per-model
  queueing delay 1.2 x queue / arrival rate added to both stages.

``hadis`` is ours, dispatched as our router does: late binding (``model-queue``), an image is
held at the router until a pod of its model has a free slot, then taken in that pod's batch.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from hadis.core.demand import ControllerSignals, FastRiseEstimator
from hadis.core.planner import (
    DEFAULT_MAX_UTILISATION,
    DEFAULT_QUANTILE,
    Demand,
    Plan,
    plan_cascade,
    plan_hadis_reference,
    spread_leftover,
)
from hadis.core.profile import Profile
from hadis.core.surge import SurgeSettings, SurgeTrigger, climbing
from hadis.sim.data import SimData
from hadis.sim.engine import DEFAULT_DROP_FACTOR, Observation, Policy, ServingPlan

SYSTEMS = ("clipper-light", "clipper-heavy", "infaas-acc", "proteus", "diffserve", "hadis-ref", "hadis")
# How each system's requests reach a GPU (``hadis.sim.engine``): the artifact's load balancer
# for the artifact's systems, our router for ours.
DISPATCH = {s: "random-worker" for s in SYSTEMS} | {"hadis": "model-queue"}

CLIPPER_HEAVY_ADMISSION = 1.0  # controller.py SLO_ADMISSION_FACTOR
INFAAS_QUALITY_BIAS = 0.5
INFAAS_QUEUE_WEIGHT = 0.40 - 0.35 * INFAAS_QUALITY_BIAS
INFAAS_STEP_DOWN = 0.85 + 0.30 * INFAAS_QUALITY_BIAS
INFAAS_STEP_UP = 0.80 + 0.18 * INFAAS_QUALITY_BIAS
INFAAS_CRITICAL_QUEUE = int(20 + 80 * INFAAS_QUALITY_BIAS)
PROTEUS_DEMAND_WEIGHT = 1.25
DIFFSERVE_THRESHOLDS = tuple(round(0.005 * i, 4) for i in range(201))


def largest_batch_within(profile: Profile, model: str, budget_s: float) -> int | None:
    """The largest batch size whose batch latency fits ``budget_s``, or None."""
    fits = [b for b, s in profile.feasible_batches(model) if s <= budget_s]
    return max(fits) if fits else None


def capacity(profile: Profile, model: str, gpus: int, batch: int) -> float:
    s = profile.model(model).batch_latency(batch)
    return 0.0 if not s else gpus * batch / s


def single_model_plan(
    profile: Profile, model: str, gpus: int, batch: int, label: str, drop_factor: float = DEFAULT_DROP_FACTOR
) -> ServingPlan:
    return ServingPlan(
        gpus={model: gpus},
        batch={model: batch},
        mixture={model: 1.0},
        quality=profile.model(model).fid or math.nan,
        label=label,
        drop_factor=drop_factor,
    )


def split_plan(profile: Profile, gpus: Mapping[str, int], batch: Mapping[str, int], label: str) -> ServingPlan:
    """GPUs over several models with no cascade, traffic split equally across GPUs."""
    used = {m: g for m, g in gpus.items() if g > 0}
    total = sum(used.values())
    mix = {m: g / total for m, g in used.items()}
    quality = sum(share * (profile.model(m).fid or math.nan) for m, share in mix.items())
    return ServingPlan(gpus=used, batch={m: batch[m] for m in used}, mixture=mix, quality=quality, label=label)


def round_robin(profile: Profile, gpus: int, label: str) -> ServingPlan:
    """The artifact's fallback for Proteus and INFaaS: GPUs dealt over the models, batch 1."""
    names = profile.names
    alloc = {m: 0 for m in names}
    for i in range(gpus):
        alloc[names[i % len(names)]] += 1
    return split_plan(profile, alloc, {m: 1 for m in names}, f"{label} round-robin")


def from_core_plan(plan: Plan) -> ServingPlan:
    c = plan.config
    return ServingPlan(
        gpus={a.model: a.gpus for a in plan.allocations},
        batch={a.model: a.batch for a in plan.allocations},
        light=c.light,
        heavy=c.heavy,
        router_ratio=c.router_ratio,
        disc_ratio=c.disc_ratio,
        quality=plan.predicted_quality,
        label=plan.summary(),
        feasible=plan.feasible,
    )


@dataclass
class Context:
    data: SimData
    gpus: int
    slo_s: float
    swap_s: Mapping[str, float] = field(default_factory=dict)  # model load time per model
    surge: SurgeSettings = field(default_factory=SurgeSettings)


@dataclass
class SignalFeed:
    """Feeds each one-second sample a policy has not seen into the controller's signals."""

    signals: ControllerSignals = field(default_factory=ControllerSignals)
    fed: int = 0

    def update(self, obs: Observation) -> ControllerSignals:
        for s in obs.samples[self.fed :]:
            self.signals.update(s.in_system, s.arrivals, s.queues)
        self.fed = len(obs.samples)
        return self.signals


def clipper(ctx: Context, heavy: bool) -> Policy:
    p = ctx.data.profile
    model = p.names[-1] if heavy else p.names[0]
    batch = largest_batch_within(p, model, ctx.slo_s) or 1
    drop = CLIPPER_HEAVY_ADMISSION if heavy else DEFAULT_DROP_FACTOR
    plan = single_model_plan(p, model, ctx.gpus, batch, f"clipper {model}", drop)
    return lambda _obs: plan


@dataclass
class InfaasAcc:
    """INFaaS-Accuracy as the artifact runs it (``infaas.py``): queue-reactive, rate-blind."""

    ctx: Context
    level: int = 0  # index into models ordered best quality first
    feed: SignalFeed = field(default_factory=SignalFeed)

    def __post_init__(self) -> None:
        p = self.ctx.data.profile
        self.order = sorted(p.names, key=lambda m: p.model(m).fid if p.model(m).fid is not None else math.inf)

    def expected_latency(self, model: str, batch: int, queue: float) -> float:
        s = self.ctx.data.profile.model(model).batch_latency(batch) or math.inf
        return s + INFAAS_QUEUE_WEIGHT * queue / (self.ctx.gpus * batch / s)

    def __call__(self, obs: Observation) -> ServingPlan:
        sig = self.feed.update(obs)
        p, slo, worst = self.ctx.data.profile, self.ctx.slo_s, len(self.order) - 1
        if sig.demand == 0:
            return round_robin(p, self.ctx.gpus, "infaas")
        queue = sum(sig.queue(m) for m in p.names)
        bs = largest_batch_within(p, self.order[self.level], slo)
        if bs is None:  # the model cannot meet the SLO even alone: a step lighter at once
            self.level = min(self.level + 1, worst)
            bs = largest_batch_within(p, self.order[self.level], slo)
            if bs is None:
                return round_robin(p, self.ctx.gpus, "infaas")
        expected = self.expected_latency(self.order[self.level], bs, queue)
        if queue > INFAAS_CRITICAL_QUEUE:
            self.level = worst
        elif expected > slo * INFAAS_STEP_DOWN:
            self.level = min(self.level + 1, worst)
        elif expected < slo * INFAAS_STEP_UP:
            self.level = max(self.level - 1, 0)
        model = self.order[self.level]
        bs = largest_batch_within(p, model, slo)
        if bs is None:
            return round_robin(p, self.ctx.gpus, "infaas")
        return single_model_plan(p, model, self.ctx.gpus, bs, f"infaas {model}")


@dataclass
class Proteus:
    """Proteus as the artifact runs it (``solve_proteus_milp``), solved by enumeration."""

    ctx: Context
    feed: SignalFeed = field(default_factory=SignalFeed)
    current: ServingPlan | None = None

    def __call__(self, obs: Observation) -> ServingPlan:
        sig = self.feed.update(obs)
        p, slo = self.ctx.data.profile, self.ctx.slo_s
        if sig.demand == 0:
            self.current = round_robin(p, self.ctx.gpus, "proteus")
            return self.current
        names = list(p.names)
        fid = {m: p.model(m).fid or math.inf for m in names}
        lo, hi = min(fid.values()), max(fid.values())
        weight = {m: (hi - fid[m]) / (hi - lo + 1e-9) if hi > lo else 1.0 for m in names}
        batch: dict[str, int] = {}
        per_gpu: dict[str, float] = {}
        for m in names:
            stretch = 1 + sig.queue_delay(m, guard=False)
            fits = [(b / s, b) for b, s in p.feasible_batches(m) if s * stretch <= slo]
            if fits:
                per_gpu[m], batch[m] = max(fits)
        need = PROTEUS_DEMAND_WEIGHT * sig.demand
        best_key, best = None, None
        for split in _compositions(self.ctx.gpus, len(names)):
            alloc = dict(zip(names, split, strict=True))
            if any(g and m not in per_gpu for m, g in alloc.items()):
                continue
            throughput = sum(per_gpu.get(m, 0.0) * g for m, g in alloc.items())
            if throughput < need:
                continue
            key = (-sum(weight[m] * g for m, g in alloc.items()), -throughput)
            if best_key is None or key < best_key:
                best_key, best = key, alloc
        if best is None:
            # The artifact's solver has no answer here (reading it raises, which ends the
            # controller's re-planning thread); we keep the current plan and try again next time.
            assert self.current is not None
            return dataclasses.replace(self.current, feasible=False)
        self.current = split_plan(p, best, batch, f"proteus {best}")
        return self.current


def _compositions(total: int, parts: int):
    """All ways to put ``total`` identical GPUs into ``parts`` ordered bins."""
    for cuts in itertools.combinations(range(total + parts - 1), parts - 1):
        prev, out = -1, []
        for c in cuts:
            out.append(c - prev - 1)
            prev = c
        out.append(total + parts - 2 - prev)
        yield tuple(out)


@dataclass
class DiffServe:
    """DiffServe as the artifact runs it (``diffserve_cascade_ILP.py``), solved by enumeration.

    Maximise the escalated share t (on a 0.005 grid) such that the light stage carries the
    demand, the heavy stage t x demand, and both batch latencies plus both queueing delays fit
    the SLO. The GPUs left after the fewest that carry it go to the busier stage."""

    ctx: Context
    light: str = "sd3.5-large-turbo"
    heavy: str = "sd3.5-large"
    feed: SignalFeed = field(default_factory=SignalFeed)

    def _plan(self, g_l: int, b_l: int, g_h: int, b_h: int, t: float, label: str) -> ServingPlan:
        quality = self.ctx.data.grid.quality(self.light, self.heavy, 0.0, t)
        return ServingPlan(
            gpus={self.light: g_l, self.heavy: g_h},
            batch={self.light: b_l, self.heavy: b_h},
            light=self.light,
            heavy=self.heavy,
            disc_ratio=t,
            quality=quality,
            label=f"diffserve {label} t={t:.3f} {g_l}+{g_h}",
        )

    def __call__(self, obs: Observation) -> ServingPlan:
        sig = self.feed.update(obs)
        p, slo, gpus = self.ctx.data.profile, self.ctx.slo_s, self.ctx.gpus
        demand = sig.demand
        if demand == 0:  # initialize(): half the workers (the sink among them) light, escalate all
            g_l = math.ceil((gpus + 1) / 2)
            return self._plan(g_l, 8, max(gpus - g_l, 0), 8, 1.0, "initial")
        delay = sig.queue_delay(self.light, guard=False) + sig.queue_delay(self.heavy, guard=False)
        best_key, best = None, None
        for b_l, s_l in p.feasible_batches(self.light):
            g_l = max(1, math.ceil(demand * s_l / b_l - 1e-9))
            for b_h, s_h in p.feasible_batches(self.heavy):
                if s_l + s_h + delay > slo or g_l > gpus:
                    continue
                carry = (gpus - g_l) * b_h / s_h / demand
                t = max(x for x in DIFFSERVE_THRESHOLDS if x <= carry + 1e-12) if carry >= 0 else 0.0
                key = (-t, s_l + s_h)
                if best_key is None or key < best_key:
                    best_key, best = key, (g_l, b_l, s_l, b_h, s_h, t)
        if best is None:  # infeasible: everything on the light stage, no escalation
            return self._plan(gpus, 16, 0, 1, 0.0, "infeasible")
        g_l, b_l, s_l, b_h, s_h, t = best
        g_h = math.ceil(t * demand * s_h / b_h - 1e-9)
        g = spread_leftover([g_l, g_h], [demand * s_l / b_l, t * demand * s_h / b_h], gpus)
        return self._plan(g[0], b_l, g[1], b_h, t, "")


@dataclass
class HadisReference:
    """The paper's controller as the artifact runs it: in-system demand, per-model delay, MILP."""

    ctx: Context
    feed: SignalFeed = field(default_factory=SignalFeed)

    def _shed(self) -> ServingPlan:
        """The controller's fallback: every GPU on the table's lightest model, batch 1, no cascade."""
        d = self.ctx.data
        light = min(d.hadis_table.models, key=d.profile.index)
        heavy = next((c.heavy for c in d.hadis_table.rows if c.light == light), d.hadis_table.rows[0].heavy)
        return ServingPlan(
            gpus={light: self.ctx.gpus, heavy: 0},
            batch={light: 1, heavy: 1},
            light=light,
            heavy=heavy,
            quality=d.profile.model(light).fid or math.nan,
            label=f"hadis-ref fallback: all on {light}",
            feasible=False,
        )

    def __call__(self, obs: Observation) -> ServingPlan:
        sig = self.feed.update(obs)
        if sig.demand == 0:
            return self._shed()
        d = self.ctx.data
        delays = {m: sig.queue_delay(m) for m in d.profile.names}
        plan = plan_hadis_reference(
            d.profile, d.hadis_table, self.ctx.gpus, self.ctx.slo_s, Demand(sig.demand), queue_delay_s=delays
        )
        return from_core_plan(plan) if plan.feasible else self._shed()


@dataclass
class Hadis:
    """Ours: the per-path queueing planner, re-planned early on a surge, swap-aware, with the
    router's overload rules (degrade, shed).

    Demand is the fast-rise estimate fed one second at a time; ``hadis.core.surge`` decides
    every second whether to re-plan before the timer and for which rate; the planner sees the
    queues and the current GPUs (so it counts the model-load time of every GPU it moves)."""

    ctx: Context
    estimator: FastRiseEstimator = field(default_factory=FastRiseEstimator)
    quantile: float = DEFAULT_QUANTILE
    max_utilisation: float = DEFAULT_MAX_UTILISATION
    early: bool = True
    degrade: bool = True
    shed: bool = False
    swap_aware: bool = True
    fill_budget: bool = True  # spare GPUs are surge headroom; False: the fewest GPUs (GPU-seconds saved)
    fed: int = 0
    planned_rate: float | None = None  # the last plan's rate: above it, the demand is rising
    rose_at: float | None = None  # when it last rose (``hadis.core.surge.climbing``)
    # how long it counts as rising after that: none, since the estimate reads a fresh one-second
    # bin at every pass and never stands still between two as a scraped rate does (5 s, the
    # estimator's recent bins, cost violations and FID on the short spikes of bench_surge.py)
    rise_settle_s: float = 0.0
    trigger: SurgeTrigger = field(init=False)

    def __post_init__(self) -> None:
        self.trigger = SurgeTrigger(self.ctx.surge)

    def _estimate(self, obs: Observation) -> float:
        """Feed the estimator every complete one-second bin it has not seen."""
        done = min(int(obs.now), len(obs.history))
        if done > self.fed:
            self.estimator.update(obs.history[self.fed : done], 1.0)
            self.fed = done
        return self.estimator.estimate

    def _backlog(self, obs: Observation) -> float:
        """The longest drain time of a model's queue at its current capacity, over the SLO."""
        cur, p = obs.current, self.ctx.data.profile
        if cur is None:
            return 0.0
        worst = 0.0
        for m, n in obs.queues.items():
            if n:
                cap = capacity(p, m, cur.gpus.get(m, 0), int(cur.batch.get(m, 1)))
                worst = max(worst, math.inf if cap <= 0 else n / cap / self.ctx.slo_s)
        return worst

    def _plan(self, obs: Observation, rate: float) -> ServingPlan:
        d = self.ctx.data
        rising, self.rose_at = climbing(rate, self.planned_rate, self.rose_at, obs.now, self.rise_settle_s)
        self.planned_rate = rate
        plan = plan_cascade(
            d.profile,
            d.table,
            self.ctx.gpus,
            self.ctx.slo_s,
            Demand(rate, dict(obs.queues)),
            quantile=self.quantile,
            max_utilisation=self.max_utilisation,
            current=obs.gpus if self.swap_aware and obs.current is not None else None,
            swap_s=self.ctx.swap_s,
            fill_budget=self.fill_budget,
            rising=rising,
        )
        return dataclasses.replace(from_core_plan(plan), degrade=self.degrade, shed=self.degrade and self.shed)

    def __call__(self, obs: Observation) -> ServingPlan:
        rate = self._estimate(obs)
        if not self.early:
            return self._plan(obs, rate)
        decision = self.trigger.check(obs.now, rate, self._backlog(obs), timer_due=True)
        assert decision is not None  # the timer always re-plans
        return self._plan(obs, decision.rate)

    def check(self, obs: Observation) -> ServingPlan | None:
        """Called every second between timer re-plans: a plan now, or None to keep the current."""
        if not self.early:
            return None
        decision = self.trigger.check(obs.now, self._estimate(obs), self._backlog(obs))
        return None if decision is None else self._plan(obs, decision.rate)


def make_policy(name: str, ctx: Context) -> Policy:
    factories: dict[str, Callable[[], Policy]] = {
        "clipper-light": lambda: clipper(ctx, heavy=False),
        "clipper-heavy": lambda: clipper(ctx, heavy=True),
        "infaas-acc": lambda: InfaasAcc(ctx),
        "proteus": lambda: Proteus(ctx),
        "diffserve": lambda: DiffServe(ctx),
        "hadis-ref": lambda: HadisReference(ctx),
        "hadis": lambda: Hadis(ctx),
    }
    if name not in factories:
        raise ValueError(f"unknown system '{name}' (known: {', '.join(SYSTEMS)})")
    return factories[name]()
