"""Synthetic arrival traces for surge experiments: staircase, spikes, and MAF-shaped load.

Each shape is a piecewise-constant rate (requests per second per bin); arrivals are a
non-homogeneous Poisson process drawn bin by bin (a Poisson count per bin, uniform times inside
it) from a seeded ``numpy`` generator, so one seed gives one trace on every machine. Prompt
indices are drawn uniformly from ``0 .. prompts-1`` (4,000 by default: the prompts that have
discriminator data). The output is the simulator's trace format, ``arrival_ms,prompt_index``.

Shapes (rates in req/s, times in trace seconds):
- ``staircase(levels, step_s)``: each level held for ``step_s``, in order (e.g. 2-20-40-60).
- ``spikes(base, peak, every_s, width_s, duration_s, first_s)``: ``base``, with ``peak`` for
  ``width_s`` every ``every_s`` starting at ``first_s``.
- ``maf(hourly, low, high, seconds_per_hour)``: the Azure Functions hourly invocation counts
  scaled linearly onto ``low .. high``, one hour per ``seconds_per_hour`` (as HADIS's
  ``maf_1to*qps`` traces: 347 hours in about 347 s).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hadis.core.errors import DataError
from hadis.sim.data import Trace


@dataclass(frozen=True)
class RateProfile:
    """A piecewise-constant arrival rate: ``rates[i]`` req/s over ``[i*bin_s, (i+1)*bin_s)``."""

    rates: np.ndarray
    bin_s: float
    shape: str

    @property
    def duration_s(self) -> float:
        return len(self.rates) * self.bin_s

    @property
    def expected_arrivals(self) -> float:
        return float(self.rates.sum() * self.bin_s)


def _check(name: str, value: float, minimum: float = 0.0, strict: bool = False) -> None:
    bad = value <= minimum if strict else value < minimum
    if bad or not np.isfinite(value):
        raise DataError("trace gen", f"{name} must be {'>' if strict else '>='} {minimum:g}, got {value:g}")


def staircase(levels: Sequence[float], step_s: float, bin_s: float = 1.0) -> RateProfile:
    if not levels:
        raise DataError("trace gen", "a staircase needs at least one level")
    for lv in levels:
        _check("every level", lv)
    _check("step seconds", step_s, strict=True)
    per = max(1, round(step_s / bin_s))
    return RateProfile(np.repeat(np.asarray(levels, dtype=float), per), bin_s, "staircase")


def spikes(
    base: float, peak: float, every_s: float, width_s: float, duration_s: float, first_s: float | None = None,
    bin_s: float = 1.0,
) -> RateProfile:  # fmt: skip
    _check("base", base)
    _check("peak", peak)
    _check("every", every_s, strict=True)
    _check("width", width_s, strict=True)
    _check("duration", duration_s, strict=True)
    if width_s >= every_s:
        raise DataError("trace gen", f"spike width ({width_s:g} s) must be shorter than the period ({every_s:g} s)")
    first = every_s / 2 if first_s is None else first_s
    n = max(1, round(duration_s / bin_s))
    t = np.arange(n) * bin_s
    phase = (t - first) % every_s
    in_spike = (t >= first) & (phase < width_s)
    return RateProfile(np.where(in_spike, peak, base).astype(float), bin_s, "spikes")


def maf(hourly: Sequence[float], low: float, high: float, seconds_per_hour: float = 1.0) -> RateProfile:
    if len(hourly) < 2:
        raise DataError("trace gen", "the MAF shape needs at least two hourly counts")
    _check("low", low)
    _check("seconds per hour", seconds_per_hour, strict=True)
    if high <= low:
        raise DataError("trace gen", f"high ({high:g}) must be above low ({low:g})")
    h = np.asarray(hourly, dtype=float)
    span = h.max() - h.min()
    scaled = np.full_like(h, (low + high) / 2) if span == 0 else low + (h - h.min()) / span * (high - low)
    return RateProfile(scaled, seconds_per_hour, "maf")


def read_hourly(text: str, source: str) -> list[float]:
    """The ``invocations`` column of ``maf_hourly_invocations.csv``."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or "invocations" not in rows[0]:
        raise DataError(source, "expected a CSV with an 'invocations' column")
    try:
        return [float(r["invocations"]) for r in rows]
    except ValueError as e:
        raise DataError(source, f"invocations must be numbers: {e}") from None


def arrivals(profile: RateProfile, seed: int, prompts: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """Seconds of each arrival (sorted) and its prompt index."""
    if prompts < 1:
        raise DataError("trace gen", f"prompts must be >= 1, got {prompts}")
    rng = np.random.default_rng(seed)
    counts = rng.poisson(profile.rates * profile.bin_s)
    starts = np.repeat(np.arange(len(counts)) * profile.bin_s, counts)
    times = np.sort(starts + rng.uniform(0.0, profile.bin_s, size=starts.size))
    return times, rng.integers(0, prompts, size=times.size)


def trace(profile: RateProfile, seed: int, prompts: int = 4000) -> Trace:
    """The arrivals as a replayable trace, named after the shape and the seed."""
    times, prompt = arrivals(profile, seed, prompts)
    return Trace(times, prompt, f"{profile.shape} (seed {seed})")


def to_csv(times_s: np.ndarray, prompt: np.ndarray) -> str:
    out = io.StringIO()
    out.write("arrival_ms,prompt_index\n")
    for t, p in zip(times_s, prompt, strict=True):
        out.write(f"{t * 1000:.3f},{int(p)}\n")
    return out.getvalue()
