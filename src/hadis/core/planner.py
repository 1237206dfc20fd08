"""The joint planner: configuration row, replicas per model and batch sizes, under an SLO.

Both policies plan whole replicas (GPUs = replicas x GPUs per replica) within a budget of
``min..max`` GPUs, and share the data types:

``plan_cascade`` (the product's default, policy ``hadis``) is exact enumeration over its model:
for every table row and every pair of replica counts it predicts the latency of each path a
query can take (straight to heavy, light accepted, light then heavy) from a queueing model of
batched servers (``hadis.core.queueing``), with each model provisioned for the traffic that
actually reaches it: the light model sees ``(1 - r)`` of the demand, the heavy model
``r + (1 - r) d``. It picks the best-quality row whose worst active path meets the SLO, then
the fewest GPUs that reach it (or, by its ``Objective``, the fewest GPUs within a FID bound).

``plan_hadis_reference`` (policy ``hadis-ref``) is the HADIS paper's formulation, kept for
comparison: the light model is provisioned for all traffic, every query is charged both
stages' batch latency, and each model's queueing delay (as the artifact's controller estimates
it) is added to both.

Both return an infeasible plan with the reason and a safe fallback when nothing meets the SLO.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from hadis.core.demand import HADIS_QUEUE_SAFETY
from hadis.core.pareto import Config, ParetoTable
from hadis.core.profile import Profile
from hadis.core.queueing import pool_latency

# The Erlang-C tail overstates the wait of deterministic batched service; 0.7 was chosen by a
# sweep on the MAF traces (docs/planner.md, "Planner calibration") and keeps violations near zero there.
DEFAULT_QUANTILE = 0.7
DEFAULT_MAX_UTILISATION = 0.97
# What moving one GPU to another model costs when the planner knows the current allocation: a
# row must be this much better in FID per GPU moved, a split this much better in worst-path
# latency (as a share of the SLO) per GPU moved. Chosen by the surge sweep (docs/surges.md).
DEFAULT_MOVE_PENALTY_FID = 0.05
DEFAULT_MOVE_PENALTY_SLO = 0.02
# Spare replicas (``fill_budget``) may cost this share of the SLO in latency at the planned rate
# to serve more images/s in a surge: at 6 s, a plan 1.5 s slower than the fastest split.
SPARE_LATENCY_MARGIN = 0.25


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
    gpus: int  # replicas x GPUs per replica
    batch: int
    arrival_rate: float
    latency_s: float
    replicas: int = -1  # -1: one GPU per replica (then equal to gpus)

    def __post_init__(self) -> None:
        if self.replicas < 0:
            object.__setattr__(self, "replicas", self.gpus)

    @property
    def capacity_note(self) -> str:
        per = (
            f" ({self.replicas} x {self.gpus // self.replicas})" if self.replicas and self.replicas != self.gpus else ""
        )
        return f"{self.model}: {self.gpus} GPU{per} x batch {self.batch}"


@dataclass(frozen=True)
class Objective:
    """What the planner optimises within the SLO.

    ``max_fid`` None: the best FID, then the fewest GPUs that reach it. A number: the fewest
    GPUs whose plan keeps FID at or below it, then the best FID; when no plan reaches it, the
    best-FID plan, with ``Plan.objective_met`` False."""

    max_fid: float | None = None

    def __post_init__(self) -> None:
        if self.max_fid is not None and not (math.isfinite(self.max_fid) and self.max_fid > 0):
            raise ValueError(f"objective maxFid must be a number > 0, got {self.max_fid}")


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
    objective_met: bool = True

    @property
    def headroom_s(self) -> float:
        return self.slo_s - self.predicted_latency_s

    @property
    def total_gpus(self) -> int:
        return sum(a.gpus for a in self.allocations)

    def gpus(self, model: str) -> int:
        return sum(a.gpus for a in self.allocations if a.model == model)

    def replicas(self, model: str) -> int:
        return sum(a.replicas for a in self.allocations if a.model == model)

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


def _per_replica(models: Sequence[str], gpus_per_replica: Mapping[str, int] | None) -> dict[str, int]:
    out = {m: int((gpus_per_replica or {}).get(m, 1)) for m in models}
    bad = [f"{m}={g}" for m, g in out.items() if g < 1]
    if bad:
        raise ValueError(f"GPUs per replica must be >= 1: {', '.join(bad)}")
    return out


def _budget(gpus: int, min_gpus: int, pairs: Sequence[tuple[str, str]], per: Mapping[str, int]) -> None:
    if not 0 <= min_gpus <= gpus:
        raise ValueError(f"GPU budget min must be in 0..max ({gpus}), got {min_gpus}")
    if pairs and all(per[lt] + per[hv] > gpus for lt, hv in pairs):
        smallest = min(pairs, key=lambda p: per[p[0]] + per[p[1]])
        raise ValueError(
            f"a GPU budget of {gpus} cannot hold one replica of each tier of any pair "
            f"(the smallest, {smallest[0]} -> {smallest[1]}, needs {per[smallest[0]] + per[smallest[1]]})"
        )


def throughput(profile: Profile, model: str, slo_s: float) -> float:
    """Images/s one replica of ``model`` serves at its best batch that finishes within the SLO
    (0 when none does)."""
    return max((b / s for b, s in profile.feasible_batches(model) if s <= slo_s), default=0.0)


def _monotone(curve: np.ndarray) -> np.ndarray:
    """A latency curve over replica counts made non-increasing (more replicas never slower)."""
    return np.minimum.accumulate(curve)


def plan_cascade(
    profile: Profile,
    table: ParetoTable,
    gpus: int,
    slo_s: float,
    demand: Demand,
    *,
    min_gpus: int = 0,
    gpus_per_replica: Mapping[str, int] | None = None,
    objective: Objective | None = None,
    quantile: float = DEFAULT_QUANTILE,
    max_utilisation: float = DEFAULT_MAX_UTILISATION,
    rows: Sequence[Config] | None = None,
    current: Mapping[str, int] | None = None,
    swap_s: Mapping[str, float] | None = None,
    move_penalty_fid: float = DEFAULT_MOVE_PENALTY_FID,
    move_penalty_slo: float = DEFAULT_MOVE_PENALTY_SLO,
    fill_budget: bool = False,
    rising: bool = False,
) -> Plan:
    """The product's planner (policy ``hadis``): exact enumeration of rows x replica pairs.

    For every row and every pair of replica counts (at least one of each tier; GPUs = replicas
    x ``gpus_per_replica``, between ``min_gpus`` and ``gpus``) it predicts the latency of each
    path a query can take; a pair is feasible when the worst path that carries traffic meets
    the SLO. By default the plan has the best quality, then the fewest GPUs that reach it, then
    the lowest latency: GPUs that buy no quality are left unused. With ``objective.max_fid``
    it is the fewest GPUs whose row keeps FID at or below that, then the best quality. With
    ``fill_budget`` every plan spends the budget, and the spare replicas are priced as surge
    headroom: among a row's feasible pairs that use it, are within ``SPARE_LATENCY_MARGIN`` of
    the SLO of the lowest latency and move no more GPUs than that pair, the one that serves the
    most images/s (``throughput``: the router overflows and degrades between the tiers, so a
    surge meets both tiers' capacity before a re-plan can move a pod), then the lowest latency
    (the replay's choice). An idle cascade keeps its spare GPUs warm where a surge needs them,
    not where they shave an idle latency already well within the SLO.

    With ``current`` (GPUs per model now) the plan counts what moving GPUs costs. A GPU that
    changes model serves nothing for ``swap_s[model]`` seconds, so while it loads a request
    meets the replicas that stayed, or waits for the load: each path's latency is the worse of
    the steady state and that transition. The steady state decides feasibility; a row that
    moves more GPUs must be better by ``move_penalty_fid`` per GPU moved, and among pairs of
    equal GPUs the one with the lowest latency counting the transition plus
    ``move_penalty_slo`` x SLO per GPU moved wins. The predicted latency counts the transition.

    ``rising`` (the demand is above the rate of the last re-plan) with ``current``:
    the plan keeps at least the images/s the current split serves. While a surge builds, each
    estimate is still short of the rate to come, and a split for it (more heavy replicas for a
    better FID) gives up capacity just as the load arrives; a row change is free, so the surge
    is absorbed on the split it has, and the split is re-balanced for quality once the demand
    stops rising. When no row keeps that capacity, the plan is made without the floor.
    """
    _check_inputs(profile, table, gpus, slo_s, demand)
    objective = objective or Objective()
    swap_s = swap_s or {}
    rows = list(table.rows if rows is None else rows)
    per = _per_replica(profile.names, gpus_per_replica)
    _budget(gpus, min_gpus, sorted({(c.light, c.heavy) for c in rows}), per)
    lam = demand.rate
    rate_of = {m: throughput(profile, m, slo_s) for m in profile.names}  # images/s of one replica
    floor = None
    if rising and current is not None:  # the images/s of the current split
        floor = sum((n // per[m]) * rate_of[m] for m, n in current.items() if m in per)

    # Distinct (model, arrival rate, backlog) triples, evaluated in one vectorised pass per model,
    # each over 0 .. the replicas of that model the budget holds.
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
        curves[model] = pool_latency(
            rates, backlogs, np.array(bs), np.array(ss), gpus // per[model], quantile, max_utilisation
        )

    def curve(model: str, rate: float) -> np.ndarray:
        return _monotone(curves[model][0][wanted[model][(rate, demand.queued(model))]])

    # Per row: for each light replica count, the fewest heavy replicas that meet the SLO (the
    # candidates of fewest GPUs), and the steady-state best pair over the whole budget (the
    # fallback when no row is feasible).
    n_rows = len(rows)
    # nl, nh, GPUs, cost, moved, latency of each row's pair: ``kept``, those that keep ``floor``
    free: list[tuple[int, int, int, float, int, float] | None] = [None] * n_rows
    kept: list[tuple[int, int, int, float, int, float] | None] = [None] * n_rows
    fall: list[tuple[int, int, float]] = [(0, 0, math.inf)] * n_rows
    for i, c in enumerate(rows):
        gl, gh = per[c.light], per[c.heavy]
        if gl + gh > gpus:
            continue
        wl = curve(c.light, (1 - c.router_ratio) * lam)
        wh = curve(c.heavy, c.heavy_ratio * lam)
        light_only, light_heavy, direct = _active_paths(c)
        nl = np.arange(1, (gpus - gh) // gl + 1)
        # Steady best over the whole budget: as many heavy replicas as fit beside each light count.
        nh_all = (gpus - nl * gl) // gh
        worst_all = _worst(light_only, light_heavy, direct, wl[nl], wh[nh_all])
        k = int(np.argmin(worst_all))
        fall[i] = (int(nl[k]), int(nh_all[k]), float(worst_all[k]))
        if fill_budget:  # the feasible pairs that use the most of the budget whole replicas can
            used_all = nl * gl + nh_all * gh
            full = worst_all <= slo_s
            full &= used_all == (used_all[full].max() if full.any() else 0)
            found = (nl[full], nh_all[full], used_all[full]) if full.any() else None
        else:
            found = _fewest(wl, wh, nl, gl, gh, gpus, min_gpus, slo_s, (light_only, light_heavy, direct))
        if found is None:
            continue
        nl_c, nh_c, used_c = found
        steady = _worst(light_only, light_heavy, direct, wl[nl_c], wh[nh_c])
        moved = np.zeros(nl_c.shape, dtype=int)
        latency = steady
        if current is not None:
            now_l, now_h = current.get(c.light, 0) // gl, current.get(c.heavy, 0) // gh
            tl = _transition(wl, nl_c, now_l, swap_s.get(c.light, 0.0))
            th = _transition(wh, nh_c, now_h, swap_s.get(c.heavy, 0.0))
            latency = _worst(light_only, light_heavy, direct, tl, th)
            moved = np.maximum(nl_c - now_l, 0) * gl + np.maximum(nh_c - now_h, 0) * gh
        cost = latency + move_penalty_slo * slo_s * moved
        served = nl_c * rate_of[c.light] + nh_c * rate_of[c.heavy]
        pairs = (nl_c, nh_c, used_c, cost, moved, latency, served)
        free[i] = _pick(pairs, fill_budget, slo_s)
        if floor is not None and (keep := served >= floor - 1e-9).any():  # a rise keeps the current images/s
            kept[i] = _pick(tuple(a[keep] for a in pairs), fill_budget, slo_s)
    # no row keeps the current capacity: plan without the floor
    cand = kept if any(k is not None for k in kept) else free

    def build(i: int, nl: int, nh: int, latency: float, feasible: bool, reason: str, met: bool = True) -> Plan:
        c = rows[i]
        allocs = []
        for model, rate, n in ((c.light, (1 - c.router_ratio) * lam, nl), (c.heavy, c.heavy_ratio * lam, nh)):
            lat, batch = curves[model]
            k = wanted[model][(rate, demand.queued(model))]
            allocs.append(Allocation(model, n * per[model], int(batch[k][n]), rate, float(lat[k][n]), n))
        return Plan("hadis", c, tuple(allocs), latency, c.quality, slo_s, demand, feasible, reason, met)

    ok_rows = [i for i in range(n_rows) if cand[i] is not None]
    if ok_rows:

        def quality_first(i: int) -> tuple:
            _, _, used, cost, moved, _ = cand[i]
            c = rows[i]
            return (c.quality + move_penalty_fid * moved, used, cost, c.heavy_ratio, i)

        def gpus_first(i: int) -> tuple:
            _, _, used, cost, moved, _ = cand[i]
            c = rows[i]
            return (used, c.quality + move_penalty_fid * moved, cost, c.heavy_ratio, i)

        met = True
        if objective.max_fid is not None:
            within = [i for i in ok_rows if rows[i].quality <= objective.max_fid + 1e-9]
            met = bool(within)
            i = min(within, key=gpus_first) if within else min(ok_rows, key=quality_first)
        else:
            i = min(ok_rows, key=quality_first)
        nl, nh, _, _, _, latency = cand[i]
        reason = "" if met else f"no plan within the SLO reaches FID <= {objective.max_fid:g}; best FID instead"
        return build(i, nl, nh, latency, True, reason, met)
    servable = [i for i in range(n_rows) if fall[i][0] > 0]
    if servable:
        i = min(servable, key=lambda k: (fall[k][2], rows[k].quality, k))
        nl, nh, latency = fall[i]
        if math.isfinite(latency):
            reason = (
                f"no configuration meets the {slo_s:g}s SLO at {lam:.2f} req/s on {gpus} GPUs; "
                f"fallback has the lowest predicted latency ({latency:.2f}s)"
            )
            return build(i, nl, nh, latency, False, reason)
    reason = f"demand {lam:.2f} req/s exceeds the capacity of {gpus} GPUs in every configuration"
    return lightest_fallback(profile, table, gpus, slo_s, demand, "hadis", reason, per)


def _pick(pairs: tuple[np.ndarray, ...], fill_budget: bool, slo_s: float) -> tuple[int, int, int, float, int, float]:
    """A row's pair among its candidates ``(light, heavy, GPUs, cost, moved, latency, images/s)``:
    the fewest GPUs, then the lowest cost; with ``fill_budget`` (every pair uses the budget) the
    most images/s among those within ``SPARE_LATENCY_MARGIN`` of the lowest cost that move no
    more GPUs than it, then the lowest cost."""
    nl, nh, used, cost, moved, latency, served = pairs
    if fill_budget:
        best = int(np.argmin(cost))
        priced = (cost <= cost[best] + SPARE_LATENCY_MARGIN * slo_s) & (moved <= moved[best])
        j = int(np.lexsort((cost, -np.where(priced, served, -1.0), used))[0])
    else:
        j = int(np.lexsort((cost, used))[0])
    return int(nl[j]), int(nh[j]), int(used[j]), float(cost[j]), int(moved[j]), float(latency[j])


def _fewest(
    wl: np.ndarray,
    wh: np.ndarray,
    nl: np.ndarray,
    gl: int,
    gh: int,
    gpus: int,
    min_gpus: int,
    slo_s: float,
    paths: tuple[bool, bool, bool],
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """For each light replica count, the fewest heavy replicas (at least one) whose worst path
    meets the SLO with GPUs in ``min_gpus..gpus``: (light, heavy, GPUs) of those that exist.

    Every feasible pair with the fewest GPUs is among them: more replicas are never slower."""
    light_only, light_heavy, direct = paths
    lat_l = wl[nl]
    limit = np.full(nl.shape, np.inf)  # what heavy's latency must meet, per light count
    if light_heavy:
        limit = np.minimum(limit, slo_s - lat_l)
    if direct:
        limit = np.minimum(limit, slo_s)
    ok_l = lat_l <= slo_s if light_only or light_heavy else np.ones(nl.shape, dtype=bool)
    need = np.maximum(np.searchsorted(-wh, -limit, side="left"), 1)  # first count with wh <= limit
    # Raise heavy (never light) to reach the minimum budget: more replicas are never slower.
    need = np.maximum(need, np.ceil((min_gpus - nl * gl) / gh).astype(int))
    used = nl * gl + need * gh
    ok = ok_l & (need < len(wh)) & (used <= gpus) & np.isfinite(lat_l)
    if not ok.any():
        return None
    return nl[ok], need[ok], used[ok]


def _worst(light_only: bool, light_heavy: bool, direct: bool, wl: np.ndarray, wh: np.ndarray) -> np.ndarray:
    """The latency of the slowest path that carries traffic."""
    worst = np.zeros(np.broadcast(wl, wh).shape)
    if light_only:
        worst = np.maximum(worst, wl)
    if light_heavy:
        worst = np.maximum(worst, wl + wh)
    if direct:
        worst = np.maximum(worst, wh)
    return worst


def _transition(curve: np.ndarray, new: np.ndarray, now: int, swap_s: float) -> np.ndarray:
    """Latency on ``new`` replicas counting the swap: while ``new - now`` replicas load the model,
    a request is served by the ``now`` that stayed or waits for the load, whichever is sooner."""
    steady = curve[new]
    kept = curve[np.minimum(new, now)]
    during = np.minimum(kept, swap_s + steady)
    return np.where(new > now, np.maximum(steady, during), steady)


def _active_paths(c: Config) -> tuple[bool, bool, bool]:
    """(light only, light then heavy, straight to heavy) -- which paths carry traffic."""
    r, d = c.router_ratio, c.disc_ratio
    return (r < 1.0 and d < 1.0, r < 1.0 and d > 0.0, r > 0.0)


def lightest_fallback(
    profile: Profile,
    table: ParetoTable,
    gpus: int,
    slo_s: float,
    demand: Demand,
    policy: str,
    reason: str,
    per: Mapping[str, int] | None = None,
    *,
    heavy_replica: bool = True,
) -> Plan:
    """The lightest model of the table on the budget, at its highest-throughput batch size, and
    (with ``heavy_replica``) one replica of the heavy model its lightest row pairs it with, when
    it fits."""
    light = min(table.models, key=profile.index)
    candidates = [c for c in table.rows if c.light == light]
    heavy = min(candidates, key=lambda c: c.heavy_ratio).heavy if candidates else table.rows[0].heavy
    per = per or {}
    gl, gh = int(per.get(light, 1)), int(per.get(heavy, 1))
    nh = 1 if heavy_replica and gl + gh <= gpus else 0
    nl = (gpus - nh * gh) // gl
    try:
        quality = table.quality(light, heavy, 0.0, 0.0)
    except KeyError:
        quality = profile.model(light).fid or math.nan
    config = Config(light, heavy, 0.0, 0.0, quality)
    batch, seconds = max(profile.feasible_batches(light), key=lambda bs: bs[0] / bs[1])
    allocs = (
        Allocation(light, nl * gl, batch, demand.rate, seconds, nl),
        Allocation(heavy, nh * gh, 1, 0.0, 0.0, nh),
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
    gpus_per_replica: Mapping[str, int] | None = None,
    min_gpus: int = 0,
    spread: bool = True,
    serve_both: bool = False,
) -> Plan:
    """The HADIS paper's formulation (policy ``hadis-ref``), solved exactly by enumeration.

    Per row and batch-size pair: replicas per model = the fewest whose throughput covers the
    demand share (light: 100% of demand; heavy: ``heavy_ratio``; with ``serve_both`` at least one
    heavy replica), and the row is feasible when ``s_light(b_l) + q_light + s_heavy(b_h) +
    q_heavy <= SLO`` and their GPUs (replicas x ``gpus_per_replica``) fit the budget, where
    ``q`` is each model's queueing delay (``queue_delay_s`` per model, as the artifact's
    controller estimates it, see ``hadis.core.demand.ControllerSignals.queue_delay``; a single
    number is a delay observed for the whole system, charged once at 1.2x). Best quality wins,
    then fewest GPUs, then lowest latency. With ``spread`` the left-over budget is handed out a
    replica at a time to the model with the highest utilisation (the replay's choice); without,
    only up to ``min_gpus``. ``demand.rate`` is used as given: HADIS's own margin (x1.05 on an
    EWMA) belongs to its demand estimator.
    """
    _check_inputs(profile, table, gpus, slo_s, demand)
    per = _per_replica(profile.names, gpus_per_replica)
    _budget(gpus, min_gpus, sorted({(c.light, c.heavy) for c in table.rows}) if serve_both else [], per)
    lam = demand.rate

    def delay(c: Config) -> float:
        if isinstance(queue_delay_s, Mapping):
            return queue_delay_s.get(c.light, 0.0) + queue_delay_s.get(c.heavy, 0.0)
        return HADIS_QUEUE_SAFETY * queue_delay_s

    best_key: tuple | None = None
    best = None
    for c in table.rows:
        q = delay(c)
        gl, gh = per[c.light], per[c.heavy]
        for b_l, s_l in profile.feasible_batches(c.light):
            n_l = max(1, math.ceil(lam * s_l / b_l - 1e-9))
            for b_h, s_h in profile.feasible_batches(c.heavy):
                n_h = math.ceil(c.heavy_ratio * lam * s_h / b_h - 1e-9)
                if c.heavy_ratio > 0 or serve_both:
                    n_h = max(1, n_h)
                latency = s_l + s_h + q
                used = n_l * gl + n_h * gh
                if used > gpus or latency > slo_s:
                    continue
                key = (c.quality, used, latency)
                if _better(key, best_key):
                    best_key, best = key, (c, b_l, s_l, n_l, b_h, s_h, n_h, latency)
    if best is None:
        reason = f"HADIS formulation infeasible at {lam:.2f} req/s on {gpus} GPUs; all GPUs on the lightest model"
        return lightest_fallback(
            profile, table, gpus, slo_s, demand, "hadis-ref", reason, per, heavy_replica=serve_both
        )
    c, b_l, s_l, n_l, b_h, s_h, n_h, latency = best
    rate_l, rate_h = lam, c.heavy_ratio * lam
    loads = [rate_l * s_l / b_l, rate_h * s_h / b_h]
    costs = [per[c.light], per[c.heavy]]
    n = spread_leftover([n_l, n_h], loads, gpus if spread else min_gpus, costs)
    allocs = (
        Allocation(c.light, n[0] * costs[0], b_l, rate_l, s_l, n[0]),
        Allocation(c.heavy, n[1] * costs[1], b_h, rate_h, s_h, n[1]),
    )
    return Plan("hadis-ref", c, allocs, latency, c.quality, slo_s, demand, True, "")


def spread_leftover(
    counts: list[int], loads: Sequence[float], budget: int, costs: Sequence[int] | None = None
) -> list[int]:
    """Give each left-over replica to the model with the highest utilisation (load / replicas)
    while one more fits ``budget`` (replicas cost ``costs`` GPUs each, 1 by default)."""
    out = list(counts)
    costs = list(costs or [1] * len(out))
    used = sum(n * k for n, k in zip(out, costs, strict=True))
    while True:
        fits = [k for k in range(len(out)) if used + costs[k] <= budget]
        if not fits:
            return out
        util = {k: (loads[k] / out[k] if out[k] else (math.inf if loads[k] > 0 else -1.0)) for k in fits}
        i = max(fits, key=lambda k: (util[k], -k))
        if util[i] < 0:  # no model has load: give the rest to the first that fits
            i = fits[0]
        out[i] += 1
        used += costs[i]
