"""Synthetic surge traces: seeded, the shapes asked for, and readable by the simulator."""

from __future__ import annotations

import numpy as np
import pytest

from hadis.cli import main
from hadis.core.errors import DataError
from hadis.sim import tracegen
from hadis.sim.data import parse_trace


def _counts_per_second(times: np.ndarray, duration_s: float) -> np.ndarray:
    return np.histogram(times, bins=int(duration_s), range=(0, duration_s))[0]


def test_same_seed_same_trace_other_seed_other_trace():
    prof = tracegen.staircase([2, 20], 30)
    a = tracegen.to_csv(*tracegen.arrivals(prof, seed=7))
    assert a == tracegen.to_csv(*tracegen.arrivals(prof, seed=7))
    assert a != tracegen.to_csv(*tracegen.arrivals(prof, seed=8))


def test_staircase_holds_each_level_for_its_step():
    prof = tracegen.staircase([2, 20, 40, 60], 60)
    assert prof.duration_s == 240 and prof.expected_arrivals == pytest.approx(60 * (2 + 20 + 40 + 60))
    times, prompts = tracegen.arrivals(prof, seed=0)
    per_step = np.histogram(times, bins=4, range=(0, 240))[0] / 60
    for got, want in zip(per_step, [2, 20, 40, 60], strict=True):
        assert abs(got - want) <= 5 * np.sqrt(want / 60)  # within 5 Poisson sigmas of the level
    assert np.all(np.diff(times) >= 0) and prompts.min() >= 0 and prompts.max() < 4000


def test_spikes_reach_the_peak_only_inside_each_spike():
    prof = tracegen.spikes(base=8, peak=64, every_s=60, width_s=5, duration_s=300)
    spike_bins = np.flatnonzero(prof.rates == 64)
    assert list(spike_bins[:5]) == [30, 31, 32, 33, 34] and len(spike_bins) == 5 * 5  # at 30, 90, ..., 270 s
    times, _ = tracegen.arrivals(prof, seed=1)
    counts = _counts_per_second(times, 300)
    inside, outside = counts[spike_bins].mean(), np.delete(counts, spike_bins).mean()
    assert 64 - 5 * np.sqrt(64 / 25) < inside < 64 + 5 * np.sqrt(64 / 25)
    assert 8 - 5 * np.sqrt(8 / 275) < outside < 8 + 5 * np.sqrt(8 / 275)


def test_maf_shape_follows_the_hourly_counts_scaled_onto_low_high(data_dir):
    hourly = tracegen.read_hourly((data_dir / "traces" / "maf_hourly_invocations.csv").read_text(), "hourly")
    prof = tracegen.maf(hourly, 1, 32)
    assert prof.rates.min() == pytest.approx(1) and prof.rates.max() == pytest.approx(32)
    assert np.corrcoef(prof.rates, hourly)[0, 1] == pytest.approx(1.0)
    times, _ = tracegen.arrivals(prof, seed=0)
    shipped = parse_trace((data_dir / "traces" / "maf_1to32qps.csv").read_text(), "maf_1to32qps")
    assert abs(len(times) - len(shipped)) / len(shipped) < 0.05  # HADIS's trace of the same shape
    ours = _counts_per_second(times, prof.duration_s)
    theirs = _counts_per_second(shipped.arrival_s, prof.duration_s)
    # one-second counts are Poisson-noisy; 10 s sums show the shared shape
    ours_10s, theirs_10s = ours[:340].reshape(34, 10).sum(1), theirs[:340].reshape(34, 10).sum(1)
    assert np.corrcoef(ours_10s, theirs_10s)[0, 1] > 0.9


def test_the_csv_is_the_simulators_trace_format():
    times, prompts = tracegen.arrivals(tracegen.spikes(8, 64, 20, 2, 60), seed=2)
    trace = parse_trace(tracegen.to_csv(times, prompts), "generated")
    assert len(trace) == len(times) and np.allclose(trace.arrival_s, times, atol=1e-6)
    assert list(trace.prompt) == list(prompts)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: tracegen.staircase([], 60), "at least one level"),
        (lambda: tracegen.staircase([2, -1], 60), "every level must be >= 0, got -1"),
        (lambda: tracegen.staircase([2], 0), "step seconds must be > 0"),
        (lambda: tracegen.spikes(8, 64, 60, 60, 300), "spike width (60 s) must be shorter than the period"),
        (lambda: tracegen.maf([1, 2, 3], 10, 10), "high (10) must be above low (10)"),
        (lambda: tracegen.maf([1], 1, 10), "at least two hourly counts"),
        (lambda: tracegen.read_hourly("hour,count\n0,1\n", "f.csv"), "'invocations' column"),
        (lambda: tracegen.arrivals(tracegen.staircase([1], 1), 0, prompts=0), "prompts must be >= 1"),
    ],
)
def test_bad_shapes_are_refused_with_a_clear_message(make, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_cli_writes_a_trace_and_refuses_bad_arguments(tmp_path, capsys):
    out = tmp_path / "stairs.csv"
    assert main(["trace", "gen", "staircase", "--levels", "2,20", "--step-seconds", "10", "--seed", "4",
                 "--out", str(out)]) == 0  # fmt: skip
    trace = parse_trace(out.read_text(), str(out))
    assert 150 < len(trace) < 290  # 220 expected
    assert "staircase:" in capsys.readouterr().err
    assert main(["trace", "gen", "spikes", "--width", "70"]) == 2
    assert "must be shorter than the period" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["trace", "gen", "staircase", "--levels", "2,x"])
    assert "expected comma-separated numbers" in capsys.readouterr().err
