"""Profile drift: the workers' served batch latency against the profile's (pure).

The planner's capacity model is the profile: seconds per batch at each batch size. When the
workers run slower or faster than that (another GPU model, a new driver, a changed pipeline, a
noisy neighbour), every plan is wrong by that much. The operator reads what Triton measured in
Prometheus over ``spec.profileDrift.window``:

- seconds per batch: Triton charges each request in a batch the batch's compute time (input,
  inference, output), so the compute time summed over requests divided by the requests is the
  mean batch's time;
- the mean batch size: requests per execution;

compares the first with the profile's latency at that batch size, and sets ``ProfileDrift``:
True with both figures when a model is off by more than ``tolerance``, False when the models
judged are within it, Unknown until some model has executed ``minBatches`` batches in the
window (a model with fewer is named as not judged: an idle heavy tier says nothing).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hadis.core.profile import Profile
from hadis.operator.spec import ModelEntry

CONDITION = "ProfileDrift"

# Increases over the window per (namespace, pod, model) of every Triton in Prometheus: one answer
# serves every cascade (``cascade_totals`` picks a cascade's pods), so 100 cascades do not cost
# Prometheus 300 queries per re-plan interval.
BY = "namespace, pod, model"
QUERIES = {
    "compute_us": f"sum by ({BY}) (increase(nv_inference_compute_input_duration_us[{{window}}]) "
    f"+ increase(nv_inference_compute_infer_duration_us[{{window}}]) "
    f"+ increase(nv_inference_compute_output_duration_us[{{window}}]))",
    "requests": f"sum by ({BY}) (increase(nv_inference_count[{{window}}]))",
    "executions": f"sum by ({BY}) (increase(nv_inference_exec_count[{{window}}]))",
}


@dataclass(frozen=True)
class Served:
    """One model's serving over the window, from Triton's counters."""

    model: str
    batch_s: float | None  # mean seconds per batch (None: no request in the window)
    batch: float | None  # mean batch size
    batches: float  # executions in the window


@dataclass(frozen=True)
class Finding:
    model: str
    served: Served
    profiled_s: float | None  # the profile's seconds per batch at the served mean batch size

    @property
    def ratio(self) -> float | None:
        if self.served.batch_s is None or not self.profiled_s:
            return None
        return self.served.batch_s / self.profiled_s


def triton_models(models: Sequence[ModelEntry]) -> dict[str, str]:
    """The cascade's model name -> the Triton model name its workers serve (the worker spec's name)."""
    from hadis.core.errors import DataError
    from hadis.workers.spec import find_spec

    out = {}
    for m in models:
        try:
            out[m.name] = find_spec(m.worker_spec).name
        except (DataError, OSError):  # a spec file only the worker image has: its file name
            out[m.name] = m.worker_spec.rsplit("/", 1)[-1].removesuffix(".yaml")
    return out


def queries(window: str) -> dict[str, str]:
    return {k: q.format(window=window) for k, q in QUERIES.items()}


def pod_pattern(deployments: Sequence[str]) -> re.Pattern[str]:
    """A cascade's worker pods: ``<deployment>-<replica set hash>-<suffix>``."""
    names = "|".join(re.escape(d) for d in sorted(deployments))
    return re.compile(f"^({names})-[a-z0-9]+-[a-z0-9]+$")


def cascade_totals(
    series: Mapping[str, Mapping[tuple[str, str, str], float]], namespace: str, deployments: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Each query's values summed over the cascade's worker pods, by model."""
    pods = pod_pattern(deployments)
    out: dict[str, dict[str, float]] = {}
    for key, values in series.items():
        sums: dict[str, float] = {}
        for (ns, pod, model), v in values.items():
            if ns == namespace and pods.match(pod):
                sums[model] = sums.get(model, 0.0) + v
        out[key] = sums
    return out


def served_of(results: Mapping[str, Mapping[str, float]]) -> dict[str, Served]:
    """Per model, from the three queries' values by model label."""
    models = set().union(*(set(v) for v in results.values())) if results else set()
    out = {}
    for m in sorted(models):
        compute = results.get("compute_us", {}).get(m, 0.0)
        requests = results.get("requests", {}).get(m, 0.0)
        execs = results.get("executions", {}).get(m, 0.0)
        ok = requests > 0 and execs > 0 and all(math.isfinite(v) for v in (compute, requests, execs))
        out[m] = Served(
            m, compute / requests / 1e6 if ok else None, requests / execs if ok else None, execs if ok else 0.0
        )
    return out


def profiled_seconds(profile: Profile, model: str, batch: float) -> float | None:
    """The profile's seconds per batch at a (fractional) mean batch size: linear between sizes."""
    m = profile.model(model)
    lo = max(1, math.floor(batch))
    hi = max(lo, math.ceil(batch))
    a, b = m.batch_latency(lo), m.batch_latency(hi)
    if a is None or b is None:
        return a if b is None else b
    return a if hi == lo else a + (b - a) * (batch - lo) / (hi - lo)


def findings(profile: Profile, models: Mapping[str, str], served: Mapping[str, Served]) -> list[Finding]:
    """``models``: the cascade's model name -> the Triton model name its workers serve."""
    out = []
    for name, triton in models.items():
        s = served.get(triton) or Served(triton, None, None, 0.0)
        prof = profiled_seconds(profile, name, s.batch) if s.batch else None
        out.append(Finding(name, s, prof))
    return out


def _pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.0f}%"


def drift_condition(
    found: Sequence[Finding],
    tolerance: float,
    min_batches: int,
    window: str,
    generation: int,
    now: dt.datetime,
    previous: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    from hadis.operator.logic import condition

    # Two significant figures: the message (and so the status) moves when the served time moves
    # by a few percent, not with every scrape.
    def figure(f: Finding) -> str:
        return (
            f"{f.model} served {f.served.batch_s:.2g}s per batch (batch {f.served.batch:.0f}, over {window}), "
            f"profiled {f.profiled_s:.2g}s: {_pct(float(f'{f.ratio:.2g}'))}"
        )

    judged = [f for f in found if f.served.batches >= min_batches and f.ratio is not None]
    drifted = [f for f in judged if abs(f.ratio - 1) > tolerance]
    if drifted:
        msg = "; ".join(figure(f) for f in drifted)
        msg += f" (tolerance {tolerance * 100:.0f}%): the plan's capacity is off by that much; re-profile"
        return condition(CONDITION, True, "LatencyDrift", msg, generation, now, previous)
    waiting = [f.model for f in found if f not in judged]
    if not judged:
        msg = f"fewer than {min_batches} batches served in {window} by {', '.join(waiting)}"
        return condition(CONDITION, None, "NotEnoughTraffic", msg, generation, now, previous)
    msg = f"served batch latency within {tolerance * 100:.0f}% of the profile: " + ", ".join(
        f"{f.model} {f.served.batch_s:.2g}s vs {f.profiled_s:.2g}s" for f in judged
    )
    if waiting:
        msg += f"; not judged (fewer than {min_batches} batches in {window}): {', '.join(waiting)}"
    return condition(CONDITION, False, "WithinTolerance", msg, generation, now, previous)
