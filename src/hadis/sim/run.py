"""Run one or all systems over a trace and collect their summaries."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hadis.core.planner import swap_seconds
from hadis.sim.data import SimData, Trace
from hadis.sim.engine import DISPATCH_MODES, TIMINGS, Policy, Simulation
from hadis.sim.metrics import Window, summarise
from hadis.sim.policies import DISPATCH, SYSTEMS, Context, make_policy


@dataclass(frozen=True)
class SimSettings:
    gpus: int
    slo_s: float
    time_scale: float = 1.0
    replan_interval_s: float | None = None  # default: 50 s x time_scale (HADIS's E1 cadence)
    swap: bool = True  # with ``profile`` timing: a GPU that changes model loads it first
    window_s: float | None = None  # default: the re-plan interval
    timing: str = "artifact"  # how workers are timed (``hadis.sim.engine``)
    dispatch: str | None = None  # override every system's own dispatch rule (an ablation)

    def __post_init__(self) -> None:
        if self.timing not in TIMINGS:
            raise ValueError(f"unknown timing '{self.timing}' (known: {', '.join(TIMINGS)})")
        if self.dispatch is not None and self.dispatch not in DISPATCH_MODES:
            raise ValueError(f"unknown dispatch '{self.dispatch}' (known: {', '.join(DISPATCH_MODES)})")

    @property
    def interval(self) -> float:
        return self.replan_interval_s if self.replan_interval_s else 50.0 * self.time_scale


@dataclass(frozen=True)
class SystemRun:
    system: str
    summary: dict
    windows: list[Window]
    wall_s: float


def swap_delay_for(data: SimData, settings: SimSettings) -> Callable[[str], float]:
    """Model load time per model at the replay's time scale: zero with ``swap`` off, and with
    ``artifact`` timing (its simulated worker only swaps in-memory handles)."""
    seconds = swap_seconds(data.profile)
    charged = settings.swap and settings.timing == "profile"
    return lambda model: seconds[model] if charged else 0.0


def context_for(data: SimData, settings: SimSettings) -> Context:
    delay = swap_delay_for(data, settings)
    return Context(data, settings.gpus, settings.slo_s, {m: delay(m) for m in data.profile.names})


def run_system(
    system: str,
    data: SimData,
    trace: Trace,
    settings: SimSettings,
    policy_for: Callable[[Context], Policy] | None = None,
) -> SystemRun:
    """Replay ``trace`` through one system (``policy_for`` builds a variant under that label)."""
    start = time.perf_counter()
    ctx = context_for(data, settings)
    policy = policy_for(ctx) if policy_for else make_policy(system, ctx)
    sim = Simulation(
        trace,
        data.prompts,
        data.profile,
        policy,
        total_gpus=settings.gpus,
        slo_s=settings.slo_s,
        replan_interval_s=settings.interval,
        swap_delay_s=ctx.swap_s.__getitem__,
        dispatch=settings.dispatch or DISPATCH.get(system, "least-in-flight"),
        timing=settings.timing,
    )
    result = sim.run()
    window = settings.window_s or settings.interval
    summary, windows = summarise(result, settings.slo_s, data.grid, data.profile, data.prompts, window)
    wall = time.perf_counter() - start
    summary["wall_s"] = round(wall, 3)
    return SystemRun(system, summary, windows, wall)


def run_systems(
    systems: Sequence[str],
    data: SimData,
    trace: Trace,
    settings: SimSettings,
    progress: Callable[[str], None] | None = None,
) -> list[SystemRun]:
    runs = []
    for s in systems:
        if s not in SYSTEMS:
            raise ValueError(f"unknown system '{s}' (known: {', '.join(SYSTEMS)})")
        run = run_system(s, data, trace, settings)
        if progress:
            sm = run.summary
            progress(
                f"{s:14s} violations {sm['slo_violation_ratio']:6.2%}  FID {sm['fid_mean']:6.2f}  "
                f"p_real {sm['p_real_mean']:.3f}  degraded {sm['degraded_share']:6.2%}  dropped {sm['dropped']:5d}  "
                f"swaps {sm['model_swaps']:4d}  ({run.wall_s:.1f}s)"
            )
        runs.append(run)
    return runs
