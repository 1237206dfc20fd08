"""The E1 comparison and the hadis / hadis-ref ratios, with wall time.

Runs all seven systems on E1 (maf_1to64qps, 16 GPUs, SLO 6 s, time scale 0.1), then hadis and
hadis-ref on maf_1to32qps at 8 GPUs, and prints violation ratios and FID deltas measured in
this run. Target: all seven systems on E1 in under 60 s.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hadis.sim.data import load_data_dir, load_trace
from hadis.sim.policies import SYSTEMS
from hadis.sim.report import markdown_table
from hadis.sim.run import SimSettings, run_systems

ROOT = Path(__file__).resolve().parents[1]


def ratio_line(name: str, ref: dict, ours: dict) -> str:
    rv, ov = ref["slo_violation_ratio"], ours["slo_violation_ratio"]
    ratio = f"{rv / ov:.1f}x" if ov > 0 else "inf (hadis has none)"
    return (
        f"{name}: violations hadis-ref {rv:.2%} vs hadis {ov:.2%} -> {ratio} fewer; "
        f"FID hadis-ref {ref['fid_mean']:.3f} vs hadis {ours['fid_mean']:.3f} "
        f"(delta {ours['fid_mean'] - ref['fid_mean']:+.3f}, negative is better)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default=str(ROOT / "data" / "hadis"))
    args = ap.parse_args()
    data = load_data_dir(args.data_dir, 0.1)
    traces = Path(args.data_dir) / "traces"
    start = time.perf_counter()
    runs = run_systems(SYSTEMS, data, load_trace(traces / "maf_1to64qps.csv"), SimSettings(16, 6.0, 0.1))
    wall = time.perf_counter() - start
    print(markdown_table(runs))
    print(f"\nall seven systems on E1: {wall:.1f}s wall (target < 60 s) -> {'ok' if wall < 60 else 'MISSED'}")
    by = {r.system: r.summary for r in runs}
    print(ratio_line("E1 maf_1to64qps, 16 GPUs", by["hadis-ref"], by["hadis"]))
    small = run_systems(["hadis-ref", "hadis"], data, load_trace(traces / "maf_1to32qps.csv"), SimSettings(8, 6.0, 0.1))
    print(ratio_line("maf_1to32qps, 8 GPUs", small[0].summary, small[1].summary))


if __name__ == "__main__":
    main()
