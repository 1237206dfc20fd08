"""Explain how two Pareto tables differ: shared rows, rows only in one, and why."""

from __future__ import annotations

from collections.abc import Sequence

from hadis.core.pareto import Config, _dominates


def _key(c: Config) -> tuple[str, str, float, float]:
    return (c.light, c.heavy, round(c.router_ratio, 6), round(c.disc_ratio, 6))


def compare(ours: Sequence[Config], theirs: Sequence[Config], grid: Sequence[Config]) -> str:
    """A plain-text report; ``grid`` supplies latencies for rows that lack them."""
    by_key = {_key(c): c for c in grid}
    ours_keys = {_key(c) for c in ours}
    theirs_keys = {_key(c) for c in theirs}
    lines = [
        f"ours: {len(ours)} rows (Pareto filter of {len(grid)} grid configurations on FID and expected latency)",
        f"theirs: {len(theirs)} rows; shared: {len(ours_keys & theirs_keys)}",
    ]
    only_theirs = [c for c in theirs if _key(c) not in ours_keys]
    if only_theirs:
        lines.append(f"only in theirs ({len(only_theirs)}), and why ours leaves each out:")
        for c in only_theirs:
            full = by_key.get(_key(c), c)
            dom = next((o for o in ours if _dominates(o, full)), None)
            why = f"dominated by {o_desc(dom)}" if dom else "not dominated (a tie on both objectives kept once in ours)"
            lines.append(f"  {o_desc(full)}: {why}")
    only_ours = [c for c in ours if _key(c) not in theirs_keys]
    if only_ours:
        lines.append(f"only in ours ({len(only_ours)}):")
        lines.extend(f"  {o_desc(c)}" for c in only_ours)
    pairs_ours = sorted({c.pair for c in ours})
    pairs_theirs = sorted({c.pair for c in theirs})
    lines.append(f"pairs in ours: {', '.join('->'.join(p) for p in pairs_ours)}")
    lines.append(f"pairs in theirs: {', '.join('->'.join(p) for p in pairs_theirs)}")
    return "\n".join(lines)


def o_desc(c: Config) -> str:
    lat = "?" if c.latency_s is None else f"{c.latency_s:.2f}s"
    return f"{c.light}->{c.heavy} r={c.router_ratio:.1f} d={c.disc_ratio:.1f} (FID {c.quality:.2f}, {lat})"
