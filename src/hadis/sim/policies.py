"""The serving systems compared in the replay, each a policy: observation -> serving plan.

``hadis`` and ``hadis-ref`` call the product's planner (``hadis.core.planner``); the baselines
follow the rules in the data README and DESIGN.md:

- ``clipper-light`` / ``clipper-heavy``: every GPU on the lightest / heaviest model;
- ``infaas-acc``: one model at a time on every GPU, one step lighter when its expected latency
  exceeds the SLO, one step better when the better model's would be under 0.89x SLO;
- ``proteus``: GPUs over all models (exact enumeration of the ILP) maximising quality-weighted
  capacity with capacity >= 1.25x demand; arrivals split by capacity share, no cascade;
- ``diffserve``: the fixed pair sd3.5-large-turbo -> sd3.5-large, discriminator only, with the
  largest escalated share that the GPUs can carry.

Single-model batch sizes: the largest profiled size whose batch latency fits half the SLO.
All baselines estimate demand like HADIS (EWMA x1.05).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from hadis.core.demand import EwmaEstimator, FastRiseEstimator
from hadis.core.planner import (
    DEFAULT_MAX_UTILISATION,
    DEFAULT_QUANTILE,
    Demand,
    Plan,
    plan_cascade,
    plan_hadis_reference,
)
from hadis.core.profile import Profile
from hadis.core.surge import SurgeSettings, SurgeTrigger
from hadis.sim.data import SimData
from hadis.sim.engine import Observation, Policy, ServingPlan

SYSTEMS = ("clipper-light", "clipper-heavy", "infaas-acc", "proteus", "diffserve", "hadis-ref", "hadis")


def largest_batch_within(profile: Profile, model: str, budget_s: float) -> int:
    fits = [b for b, s in profile.feasible_batches(model) if s <= budget_s]
    return max(fits) if fits else 1


def capacity(profile: Profile, model: str, gpus: int, batch: int) -> float:
    s = profile.model(model).batch_latency(batch)
    return 0.0 if not s else gpus * batch / s


def single_model_plan(profile: Profile, model: str, gpus: int, slo_s: float, label: str) -> ServingPlan:
    return ServingPlan(
        gpus={model: gpus},
        batch={model: largest_batch_within(profile, model, slo_s / 2)},
        mixture={model: 1.0},
        quality=profile.model(model).fid or math.nan,
        label=label,
    )


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


def clipper(ctx: Context, heavy: bool) -> Policy:
    names = ctx.data.profile.names
    model = names[-1] if heavy else names[0]
    plan = single_model_plan(ctx.data.profile, model, ctx.gpus, ctx.slo_s, f"clipper {model}")
    return lambda _obs: plan


@dataclass
class InfaasAcc:
    ctx: Context
    level: int = 0  # index into models ordered best quality first
    estimator: EwmaEstimator = field(default_factory=EwmaEstimator)

    def __post_init__(self) -> None:
        p = self.ctx.data.profile
        self.order = sorted(p.names, key=lambda m: p.model(m).fid if p.model(m).fid is not None else math.inf)

    def expected_latency(self, model: str, rate: float, waiting: int) -> float:
        p = self.ctx.data.profile
        b = largest_batch_within(p, model, self.ctx.slo_s / 2)
        cap = capacity(p, model, self.ctx.gpus, b)
        if rate >= cap:
            return math.inf
        return (p.model(model).batch_latency(b) or math.inf) + waiting / cap

    def __call__(self, obs: Observation) -> ServingPlan:
        rate = self.estimator.update(obs.arrival_bins, obs.bin_s)
        cur = self.order[self.level]
        if self.expected_latency(cur, rate, obs.waiting) > self.ctx.slo_s and self.level < len(self.order) - 1:
            self.level += 1
        elif self.level > 0:
            better = self.order[self.level - 1]
            if self.expected_latency(better, rate, obs.waiting) < 0.89 * self.ctx.slo_s:
                self.level -= 1
        m = self.order[self.level]
        return single_model_plan(self.ctx.data.profile, m, self.ctx.gpus, self.ctx.slo_s, f"infaas {m}")


@dataclass
class Proteus:
    ctx: Context
    estimator: EwmaEstimator = field(default_factory=EwmaEstimator)
    headroom: float = 1.25

    def __call__(self, obs: Observation) -> ServingPlan:
        p = self.ctx.data.profile
        rate = self.estimator.update(obs.arrival_bins, obs.bin_s)
        names = list(p.names)
        batch = {m: largest_batch_within(p, m, self.ctx.slo_s / 2) for m in names}
        per_gpu = {m: capacity(p, m, 1, batch[m]) for m in names}
        fid = {m: p.model(m).fid or math.inf for m in names}
        by_quality = sorted(names, key=lambda m: fid[m])
        need = max(self.headroom * rate, 1e-9)
        best_key, best = None, None
        for split in _compositions(self.ctx.gpus, len(names)):
            alloc = dict(zip(names, split, strict=True))
            total = sum(per_gpu[m] * alloc[m] for m in names)
            if total < need:
                key = (1, -total, 0.0)  # infeasible: prefer the most capacity
                shares = {m: per_gpu[m] * alloc[m] / total if total else 0.0 for m in names}
            else:
                shares, left = {}, 1.0
                for m in by_quality:
                    shares[m] = min(left, per_gpu[m] * alloc[m] / need)
                    left -= shares[m]
                key = (0, sum(shares[m] * fid[m] for m in names), -total)
            if best_key is None or key < best_key:
                best_key, best = key, (alloc, shares)
        assert best is not None
        alloc, shares = best
        mix = {m: s for m, s in shares.items() if s > 0 and alloc[m] > 0}
        if not mix:
            top = max(alloc, key=lambda m: alloc[m])
            mix = {top: 1.0}
        total = sum(mix.values())
        mix = {m: s / total for m, s in mix.items()}
        quality = sum(s * fid[m] for m, s in mix.items())
        return ServingPlan(gpus=alloc, batch=batch, mixture=mix, quality=quality, label=f"proteus {alloc}")


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
    ctx: Context
    light: str = "sd3.5-large-turbo"
    heavy: str = "sd3.5-large"
    estimator: EwmaEstimator = field(default_factory=EwmaEstimator)

    def __call__(self, obs: Observation) -> ServingPlan:
        p = self.ctx.data.profile
        rate = max(self.estimator.update(obs.arrival_bins, obs.bin_s), 1e-9)
        best_key, best = None, None
        for b_l, s_l in p.feasible_batches(self.light):
            for b_h, s_h in p.feasible_batches(self.heavy):
                if s_l + s_h > self.ctx.slo_s:
                    continue
                for g_l in range(1, self.ctx.gpus + 1):
                    g_h = self.ctx.gpus - g_l
                    if g_l * b_l / s_l < rate:
                        continue
                    d = min(1.0, g_h * b_h / s_h / rate)
                    key = (-d, s_l + s_h)
                    if best_key is None or key < best_key:
                        best_key, best = key, (g_l, b_l, g_h, b_h, d)
        if best is None:  # the light model alone cannot keep up: no escalation at all
            b_l = max(p.feasible_batches(self.light), key=lambda bs: bs[0] / bs[1])[0]
            best = (self.ctx.gpus, b_l, 0, 1, 0.0)
        g_l, b_l, g_h, b_h, d = best
        quality = self.ctx.data.grid.quality(self.light, self.heavy, 0.0, d)
        return ServingPlan(
            gpus={self.light: g_l, self.heavy: g_h},
            batch={self.light: b_l, self.heavy: b_h},
            light=self.light,
            heavy=self.heavy,
            disc_ratio=d,
            quality=quality,
            label=f"diffserve d={d:.2f} {g_l}+{g_h}",
        )


@dataclass
class HadisReference:
    """The paper's controller: EWMA demand x1.05, Little's-law queue delay, its MILP."""

    ctx: Context
    estimator: EwmaEstimator = field(default_factory=EwmaEstimator)
    queue_ewma: float = 0.0
    rate_ewma: float = 0.0
    alpha: float = 0.5

    def __call__(self, obs: Observation) -> ServingPlan:
        rate = self.estimator.update(obs.arrival_bins, obs.bin_s)
        observed = sum(obs.arrival_bins) / (len(obs.arrival_bins) * obs.bin_s) if obs.arrival_bins else 0.0
        self.queue_ewma = self.alpha * obs.waiting + (1 - self.alpha) * self.queue_ewma
        self.rate_ewma = self.alpha * observed + (1 - self.alpha) * self.rate_ewma
        delay = self.queue_ewma / self.rate_ewma if self.rate_ewma > 0 else 0.0
        d = self.ctx.data
        plan = plan_hadis_reference(
            d.profile, d.hadis_table, self.ctx.gpus, self.ctx.slo_s, Demand(rate), queue_delay_s=delay
        )
        return from_core_plan(plan)


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
    fed: int = 0
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
