"""Outputs of a replay: JSON, per-window CSV, a Markdown table and a Figure-7-style plot."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

from hadis.jsonsafe import json_safe
from hadis.sim.run import SimSettings, SystemRun


def to_json(runs: Sequence[SystemRun], settings: SimSettings, trace: str) -> dict:
    return {
        "trace": trace,
        "gpus": settings.gpus,
        "slo_s": settings.slo_s,
        "time_scale": settings.time_scale,
        "replan_interval_s": settings.interval,
        "timing": settings.timing,
        "dispatch": settings.dispatch or "each system's own",
        "systems": {r.system: json_safe(r.summary) for r in runs},
    }


def write_json(path: str | Path, runs: Sequence[SystemRun], settings: SimSettings, trace: str) -> None:
    Path(path).write_text(json.dumps(to_json(runs, settings, trace), indent=2) + "\n")


def write_csv(path: str | Path, runs: Sequence[SystemRun]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["system", "window_start_s", "arrivals", "served_in_slo", "violations", "violation_ratio", "fid"])
        for r in runs:
            for win in r.windows:
                fid = "" if math.isnan(win.fid) else f"{win.fid:.4f}"
                w.writerow(
                    [
                        r.system,
                        f"{win.start_s:g}",
                        win.arrivals,
                        win.served,
                        win.violations,
                        f"{win.violation_ratio:.4f}",
                        fid,
                    ]
                )


def markdown_table(runs: Sequence[SystemRun]) -> str:
    lines = [
        "| system | SLO violations | FID (mean) | p_real (mean) | served | degraded | dropped | model swaps "
        "| GPU-seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        s = r.summary
        gpu_s = sum(s["gpu_seconds_per_model"].values())
        lines.append(
            f"| {r.system} | {s['slo_violation_ratio']:.2%} | {s['fid_mean']:.2f} | {s['p_real_mean']:.3f} | "
            f"{s['served']} | {s['degraded_share']:.2%} | {s['dropped']} | {s['model_swaps']} | {gpu_s:.0f} |"
        )
    return "\n".join(lines)


def _timing_note(settings: SimSettings) -> str:
    if settings.timing == "artifact":
        note = "the artifact's worker timing"
    else:
        note = "model swaps cost load time" if settings.swap else "model swaps are free"
    return note + (f"\ndispatch: {settings.dispatch} (all)" if settings.dispatch else "")


def plot(path: str | Path, runs: Sequence[SystemRun], settings: SimSettings, title: str) -> None:
    """Demand, FID and SLO violations over time, and bars of the averages (paper Figure 7)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(13, 8.5), constrained_layout=True)
    grid = fig.add_gridspec(3, 2, width_ratios=[3, 1.2])
    ax_demand = fig.add_subplot(grid[0, 0])
    ax_fid = fig.add_subplot(grid[1, 0], sharex=ax_demand)
    ax_viol = fig.add_subplot(grid[2, 0], sharex=ax_demand)
    ax_bar_fid = fig.add_subplot(grid[0, 1])
    ax_bar_viol = fig.add_subplot(grid[1, 1])
    ax_note = fig.add_subplot(grid[2, 1])
    colors = plt.get_cmap("tab10")
    first = runs[0]
    width = first.windows[1].start_s - first.windows[0].start_s if len(first.windows) > 1 else 1.0
    ax_demand.plot([w.start_s for w in first.windows], [w.arrivals / width for w in first.windows], color="black")
    ax_demand.set_ylabel("demand (req/s)")
    ax_demand.set_title(title)
    for i, r in enumerate(runs):
        t = [w.start_s for w in r.windows]
        ax_fid.plot(t, [w.fid for w in r.windows], label=r.system, color=colors(i), lw=1.2)
        ax_viol.plot(t, [100 * w.violation_ratio for w in r.windows], label=r.system, color=colors(i), lw=1.2)
    ax_fid.set_ylabel("FID (lower is better)")
    ax_viol.set_ylabel("SLO violations (%)")
    ax_viol.set_xlabel("time (s)")
    ax_fid.legend(fontsize=8, ncol=2)
    names = [r.system for r in runs]
    ax_bar_fid.barh(names, [r.summary["fid_mean"] for r in runs], color=[colors(i) for i in range(len(runs))])
    ax_bar_fid.set_xlabel("mean FID")
    lo = min(r.summary["fid_mean"] for r in runs)
    ax_bar_fid.set_xlim(max(0.0, lo - 3), None)
    ax_bar_viol.barh(
        names, [100 * r.summary["slo_violation_ratio"] for r in runs], color=[colors(i) for i in range(len(runs))]
    )
    ax_bar_viol.set_xlabel("SLO violations (%)")
    for ax in (ax_bar_fid, ax_bar_viol):
        ax.invert_yaxis()
    ax_note.axis("off")
    ax_note.text(
        0.0,
        0.9,
        f"{settings.gpus} GPUs, SLO {settings.slo_s:g}s\ntime scale {settings.time_scale:g}, "
        f"re-plan every {settings.interval:g}s\n" + _timing_note(settings),
        va="top",
        fontsize=10,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
