"""The E1 comparison as the HADIS artifact runs it, the paper's picture, and hadis / hadis-ref.

Runs all seven systems on E1 (maf_1to64qps, 16 GPUs, SLO 6 s, time scale 0.1, the artifact's
worker timing, each system dispatched as it runs), checks the paper's picture, then hadis
against hadis-ref on maf_1to64qps and maf_1to32qps (8 GPUs), then every system with the
shared per-model queue instead of its own dispatch (how much the dispatch rule matters).
Prints figures measured in this run; staircase and spike traces are in ``bench_surge.py``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hadis.sim.data import load_data_dir, load_trace
from hadis.sim.policies import SYSTEMS, Hadis
from hadis.sim.report import markdown_table
from hadis.sim.run import SimSettings, run_system, run_systems

ROOT = Path(__file__).resolve().parents[1]
E1 = SimSettings(16, 6.0, 0.1)


def ratio_line(name: str, ref: dict, ours: dict) -> str:
    rv, ov = ref["slo_violation_ratio"], ours["slo_violation_ratio"]
    ratio = f"{rv / ov:.1f}x" if ov > 0 else "inf (hadis has none)"
    gpu_ref, gpu_ours = (sum(s["gpu_seconds_per_model"].values()) for s in (ref, ours))
    return (
        f"{name}: violations hadis-ref {rv:.2%} vs hadis {ov:.2%} -> {ratio} fewer; "
        f"FID hadis-ref {ref['fid_mean']:.3f} vs hadis {ours['fid_mean']:.3f} "
        f"(delta {ours['fid_mean'] - ref['fid_mean']:+.3f}, negative is better); "
        f"GPU-seconds {gpu_ref:.0f} vs {gpu_ours:.0f}"
    )


def picture(by: dict) -> list[str]:
    """The paper's E1 picture, each claim checked on this run's figures."""
    viol = {k: v["slo_violation_ratio"] for k, v in by.items()}
    fid = {k: v["fid_mean"] for k, v in by.items()}
    out = [
        f"{'ok  ' if max(viol, key=viol.get) == 'clipper-heavy' else 'MISS'} clipper-heavy violates most "
        f"({viol['clipper-heavy']:.2%})",
        f"{'ok  ' if max(fid, key=fid.get) == 'clipper-light' else 'MISS'} clipper-light has the worst FID "
        f"({fid['clipper-light']:.2f})",
    ]
    for other in ("diffserve", "proteus", "infaas-acc"):
        ref, o = viol["hadis-ref"], viol[other]
        fewer = o >= 2.7 * ref or (o < 0.001 and ref < 0.001)
        ok = fid["hadis-ref"] < fid[other] and fewer
        times = f"{o / ref:.1f}x" if ref > 0 else "inf"
        out.append(
            f"{'ok  ' if ok else 'MISS'} hadis-ref vs {other}: FID {fid['hadis-ref']:.2f} vs {fid[other]:.2f}, "
            f"violations {ref:.2%} vs {o:.2%} ({times} fewer; paper: >= 2.7x)"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default=str(ROOT / "data" / "hadis"))
    args = ap.parse_args()
    data = load_data_dir(args.data_dir, 0.1)
    traces = Path(args.data_dir) / "traces"
    e1_trace = load_trace(traces / "maf_1to64qps.csv")
    start = time.perf_counter()
    runs = run_systems(SYSTEMS, data, e1_trace, E1)
    wall = time.perf_counter() - start
    print(markdown_table(runs))
    print(f"\nall seven systems on E1: {wall:.1f}s wall (target < 60 s) -> {'ok' if wall < 60 else 'MISSED'}\n")
    by = {r.system: r.summary for r in runs}
    print("\n".join(picture(by)) + "\n")
    print(ratio_line("E1 maf_1to64qps, 16 GPUs", by["hadis-ref"], by["hadis"]))
    small = run_systems(["hadis-ref", "hadis"], data, load_trace(traces / "maf_1to32qps.csv"), SimSettings(8, 6.0, 0.1))
    print(ratio_line("maf_1to32qps, 8 GPUs", small[0].summary, small[1].summary))
    print("\nGPUs against quality and violations on E1 (hadis: the whole budget, or only the GPUs that buy FID):\n")
    print("| variant | violations | FID | GPU-seconds | share of hadis-ref's |")
    print("| --- | ---: | ---: | ---: | ---: |")
    ref_gpu = sum(by["hadis-ref"]["gpu_seconds_per_model"].values())
    variants = {
        "hadis (spareGpus: Keep, the replay's default)": by["hadis"],
        "hadis (spareGpus: Release, the operator's default)": run_system(
            "hadis", data, e1_trace, E1, lambda ctx: Hadis(ctx, fill_budget=False)
        ).summary,
        "hadis-ref": by["hadis-ref"],
    }
    for label, sm in variants.items():
        gpu_s = sum(sm["gpu_seconds_per_model"].values())
        print(
            f"| {label} | {sm['slo_violation_ratio']:.2%} | {sm['fid_mean']:.2f} | {gpu_s:.0f} | "
            f"{gpu_s / ref_gpu:.2f} |"
        )
    print("\nE1 with one shared queue per model instead of each system's own dispatch (an ablation):\n")
    shared = run_systems(SYSTEMS, data, e1_trace, SimSettings(16, 6.0, 0.1, dispatch="model-queue"))
    print("| system | own dispatch: violations | FID | shared queue: violations | FID |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for own, sh in zip(runs, shared, strict=True):
        a, b = own.summary, sh.summary
        print(
            f"| {own.system} | {a['slo_violation_ratio']:.2%} | {a['fid_mean']:.2f} | "
            f"{b['slo_violation_ratio']:.2%} | {b['fid_mean']:.2f} |"
        )


if __name__ == "__main__":
    main()
