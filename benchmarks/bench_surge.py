"""Surges: every system on staircase, spike and MAF-shaped traces, and what each part of ours buys.

E1 settings (16 GPUs, SLO 6 s, latencies x0.1, re-plan every 5 s, the artifact's worker timing).
Traces come from ``hadis.sim.tracegen`` (the same as ``hadis trace gen``), each with several
seeds. Prints, per scenario: a table of every system on seed 0 (violations, degraded share,
drops, FID, model swaps); hadis against hadis-ref over all seeds with the ratio of violations
and the FID difference, and the issue's acceptance checks; then an ablation of ``hadis`` with
one part switched off at a time, under profile timing (a model swap costs its load time, so
swap awareness has something to save). Writes the spike scenario's time series to ``--plot``.

Last, with switch time charged (profile timing) on a spike and a staircase trace made for
holding: hadis (late binding: held at the router until a pod has room) against hadis-ref and
against hadis with holding off (each image sent on at once to the least loaded pod's queue).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

from hadis.sim.data import load_data_dir
from hadis.sim.policies import DISPATCH, SYSTEMS, Hadis
from hadis.sim.report import markdown_table, plot
from hadis.sim.run import SimSettings, run_system
from hadis.sim.tracegen import maf, read_hourly, spikes, staircase, trace

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = SimSettings(gpus=16, slo_s=6.0, time_scale=0.1)
PROFILE_SETTINGS = dataclasses.replace(SETTINGS, timing="profile")
# every variant of ours dispatched as ours is (a label outside SYSTEMS has no dispatch of its own)
ABLATION_SETTINGS = dataclasses.replace(PROFILE_SETTINGS, dispatch=DISPATCH["hadis"])
ABLATIONS = {
    "hadis": {},
    "- early re-plans": {"early": False},
    "- degrade": {"degrade": False},
    "- swap-aware": {"swap_aware": False},
    "+ shed at SLO": {"shed": True},
    "none of them": {"early": False, "degrade": False, "swap_aware": False},
}


HOLDING_SCENARIOS = {
    "spikes 6 -> 72 req/s, 4 s every 40 s": spikes(6, 72, every_s=40, width_s=4, duration_s=240),
    "staircase 3-24-48-24-3 req/s, 30 s steps": staircase([3, 24, 48, 24, 3], step_s=30),
}


def scenarios(data_dir: Path) -> dict:
    hourly = read_hourly((data_dir / "traces" / "maf_hourly_invocations.csv").read_text(), "maf")
    return {
        "staircase 2-20-40-60 req/s, 60 s steps": ("surge", staircase([2, 20, 40, 60], step_s=60)),
        "staircase 4-48 req/s, 20 s steps": ("surge", staircase([4, 16, 32, 48, 32, 16, 4], step_s=20)),
        "spikes 8 -> 64 req/s, 5 s every 60 s": ("surge", spikes(8, 64, every_s=60, width_s=5, duration_s=300)),
        "spikes 4 -> 96 req/s, 3 s every 30 s": ("surge", spikes(4, 96, every_s=30, width_s=3, duration_s=300)),
        "MAF shape 1-32 req/s": ("maf", maf(hourly, 1, 32)),
        "MAF shape 1-64 req/s": ("maf", maf(hourly, 1, 64)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default=str(ROOT / "data" / "hadis"))
    ap.add_argument("--seeds", type=int, default=3, help="seeds per scenario (default 3)")
    ap.add_argument("--plot", default=str(ROOT / "out" / "surge-spikes.png"))
    args = ap.parse_args()
    data_dir = Path(args.data_dir)
    data = load_data_dir(data_dir, SETTINGS.time_scale)
    start = time.perf_counter()
    verdicts = []
    for name, (kind, profile) in scenarios(data_dir).items():
        print(f"\n## {name}\n")
        runs = [run_system(s, data, trace(profile, seed=0), SETTINGS) for s in SYSTEMS]
        print(markdown_table(runs))
        if name.startswith("spikes 8"):
            Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
            plot(args.plot, runs, SETTINGS, f"{name} (seed 0)")
            print(f"\nwrote {args.plot}")
        ref_v, ours_v, ref_f, ours_f = [], [], [], []
        for seed in range(args.seeds):
            t = trace(profile, seed=seed)
            ref = run_system("hadis-ref", data, t, SETTINGS).summary
            ours = run_system("hadis", data, t, SETTINGS).summary
            ref_v.append(ref["slo_violation_ratio"])
            ours_v.append(ours["slo_violation_ratio"])
            ref_f.append(ref["fid_mean"])
            ours_f.append(ours["fid_mean"])
        rv, ov = statistics.mean(ref_v), statistics.mean(ours_v)
        df = statistics.mean(ours_f) - statistics.mean(ref_f)
        ratio = f"{rv / ov:.1f}x fewer" if ov > 0 else "hadis has none"
        print(
            f"\nover {args.seeds} seeds: violations hadis-ref {rv:.2%} vs hadis {ov:.2%} ({ratio}); "
            f"FID hadis-ref {statistics.mean(ref_f):.2f} vs hadis {statistics.mean(ours_f):.2f} ({df:+.2f})"
        )
        if kind == "surge":
            ok = ov * 2 <= rv and df <= 0.5
            rule = ">= 2x fewer violations, <= 0.5 FID given up"
        else:
            ok = ov <= rv and df <= 0.0
            rule = "no more violations, equal or better FID"
        verdicts.append(f"{'ok  ' if ok else 'MISS'} {name}: {rule}")
        print(f"acceptance ({rule}): {'ok' if ok else 'MISSED'}")
        print("\nablation (seed 0, profile timing): what each part of hadis buys\n")
        print("| variant | SLO violations | FID | degraded | dropped | model swaps | early re-plans |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        t = trace(profile, seed=0)
        for label, flags in ABLATIONS.items():
            s = run_system(label, data, t, ABLATION_SETTINGS, lambda ctx, f=flags: Hadis(ctx, **f)).summary
            print(
                f"| {label} | {s['slo_violation_ratio']:.2%} | {s['fid_mean']:.2f} | {s['degraded_share']:.2%} | "
                f"{s['dropped']} | {s['model_swaps']} | {s['early_replans']} |"
            )
    verdicts += holding(data, args.seeds)
    print("\n" + "\n".join(verdicts))
    print(f"\nwall time {time.perf_counter() - start:.1f} s")


def holding(data, seeds: int) -> list[str]:
    """hadis against hadis-ref with switch time charged, and hadis with holding off."""
    print("\n## Holding, with switch time charged (profile timing)\n")
    print(f"mean over {seeds} seeds; violations / FID\n")
    print("| trace | hadis-ref | hadis, holding off | hadis | ratio to hadis-ref | acceptance |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    off = dataclasses.replace(PROFILE_SETTINGS, dispatch="least-in-flight")
    verdicts = []
    for name, profile in HOLDING_SCENARIOS.items():
        figures: dict[str, list[tuple[float, float]]] = {"ref": [], "off": [], "ours": []}
        for seed in range(seeds):
            t = trace(profile, seed=seed)
            for key, system, settings in (("ref", "hadis-ref", PROFILE_SETTINGS), ("off", "hadis", off),
                                          ("ours", "hadis", PROFILE_SETTINGS)):  # fmt: skip
                sm = run_system(system, data, t, settings).summary
                figures[key].append((sm["slo_violation_ratio"], sm["fid_mean"]))
        mean = {k: (statistics.mean(v for v, _ in f), statistics.mean(x for _, x in f)) for k, f in figures.items()}
        (rv, rf), (ov, of), (hv, hf) = mean["ref"], mean["off"], mean["ours"]
        ok = hv * 2 <= rv and hf - rf <= 0.5
        ratio = f"{rv / hv:.0f}x fewer" if hv > 0 else "hadis has none"
        print(
            f"| {name} | {rv:.2%} / {rf:.2f} | {ov:.2%} / {of:.2f} | {hv:.2%} / {hf:.2f} | {ratio} | "
            f"{'ok' if ok else 'MISSED'} |"
        )
        verdicts.append(f"{'ok  ' if ok else 'MISS'} {name}, switch time charged: >= 2x fewer, <= 0.5 FID given up")
    return verdicts


if __name__ == "__main__":
    main()
