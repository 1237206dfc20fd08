"""The joint planner: configuration row, GPUs per model and batch sizes, under an SLO.

Two policies share the data types:

``plan_cascade`` (the product's default, policy ``hadis``) is exact enumeration over its model:
for every table row and every split of the GPU budget it predicts the latency of each path a
query can take (straight to heavy, light accepted, light then heavy) from a queueing model of
batched servers (``hadis.core.queueing``), with each model provisioned for the traffic that
actually reaches it: the light model sees ``(1 - r)`` of the demand, the heavy model
``r + (1 - r) d``. It picks the best-quality row whose worst active path meets the SLO, and the
split with the most headroom.

``plan_hadis_reference`` (policy ``hadis-ref``) is the HADIS paper's formulation, kept for
comparison: the light model is provisioned for all traffic, every query is charged both
stages' batch latency, and queueing delay is a constant factor (1.2) times the Little's-law
delay observed.

Both return an infeasible plan with the reason and a safe fallback when nothing meets the SLO.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from hadis.core.pareto import Config, ParetoTable
from hadis.core.profile import Profile
from hadis.core.queueing import pool_latency

# The Erlang-C tail overstates the wait of deterministic batched service; 0.7 was chosen by a
# sweep on the MAF traces (README, "Planner calibration") and keeps violations near zero there.
DEFAULT_QUANTILE = 0.7
DEFAULT_MAX_UTILISATION = 0.97
# What moving one GPU to another model costs when the planner knows the current allocation: a
# row must be this much better in FID per GPU moved, a split this much better in worst-path
# latency (as a share of the SLO) per GPU moved. Chosen by the surge sweep (README, "Surges").
DEFAULT_MOVE_PENALTY_FID = 0.05
DEFAULT_MOVE_PENALTY_SLO = 0.02
HADIS_QUEUE_FACTOR = 1.2


# Model load time when a GPU switches model: weights / this rate (or the default without weights).
LOAD_GIB_PER_S = 2.0
DEFAULT_LOAD_S = 10.0


def swap_seconds(profile: Profile) -> dict[str, float]:
    """Seconds each model takes to load onto a GPU: the profile's measured ``load_seconds`` (from
    the weight cache, ``hadis profile latency --weights-cache``), else its weights at
    ``LOAD_GIB_PER_S``; on the profile's time scale (a profile scaled x0.1 loads 10x faster too)."""
    scale = float(profile.provenance.get("time_scale", 1.0))
    out = {}
    for m in profile.names:
        model = profile.model(m)
        if model.load_seconds is not None:
            out[m] = model.load_seconds * scale
        else:
            gib = model.weights_gib
            out[m] = (gib / LOAD_GIB_PER_S if gib else DEFAULT_LOAD_S) * scale
    return out


@dataclass(frozen=True)
class Demand:
    """What the planner plans for: arrival rate at the router and requests queued per model."""

    rate: float
    queues: Mapping[str, int] = field(default_factory=dict)

    def queued(self, model: str) -> int:
        return int(self.queues.get(model, 0))


@dataclass(frozen=True)
class Allocation:
    model: str
    gpus: int
    batch: int
    arrival_rate: float
    latency_s: float

    @property
    def capacity_note(self) -> str:
        return f"{self.model}: {self.gpus} GPU x batch {self.batch}"


@dataclass(frozen=True)
class Plan:
    """A configuration row with its GPUs and batch sizes, and what the planner predicts."""

    policy: str
    config: Config
    allocations: tuple[Allocation, ...]
    predicted_latency_s: float
    predicted_quality: float
    slo_s: float
    demand: Demand
    feasible: bool = True
    reason: str = ""

    @property
    def headroom_s(self) -> float:
        return self.slo_s - self.predicted_latency_s

    def gpus(self, model: str) -> int:
        return sum(a.gpus for a in self.allocations if a.model == model)

    def batch(self, model: str) -> int:
        for a in self.allocations:
            if a.model == model:
                return a.batch
        return 1

    def summary(self) -> str:
        c = self.config
        parts = ", ".join(a.capacity_note for a in self.allocations if a.gpus)
        state = "ok" if self.feasible else f"INFEASIBLE ({self.reason})"
        return (
            f"[{self.policy}] {c.light}->{c.heavy} r={c.router_ratio:.2f} d={c.disc_ratio:.2f} "
            f"quality={self.predicted_quality:.2f} latency={self.predicted_latency_s:.2f}s/{self.slo_s:.2f}s "
            f"demand={self.demand.rate:.2f}/s [{parts}] {state}"
        )


def _active_paths(c: Config) -> tuple[bool, bool, bool]:
    """(light only, light then heavy, straight to heavy) -- which paths carry traffic."""
    r, d = c.router_ratio, c.disc_ratio
    return (r < 1.0 and d < 1.0, r < 1.0 and d > 0.0, r > 0.0)


def _check_inputs(profile: Profile, table: ParetoTable, gpus: int, slo_s: float, demand: Demand) -> None:
    if gpus < 1:
        raise ValueError(f"GPU budget must be >= 1, got {gpus}")
    if not slo_s > 0:
        raise ValueError(f"SLO must be > 0, got {slo_s}")
    if demand.rate < 0 or not math.isfinite(demand.rate):
        raise ValueError(f"demand rate must be a finite number >= 0, got {demand.rate}")
    missing = [m for m in table.models if m not in profile.names]
    if missing:
        raise ValueError(f"table models not in the profile: {', '.join(missing)}")


def _better(a: tuple, b: tuple | None) -> bool:
    return b is None or a < b


def plan_cascade(
    profile: Profile,
    table: ParetoTable,
    gpus: int,
    slo_s: float,
    demand: Demand,
    *,
    quantile: float = DEFAULT_QUANTILE,
    max_utilisation: float = DEFAULT_MAX_UTILISATION,
    rows: Sequence[Config] | None = None,
    current: Mapping[str, int] | None = None,
    swap_s: Mapping[str, float] | None = None,
    move_penalty_fid: float = DEFAULT_MOVE_PENALTY_FID,
    move_penalty_slo: float = DEFAULT_MOVE_PENALTY_SLO,
) -> Plan:
    """The product's planner (policy ``hadis``): exact enumeration of rows x GPU splits.

    With ``current`` (GPUs per model now) the plan counts what moving GPUs costs. A GPU that
    changes model serves nothing for ``swap_s[model]`` seconds, so while it loads a request
    meets the GPUs that stayed, or waits for the load: each path's latency is the worse of the
    steady state and that transition. A row is feasible when its steady state meets the SLO
    (a transition is brief, and the router degrades what it cannot serve in time); among its
    feasible splits the planner takes the lowest latency counting the transition, and a row
    that moves more GPUs must be better by ``move_penalty_fid`` per GPU moved, so a small gain
    does not move GPUs back and forth. The plan's predicted latency counts the transition."""
    _check_inputs(profile, table, gpus, slo_s, demand)
    swap_s = swap_s or {}
    rows = list(table.rows if rows is None else rows)
    lam = demand.rate

    # Distinct (model, arrival rate, backlog) triples, evaluated in one vectorised pass per model.
    wanted: dict[str, dict[tuple[float, int], int]] = {}
    for c in rows:
        for model, rate in ((c.light, (1 - c.router_ratio) * lam), (c.heavy, c.heavy_ratio * lam)):
            keys = wanted.setdefault(model, {})
            keys.setdefault((rate, demand.queued(model)), len(keys))
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for model, keys in wanted.items():
        batches = profile.feasible_batches(model)
        if not batches:
            raise ValueError(f"model '{model}' has no feasible batch size in the profile")
        rates = np.array([k[0] for k in keys])
        backlogs = np.array([k[1] for k in keys])
        bs, ss = zip(*batches, strict=True)
        curves[model] = pool_latency(rates, backlogs, np.array(bs), np.array(ss), gpus, quantile, max_utilisation)

    # Every row x every split at once: row i's latency curves over the GPUs given to each model.
    n_rows, split = len(rows), np.arange(gpus + 1)
    curve_l, curve_h = np.empty((n_rows, gpus + 1)), np.empty((n_rows, gpus + 1))
    for i, c in enumerate(rows):
        curve_l[i] = curves[c.light][0][wanted[c.light][((1 - c.router_ratio) * lam, demand.queued(c.light))]]
        curve_h[i] = curves[c.heavy][0][wanted[c.heavy][(c.heavy_ratio * lam, demand.queued(c.heavy))]]
    paths = _active_path_masks(rows)
    new_l, new_h = np.broadcast_to(split, (n_rows, gpus + 1)), np.broadcast_to(gpus - split, (n_rows, gpus + 1))
    wl, wh = curve_l, curve_h[:, ::-1]
    steady = _worst_path(paths, wl, wh)
    worst, moved = steady, np.zeros((n_rows, gpus + 1), dtype=int)
    if current is not None:
        now_l = np.array([current.get(c.light, 0) for c in rows])[:, None]
        now_h = np.array([current.get(c.heavy, 0) for c in rows])[:, None]
        swap_l = np.array([swap_s.get(c.light, 0.0) for c in rows])[:, None]
        swap_h = np.array([swap_s.get(c.heavy, 0.0) for c in rows])[:, None]
        tl, moved_l = _with_transition(curve_l, new_l, now_l, swap_l)
        th, moved_h = _with_transition(curve_h, new_h, now_h, swap_h)
        worst, moved = _worst_path(paths, tl, th), moved_l + moved_h
    # Feasible: the steady state meets the SLO. Among a row's feasible splits, the one with the
    # lowest latency counting the swap, plus a penalty per GPU moved (with none feasible, the
    # lowest of that cost: the row's fallback).
    cost = worst + move_penalty_slo * slo_s * moved
    feasible = steady <= slo_s
    g_light = np.where(
        feasible.any(axis=1), np.argmin(np.where(feasible, cost, np.inf), axis=1), np.argmin(cost, axis=1)
    )
    at = np.arange(n_rows)
    latency = worst[at, g_light]
    ok = feasible[at, g_light]
    quality = np.array([c.quality for c in rows])
    heavy_ratio = np.array([c.heavy_ratio for c in rows])
    # Best: lowest (quality + move penalty, latency, heavy share), the first row on a tie.
    best: tuple[Config, int, float] | None = None
    if ok.any():
        cand = np.flatnonzero(ok)
        rank = quality[cand] + move_penalty_fid * moved[cand, g_light[cand]]
        i = int(cand[np.lexsort((cand, heavy_ratio[cand], latency[cand], rank))[0]])
        best = (rows[i], int(g_light[i]), float(latency[i]))
    i = int(np.lexsort((at, quality, latency))[0])  # fallback: lowest latency, then quality
    fallback = (rows[i], int(g_light[i]), float(latency[i]))

    def build(choice: tuple[Config, int, float], feasible: bool, reason: str) -> Plan:
        c, g_light, latency = choice
        allocs = []
        for model, rate, g in (
            (c.light, (1 - c.router_ratio) * lam, g_light),
            (c.heavy, c.heavy_ratio * lam, gpus - g_light),
        ):
            lat, batch = curves[model]
            i = wanted[model][(rate, demand.queued(model))]
            allocs.append(Allocation(model, g, int(batch[i][g]), rate, float(lat[i][g])))
        return Plan("hadis", c, tuple(allocs), latency, c.quality, slo_s, demand, feasible, reason)

    if best is not None:
        return build(best, True, "")
    assert fallback is not None
    if math.isfinite(fallback[2]):
        reason = (
            f"no configuration meets the {slo_s:g}s SLO at {lam:.2f} req/s on {gpus} GPUs; "
            f"fallback has the lowest predicted latency ({fallback[2]:.2f}s)"
        )
        return build(fallback, False, reason)
    reason = f"demand {lam:.2f} req/s exceeds the capacity of {gpus} GPUs in every configuration"
    return lightest_fallback(profile, table, gpus, slo_s, demand, "hadis", reason)


def _with_transition(
    curve: np.ndarray, new: np.ndarray, now: np.ndarray, swap_s: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Latency per row and split counting the swap, and the GPUs each split moves onto the model.

    ``curve[i, g]`` is row i's latency on g GPUs, ``new`` the GPUs each split gives the model,
    ``now`` those it has (per row). While ``new - now`` GPUs load the model, a request is served
    by the ``now`` that stayed or waits for the load (``swap_s`` + the new latency), whichever is
    sooner."""
    steady = np.take_along_axis(curve, new, axis=1)
    kept = np.take_along_axis(curve, np.minimum(new, now), axis=1)
    during = np.minimum(kept, swap_s + steady)
    return np.where(new > now, np.maximum(steady, during), steady), np.maximum(new - now, 0)


def _active_path_masks(rows: Sequence[Config]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: (light only, light then heavy, straight to heavy) carry traffic."""
    flags = np.array([_active_paths(c) for c in rows], dtype=bool).reshape(len(rows), 3)
    return flags[:, 0:1], flags[:, 1:2], flags[:, 2:3]


def _worst_path(paths: tuple[np.ndarray, np.ndarray, np.ndarray], wl: np.ndarray, wh: np.ndarray) -> np.ndarray:
    """The latency of the slowest path that carries traffic, per row and split."""
    light_only, light_heavy, direct = paths
    worst = np.where(light_only, wl, 0.0)
    worst = np.maximum(worst, np.where(light_heavy, wl + wh, 0.0))
    return np.maximum(worst, np.where(direct, wh, 0.0))


def lightest_fallback(
    profile: Profile, table: ParetoTable, gpus: int, slo_s: float, demand: Demand, policy: str, reason: str
) -> Plan:
    """All GPUs on the lightest model of the table, at its highest-throughput batch size."""
    light = min(table.models, key=profile.index)
    candidates = [c for c in table.rows if c.light == light]
    heavy = min(candidates, key=lambda c: c.heavy_ratio).heavy if candidates else table.rows[0].heavy
    try:
        quality = table.quality(light, heavy, 0.0, 0.0)
    except KeyError:
        quality = profile.model(light).fid or math.nan
    config = Config(light, heavy, 0.0, 0.0, quality)
    batch, seconds = max(profile.feasible_batches(light), key=lambda bs: bs[0] / bs[1])
    allocs = (
        Allocation(light, gpus, batch, demand.rate, seconds),
        Allocation(heavy, 0, 1, 0.0, 0.0),
    )
    return Plan(policy, config, allocs, math.inf, quality, slo_s, demand, False, reason)


def plan_hadis_reference(
    profile: Profile,
    table: ParetoTable,
    gpus: int,
    slo_s: float,
    demand: Demand,
    *,
    queue_delay_s: float | Mapping[str, float] = 0.0,
) -> Plan:
    """The HADIS paper's formulation (policy ``hadis-ref``), solved exactly by enumeration.

    Per row and batch-size pair: GPUs per model = the fewest whose throughput covers the demand
    share (light: 100% of demand; heavy: ``heavy_ratio``), and the row is feasible when
    ``s_light(b_l) + q_light + s_heavy(b_h) + q_heavy <= SLO`` and the GPUs fit the budget,
    where ``q`` is each model's queueing delay (``queue_delay_s`` per model, as the artifact's
    controller estimates it, see ``hadis.core.demand.ControllerSignals.queue_delay``; a single
    number is a delay observed for the whole system, charged once at 1.2x). Best quality wins,
    then fewest GPUs, then lowest latency. Left-over GPUs are spread over the two models, each
    to the one with the highest utilisation. ``demand.rate`` is used as given: HADIS's own
    margin (x1.05 on an EWMA) belongs to its demand estimator.
    """
    _check_inputs(profile, table, gpus, slo_s, demand)
    lam = demand.rate

    def delay(c: Config) -> float:
        if isinstance(queue_delay_s, Mapping):
            return queue_delay_s.get(c.light, 0.0) + queue_delay_s.get(c.heavy, 0.0)
        return HADIS_QUEUE_FACTOR * queue_delay_s

    best_key: tuple | None = None
    best = None
    for c in table.rows:
        q = delay(c)
        for b_l, s_l in profile.feasible_batches(c.light):
            g_l = max(1, math.ceil(lam * s_l / b_l - 1e-9))
            for b_h, s_h in profile.feasible_batches(c.heavy):
                g_h = math.ceil(c.heavy_ratio * lam * s_h / b_h - 1e-9)
                if c.heavy_ratio > 0:
                    g_h = max(1, g_h)
                latency = s_l + s_h + q
                if g_l + g_h > gpus or latency > slo_s:
                    continue
                key = (c.quality, g_l + g_h, latency)
                if _better(key, best_key):
                    best_key, best = key, (c, b_l, s_l, g_l, b_h, s_h, g_h, latency)
    if best is None:
        reason = f"HADIS formulation infeasible at {lam:.2f} req/s on {gpus} GPUs; all GPUs on the lightest model"
        return lightest_fallback(profile, table, gpus, slo_s, demand, "hadis-ref", reason)
    c, b_l, s_l, g_l, b_h, s_h, g_h, latency = best
    rate_l, rate_h = lam, c.heavy_ratio * lam
    g = spread_leftover([g_l, g_h], [rate_l * s_l / b_l, rate_h * s_h / b_h], gpus)
    allocs = (
        Allocation(c.light, g[0], b_l, rate_l, s_l),
        Allocation(c.heavy, g[1], b_h, rate_h, s_h),
    )
    return Plan("hadis-ref", c, allocs, latency, c.quality, slo_s, demand, True, "")


def spread_leftover(gpus: list[int], loads: Sequence[float], budget: int) -> list[int]:
    """Give each left-over GPU to the model with the highest utilisation (load / GPUs)."""
    out = list(gpus)
    while sum(out) < budget:
        util = [(load / g if g else (math.inf if load > 0 else -1.0)) for load, g in zip(loads, out, strict=True)]
        i = max(range(len(out)), key=lambda k: (util[k], -k))
        if util[i] < 0:  # no model has load: give the rest to the first
            i = 0
        out[i] += 1
    return out
