"""The latency profiler: ``hadis profile latency --model SPEC --batch-sizes 1,2,4,8 --device cpu|cuda``.

Times what the worker serves at each batch size: the Triton callable's work (``make_generate``:
the pipeline, PNG encoding and, on a model with a discriminator, its confidences), warm-up
runs, then timed repeats. Records p50
and p90 seconds per batch and peak memory, marks a size that runs out of memory infeasible (and
every larger one), and writes the ``hadis.profile/v1`` format the planner reads: p50 as the
measured latency, p90 and memory under ``provenance.measurements``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hadis.core.profile import LatencyCurve, ModelProfile, Profile
from hadis.workers.spec import ModelSpec


@dataclass(frozen=True)
class BatchResult:
    batch: int
    seconds: tuple[float, ...] = ()
    peak_bytes: int | None = None
    oom: bool = False

    @property
    def p50(self) -> float:
        return statistics.median(self.seconds)

    @property
    def p90(self) -> float:
        s = sorted(self.seconds)
        return s[min(len(s) - 1, round(0.9 * (len(s) - 1)))]


def build_profile(
    spec: ModelSpec, device_name: str, results: Sequence[BatchResult], load_s: float | None = None
) -> Profile:
    """The profile file's content from measured batches and load time (pure)."""
    measured = {r.batch: round(r.p50, 6) for r in results if not r.oom}
    if not measured:
        raise ValueError(f"{spec.name}: no batch size ran on {device_name}")
    infeasible = frozenset(r.batch for r in results if r.oom)
    first_oom = min(infeasible) if infeasible else None
    curve = LatencyCurve(
        measured=measured,
        rule="interpolate",
        max_batch=(first_oom - 1) if first_oom else max(measured),
        infeasible=infeasible,
    )
    model = ModelProfile(
        name=spec.name,
        source=spec.source,
        steps=spec.steps,
        guidance=spec.guidance,
        resolution=spec.width,
        latency=curve,
        load_seconds=None if load_s is None else round(load_s, 3),
    )
    measurements = {
        spec.name: {
            r.batch: {"oom": True}
            if r.oom
            else {
                "p50_s": round(r.p50, 6),
                "p90_s": round(r.p90, 6),
                "repeats": len(r.seconds),
                "peak_memory_mib": None if r.peak_bytes is None else round(r.peak_bytes / 2**20, 1),
            }
            for r in results
        }
    }
    batch_sizes = tuple(sorted(r.batch for r in results))
    provenance = {
        "source": "hadis profile latency",
        "timed": "the served callable: pipeline, PNG encoding, discriminator"
        if spec.discriminator.enabled
        else "the served callable: pipeline, PNG encoding",
        "weights": "tiny, random" if spec.tiny else spec.source,
        "dtype": spec.dtype,
        "measurements": measurements,
    }
    return Profile(device=device_name, models=(model,), batch_sizes=batch_sizes, provenance=provenance)


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or "out of memory" in str(e).lower()


@dataclass
class Served:
    """A loaded variant as a worker serves it: the pipeline, its discriminator and the callable."""

    spec: ModelSpec
    pipe: Any
    discriminator: Any
    generate: Callable[[list[str], list[int]], dict[str, list]]
    device: str
    load_s: float | None = None  # from the weight cache, when loaded from one


def load_served(
    spec: ModelSpec, device: str = "cpu", weights_cache: Path | None = None, progress: Callable[[str], None] = print
) -> Served:
    """Load the spec's pipeline (and discriminator) on ``device``, as ``hadis worker serve`` does."""
    import torch

    from hadis.workers.cache import fetch
    from hadis.workers.pipelines import build_discriminator, load_pipeline
    from hadis.workers.server import make_generate

    weights = None
    if weights_cache is not None:
        got = fetch(spec, weights_cache)
        progress(f"weights of {spec.name}: {'fetched' if got.downloaded else 'in the cache'} at {got.path}")
        weights = got.path
    progress(f"loading {spec.name} ({spec.pipeline}, {'tiny' if spec.tiny else spec.source}) on {device}")
    t_load = time.perf_counter()
    pipe = load_pipeline(spec, device, weights)
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    load_s = time.perf_counter() - t_load if weights is not None else None
    if load_s is not None:
        progress(f"  loaded from the cache in {load_s:.2f}s")
    disc = None
    if spec.discriminator.enabled:
        disc = build_discriminator(spec.discriminator.architecture, spec.discriminator.weights, device)
    return Served(spec, pipe, disc, make_generate(spec, pipe, disc), device, load_s)


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def time_served(
    served: Served,
    batch_sizes: Sequence[int],
    warmup: int = 1,
    repeats: int = 5,
    progress: Callable[[str], None] = print,
) -> Profile:
    """Time the served callable at each batch size; a size that runs out of memory is infeasible,
    and so is every larger one."""
    import torch

    device = served.device
    cuda = device.startswith("cuda")
    results: list[BatchResult] = []
    for b in sorted(batch_sizes):
        if results and results[-1].oom:
            results.append(BatchResult(b, oom=True))  # larger than a size that already ran out
            progress(f"  batch {b:3d}: skipped (a smaller batch ran out of memory)")
            continue

        def run(b=b) -> None:
            served.generate(["a photograph of an astronaut riding a horse"] * b, list(range(b)))
            if cuda:
                torch.cuda.synchronize(device)

        try:
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            else:
                _reset_peak_rss()
            for _ in range(warmup):
                run()
            times = []
            for k in range(repeats):
                t = time.perf_counter()
                run()
                times.append(time.perf_counter() - t)
                progress(f"  batch {b:3d}: run {k + 1}/{repeats} {times[-1]:.3f}s")
            peak = torch.cuda.max_memory_allocated(device) if cuda else _peak_rss()
            results.append(BatchResult(b, tuple(times), peak))
            r = results[-1]
            progress(f"  batch {b:3d}: p50 {r.p50:.3f}s  p90 {r.p90:.3f}s  peak {(peak or 0) / 2**20:.0f} MiB")
        except (RuntimeError, MemoryError) as e:
            if not _is_oom(e):
                raise
            results.append(BatchResult(b, oom=True))
            progress(f"  batch {b:3d}: out of memory, marked infeasible")
    return build_profile(served.spec, device_name(device), results, served.load_s)


def profile_latency(
    spec: ModelSpec,
    batch_sizes: Sequence[int],
    device: str = "cpu",
    warmup: int = 1,
    repeats: int = 5,
    progress: Callable[[str], None] = print,
    weights_cache: Path | None = None,
) -> Profile:
    """Load, then time each batch size; with ``weights_cache``, also the load from the cache (the
    planner's model-load time: ``load_seconds``)."""
    served = load_served(spec, device, weights_cache, progress)
    return time_served(served, batch_sizes, warmup, repeats, progress)


def _reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def _peak_rss() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
