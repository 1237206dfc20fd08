"""Summaries of a replay: totals per system and series per time window.

Quality is the FID of the configuration actually served in each window: served requests are
grouped by the plan in force when they arrived; a cascade group's FID is the grid's FID at the
realised shares (straight-to-heavy share ``r``, escalated share ``d`` of the rest), interpolated
between grid points (a degraded request counts as served by light, as it was); a group without
a cascade gets the served-count-weighted single-model FID. ``degraded_share`` is the share of
all arrivals served light, flagged, because the heavy tier was saturated. ``p_real_mean`` is
the mean discriminator P(real) of the images actually served.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from hadis.core.pareto import QualityGrid
from hadis.core.profile import Profile
from hadis.sim.data import PromptData
from hadis.sim.engine import Request, SimResult


@dataclass(frozen=True)
class Window:
    start_s: float
    arrivals: int
    served: int
    violations: int
    fid: float

    @property
    def violation_ratio(self) -> float:
        return self.violations / self.arrivals if self.arrivals else 0.0


def _group_fid(reqs: list[Request], plan, grid: QualityGrid, profile: Profile) -> float:
    if plan.is_cascade:
        n = len(reqs)
        direct = sum(1 for r in reqs if r.path == "H")
        escalated = sum(1 for r in reqs if r.path == "LH")
        light_first = n - direct
        r_eff = direct / n
        d_eff = escalated / light_first if light_first else 0.0
        try:
            return grid.quality(plan.light, plan.heavy, r_eff, d_eff)
        except KeyError:
            return plan.quality
    total = 0.0
    for r in reqs:
        fid = profile.model(r.model).fid
        total += fid if fid is not None else math.nan
    return total / len(reqs)


def summarise(
    result: SimResult, slo_s: float, grid: QualityGrid, profile: Profile, prompts: PromptData, window_s: float
) -> tuple[dict, list[Window]]:
    reqs = result.requests
    plans = [p for _, p in result.plans]
    served = [r for r in reqs if not r.dropped]
    late = [r for r in served if r.done - r.arrival > slo_s]
    dropped = [r for r in reqs if r.dropped]
    degraded = sum(1 for r in served if r.degraded)

    # FID per (window, plan) group of served requests.
    groups: dict[tuple[int, int], list[Request]] = defaultdict(list)
    for r in served:
        groups[(int(r.arrival // window_s), r.plan_id)].append(r)
    fid_sum: dict[int, float] = defaultdict(float)
    fid_n: dict[int, int] = defaultdict(int)
    for (w, pid), group in groups.items():
        f = _group_fid(group, plans[pid], grid, profile)
        fid_sum[w] += f * len(group)
        fid_n[w] += len(group)

    n_windows = int(max((r.arrival for r in reqs), default=0.0) // window_s) + 1
    arrivals_w = [0] * n_windows
    served_w = [0] * n_windows
    viol_w = [0] * n_windows
    for r in reqs:
        w = int(r.arrival // window_s)
        arrivals_w[w] += 1
        if r.dropped or r.done - r.arrival > slo_s:
            viol_w[w] += 1
        else:
            served_w[w] += 1
    windows = [
        Window(w * window_s, arrivals_w[w], served_w[w], viol_w[w], fid_sum[w] / fid_n[w] if fid_n[w] else math.nan)
        for w in range(n_windows)
    ]

    p_vals = [v for r in served if (v := prompts.p_real_of(r.model, r.prompt, r.image)) is not None]
    served_by_model: dict[str, int] = defaultdict(int)
    for r in served:
        served_by_model[r.model] += 1
    total_fid_n = sum(fid_n.values())
    latencies = sorted(r.done - r.arrival for r in served)
    summary = {
        "arrivals": len(reqs),
        "served": len(served),
        "served_late": len(late),
        "dropped": len(dropped),
        "slo_violation_ratio": (len(late) + len(dropped)) / len(reqs) if reqs else 0.0,
        "fid_mean": sum(fid_sum.values()) / total_fid_n if total_fid_n else math.nan,
        "p_real_mean": sum(p_vals) / len(p_vals) if p_vals else math.nan,
        "p_real_missing": len(served) - len(p_vals),
        "latency_p50_s": _quantile(latencies, 0.5),
        "latency_p99_s": _quantile(latencies, 0.99),
        "served_per_model": dict(sorted(served_by_model.items())),
        "escalated": sum(1 for r in served if r.path == "LH"),
        "direct_heavy": sum(1 for r in served if r.path == "H"),
        "gpu_seconds_per_model": {m: round(s, 3) for m, s in result.gpu_seconds.items() if s > 0},
        "degraded": degraded,
        "degraded_share": degraded / len(reqs) if reqs else 0.0,
        "shed": sum(1 for r in reqs if r.shed),
        "model_swaps": result.swaps,
        "early_replans": result.early_replans,
        "plans": len(plans),
        "infeasible_plans": sum(1 for p in plans if not p.feasible),
    }
    return summary, windows


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]
