"""Plan time: the 49-row HADIS table at 16 GPUs and the 726-row grid at 256 GPUs.

Targets: under 20 ms and under 200 ms. Prints the median and worst of repeated runs over a
range of demands, for both policies, and the ratio ours / reference.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from hadis.core.pareto import ParetoTable
from hadis.core.planner import Demand, plan_cascade, plan_hadis_reference
from hadis.sim.data import load_data_dir

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default=str(ROOT / "data" / "hadis"))
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    d = load_data_dir(args.data_dir, 0.1)
    full = ParetoTable(d.grid.configs, d.grid)
    cases = [
        ("49-row table, 16 GPUs", d.hadis_table, 16, [2, 10, 30, 60], 20.0),
        ("726-row grid, 256 GPUs", full, 256, [30, 150, 600, 1000], 200.0),
    ]
    print(f"{'case':26s} {'policy':10s} {'median ms':>10s} {'max ms':>8s} {'target':>8s}")
    for name, table, gpus, demands, target in cases:
        medians = {}
        for policy, fn in (("hadis", plan_cascade), ("hadis-ref", plan_hadis_reference)):
            times = []
            for lam in demands:
                times += timed(
                    lambda fn=fn, lam=lam, t=table, g=gpus: fn(d.profile, t, g, 6.0, Demand(lam)), args.repeats
                )
            medians[policy] = statistics.median(times)
            ok = "ok" if max(times) < target else "MISSED"
            print(f"{name:26s} {policy:10s} {medians[policy]:10.2f} {max(times):8.2f} {target:7.0f}  {ok}")
        print(f"{name:26s} ratio hadis / hadis-ref: {medians['hadis'] / medians['hadis-ref']:.2f}x")


if __name__ == "__main__":
    main()
