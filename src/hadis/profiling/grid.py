"""The configuration grid's FID, assembled from cached features as the router would mix them.

A configuration of a pair (light, heavy) is a router share ``r`` and a discriminator share ``d``.
Each query is one (prompt, image) of the profiling set. Its image comes from the heavy model
when the router sends its prompt there (``routing.routes_to_heavy`` on the prompt's score
percentile) or when the discriminator escalates its light image (``routing.escalates`` on
the image's confidence percentile); otherwise from the light model. The FID of a configuration
is that of the mixed set against the reference set.

HADIS copied image files into a folder per configuration and re-extracted Inception features
for each. Here every query falls in one cell (the first grid router share that routes it, the
first grid discriminator share that escalates it), each cell's ``Moments`` are summed once per
model, and a configuration's light images are the cells beyond both of its shares: a 2-D
suffix sum. The heavy images are all heavy ones minus that same suffix. So the features are
read once, and each configuration costs one small sum and one ``eigvalsh``. Configurations
that select the same images (every ``r = 1`` or ``d = 1`` one is all heavy) are computed once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from hadis.core.pareto import Config
from hadis.core.routing import escalates, routes_to_heavy
from hadis.profiling.fid import Moments, Projected, Reference, frechet_distance

SHARES = tuple(round(i / 10, 1) for i in range(11))  # HADIS's grid: 0, 0.1, ..., 1


@dataclass(frozen=True)
class PairInputs:
    """One pair's cached inputs. ``light`` and ``heavy``: features [P, K, D] per prompt and image;
    ``score_pct``: the router score's percentile per prompt [P]; ``conf_pct``: the light image's
    discriminator confidence percentile [P, K]."""

    light_name: str
    heavy_name: str
    light: np.ndarray
    heavy: np.ndarray
    score_pct: np.ndarray
    conf_pct: np.ndarray


def first_share(values: np.ndarray, shares: Sequence[float], hit: Callable[[float, float], bool]) -> np.ndarray:
    """Per value, the index of the first share at which ``hit(value, share)`` holds (len(shares)
    if none). The routing rules are monotone in the share, so a query is taken by every share
    from that one on."""
    out = np.full(values.shape, len(shares), dtype=np.int64)
    flat = values.reshape(-1)
    res = out.reshape(-1)
    for i, v in enumerate(flat):
        for j, s in enumerate(shares):
            if hit(float(v), s):
                res[i] = j
                break
    return out


def cells(inputs: PairInputs, router_shares: Sequence[float], disc_shares: Sequence[float]) -> tuple[np.ndarray, ...]:
    """(router cell [P, K], discriminator cell [P, K]) of every query."""
    k = inputs.conf_pct.shape[1]
    a = first_share(inputs.score_pct, router_shares, routes_to_heavy)
    b = first_share(inputs.conf_pct, disc_shares, escalates)
    return np.repeat(a[:, None], k, axis=1), b


def assemble(
    inputs: PairInputs,
    ref: Reference,
    latency: Callable[[float, float], float] | None = None,
    router_shares: Sequence[float] = SHARES,
    disc_shares: Sequence[float] = SHARES,
    memo: dict | None = None,
) -> list[Config]:
    """Every (r, d) configuration of the pair with its FID (and expected latency per query from
    ``latency(r, d)``). ``memo`` shares all-light and all-heavy results across pairs."""
    memo = {} if memo is None else memo
    a, b = cells(inputs, router_shares, disc_shares)
    nr, nd = len(router_shares), len(disc_shares)
    dim = inputs.light.shape[-1]
    light = _projected(memo, inputs.light_name, inputs.light.reshape(-1, dim), ref)
    heavy = _projected(memo, inputs.heavy_name, inputs.heavy.reshape(-1, dim), ref)
    a, b = a.reshape(-1), b.reshape(-1)
    heavy_all = heavy.moments()
    # delta[i][j]: light minus heavy moments of the queries in cells beyond (i, j): a > i and b > j.
    # Built a row at a time from the last: suffix(i) = suffix(i + 1) + row i + 1's cells beyond j.
    zero = Moments.zero(ref)
    counts = np.zeros((nr + 1, nd + 1), dtype=np.int64)
    np.add.at(counts, (a, b), 1)
    results: dict[tuple[int, int], float] = {}
    suffix = [zero] * nd  # for i = nr - 1: cells with a > nr - 1, i.e. a == nr (never routed)
    for i in range(nr - 1, -1, -1):
        row = i + 1
        in_row = a == row
        row_delta = [zero] * (nd + 1)
        for col in range(nd + 1):
            sel = in_row & (b == col)
            if sel.any():
                row_delta[col] = light.moments(sel) - heavy.moments(sel)
        beyond = zero
        new_suffix = [zero] * nd
        for j in range(nd - 1, -1, -1):
            beyond = beyond + row_delta[j + 1]
            new_suffix[j] = suffix[j] + beyond
        suffix = new_suffix
        for j in range(nd):
            light_cells = tuple((x, y) for x in range(i + 1, nr + 1) for y in range(j + 1, nd + 1) if counts[x, y])
            n_light = int(sum(counts[x, y] for x, y in light_cells))
            if n_light == 0:
                key = ("heavy only", inputs.heavy_name)
            elif n_light == len(a):
                key = ("light only", inputs.light_name)
            else:
                key = (inputs.light_name, inputs.heavy_name, light_cells)
            if key not in memo:
                memo[key] = frechet_distance(heavy_all + suffix[j], ref)
            results[(i, j)] = memo[key]
    out = []
    for i, r in enumerate(router_shares):
        for j, d in enumerate(disc_shares):
            lat = None if latency is None else latency(r, d)
            out.append(Config(inputs.light_name, inputs.heavy_name, r, d, round(results[(i, j)], 6), lat))
    return out


def _projected(memo: dict, name: str, features: np.ndarray, ref: Reference) -> Projected:
    """A model's projected features, once per reference (a light model is in several pairs)."""
    key = ("projected", name, id(ref))
    if key not in memo:
        memo[key] = Projected.of(features, ref)
    return memo[key]


def mixed_features(inputs: PairInputs, router_ratio: float, disc_ratio: float) -> np.ndarray:
    """The features of a configuration's images, one query at a time: the direct (slow) mix that
    the tests and the benchmark compare ``assemble`` with."""
    p, k, _ = inputs.light.shape
    rows = []
    for i in range(p):
        routed = routes_to_heavy(float(inputs.score_pct[i]), router_ratio)
        for j in range(k):
            heavy = routed or escalates(float(inputs.conf_pct[i, j]), disc_ratio)
            rows.append(inputs.heavy[i, j] if heavy else inputs.light[i, j])
    return np.stack(rows)
