"""The FID grid of ``hadis profile run`` at HADIS's scale, from cached features.

HADIS's grid: 4 variants, 6 ordered pairs x 11 router shares x 11 discriminator shares = 726
configurations, each over 5,000 prompts x 4 images = 20,000 images, 2048 Inception features.
The features are synthesised here (Gaussian, a different mean and spread per variant, a random
correlation structure), as no model runs for this benchmark; the grid's work does not depend on
what the numbers are.

Printed, all measured in this run:
- ``assemble``: the whole 726-configuration grid from the cached features (cell moments and
  one eigendecomposition per distinct mix);
- the direct way from the same cached features: mix each configuration's 20,000 feature rows,
  take their mean and covariance and the field's FID (torch-fidelity's eigenvalues of
  ``S1 @ S2``), timed on a few configurations and multiplied out to 726;
- re-extracting features per configuration, as HADIS's scripts did: the FID Inception-v3's
  forward pass timed on this machine (random weights cost the same time), times 726 x 20,000.

Usage: python benchmarks/bench_profile_grid.py [--prompts 5000] [--images 4] [--dim 2048]
       [--reference 10000] [--direct 3]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from hadis.core.pareto import heavy_share
from hadis.core.routing import percentiles
from hadis.profiling.fid import Reference
from hadis.profiling.grid import PairInputs, assemble, mixed_features

MODELS = ("light-a", "light-b", "mid", "heavy")


def synthesise(rng, n: int, dim: int, shift: float, spread: float, mix: np.ndarray) -> np.ndarray:
    z = rng.standard_normal((n, dim), dtype=np.float32)
    return (z @ mix) * spread + shift


def field_fid(x: np.ndarray, mu_ref: np.ndarray, s_ref: np.ndarray) -> float:
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    stats = {"mu": x.mean(axis=0), "sigma": np.cov(x, rowvar=False)}
    return fid_statistics_to_metric(stats, {"mu": mu_ref, "sigma": s_ref}, False)[KEY_METRIC_FID]


def inception_seconds_per_image(batch: int = 8, rounds: int = 2) -> float:
    import torch

    from hadis.profiling.features import build

    net = build("random-inception")
    images = np.random.default_rng(0).integers(0, 255, (batch, 512, 512, 3), dtype=np.uint8)
    net.extract(images[:2])  # warm-up
    t = time.perf_counter()
    for _ in range(rounds):
        net.extract(images)
    del torch
    return (time.perf_counter() - t) / (rounds * batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=5000)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--reference", type=int, default=10_000, help="reference images (>= dim: full rank)")
    ap.add_argument("--direct", type=int, default=3, help="configurations timed the direct way")
    args = ap.parse_args()
    p, k, d = args.prompts, args.images, args.dim
    rng = np.random.default_rng(0)
    print(f"synthesising features: {len(MODELS)} variants x {p * k} images x {d}, reference {args.reference} images")
    mix = (np.eye(d) + rng.standard_normal((d, d)) / np.sqrt(d) * 0.5).astype(np.float32)
    feats = {
        m: synthesise(rng, p * k, d, 0.05 * (3 - i), 1.0 + 0.1 * i, mix).reshape(p, k, d) for i, m in enumerate(MODELS)
    }
    ref_x = synthesise(rng, args.reference, d, 0.0, 1.25, mix)
    scores = {m: percentiles(rng.random(p)) for m in MODELS[:-1]}
    confs = {m: percentiles(rng.random(p * k)).reshape(p, k) for m in MODELS[:-1]}
    lat = {m: 0.5 * (i + 1) for i, m in enumerate(MODELS)}

    t0 = time.perf_counter()
    ref = Reference.of(ref_x)
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    grid, memo = [], {}
    pairs = [(a, b) for i, a in enumerate(MODELS[:-1]) for b in MODELS[i + 1 :]]
    for light, heavy in pairs:
        inputs = PairInputs(light, heavy, feats[light], feats[heavy], scores[light], confs[light])
        ll, lh = lat[light], lat[heavy]
        grid += assemble(inputs, ref, lambda r, dd, ll=ll, lh=lh: (1 - r) * ll + heavy_share(r, dd) * lh, memo=memo)
    t_grid = time.perf_counter() - t0
    mixes = sum(1 for key in memo if key[0] != "projected")
    print(f"reference statistics: {t_ref:.1f}s (rank {ref.rank})")
    print(f"assemble: {len(grid)} configurations x {p * k} images in {t_grid:.1f}s "
          f"({mixes} distinct mixes; {t_grid / len(grid) * 1000:.0f} ms per configuration)")  # fmt: skip

    # the direct way, from the same cached features
    mu_ref, s_ref = ref_x.mean(axis=0, dtype=np.float64), np.cov(ref_x, rowvar=False)
    light, heavy = pairs[0]
    inputs = PairInputs(light, heavy, feats[light], feats[heavy], scores[light], confs[light])
    picks = [(0.3, 0.2), (0.5, 0.5), (0.1, 0.7), (0.7, 0.1), (0.2, 0.4)][: args.direct]
    worst = 0.0
    t0 = time.perf_counter()
    for r, dd in picks:
        direct = field_fid(mixed_features(inputs, r, dd).astype(np.float64), mu_ref, s_ref)
        ours = next(c.quality for c in grid if c.pair == (light, heavy) and (c.router_ratio, c.disc_ratio) == (r, dd))
        worst = max(worst, abs(direct - ours))
    per_direct = (time.perf_counter() - t0) / len(picks)
    print(f"direct mix + statistics + the field's FID: {per_direct:.2f}s per configuration (timed on {len(picks)}), "
          f"x {len(grid)} = {per_direct * len(grid):.0f}s; the same FIDs as assemble within {worst:.1e}")  # fmt: skip
    per_image = inception_seconds_per_image()
    reextract = per_image * len(grid) * p * k
    print(f"re-extracting per configuration: FID Inception-v3 forward {per_image * 1000:.0f} ms per image on this "
          f"CPU ({os.cpu_count()} cores) x {len(grid)} x {p * k} images = {reextract / 3600:.0f} h")  # fmt: skip
    print(f"speed-up of assemble: {per_direct * len(grid) / t_grid:.1f}x over the direct way from cached features, "
          f"{reextract / t_grid:,.0f}x over re-extracting per configuration")  # fmt: skip


if __name__ == "__main__":
    main()
