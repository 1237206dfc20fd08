"""The routing decision, written once for the router service and the simulator.

HADIS's thresholds are shares, so both cuts are percentiles:

- the router sends a prompt straight to the heavy model when its hardness score is in the top
  ``router_ratio`` of the score distribution;
- the discriminator escalates a light result when its confidence (P(real)) is in the bottom
  ``disc_ratio`` of the light model's confidence distribution.

The decisions take a value's percentile (0..1) in its reference distribution. The simulator
knows every prompt's percentile; the router service estimates it with streaming quantiles.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

HADIS_FEATURES = (
    "prompt_length",
    "token_rarity",
    "num_objects",
    "abstractness",
    "attribute_density",
    "spatial_relations",
    "action_verbs",
    "named_entities",
)
HADIS_WEIGHTS = (0.85, 0.32, 0.72, 0.99, 0.76, 0.07, 0.78, 0.01)


def routes_to_heavy(score_percentile: float, router_ratio: float) -> bool:
    """True when the prompt goes straight to the heavy model."""
    return router_ratio > 0.0 and score_percentile >= 1.0 - router_ratio


def escalates(confidence_percentile: float, disc_ratio: float) -> bool:
    """True when a light result is sent on to the heavy model (all of them at a share of 1)."""
    return disc_ratio >= 1.0 or confidence_percentile < disc_ratio


def after_light(confidence_percentile: float, disc_ratio: float, heavy_in_time: bool) -> str:
    """What becomes of a light image: ``"accept"``, ``"escalate"`` or ``"degrade"``.

    An image the discriminator would escalate is served as it is, flagged degraded, when the
    heavy tier cannot finish it within the request's remaining deadline: a late heavy image is
    worth less than an in-time light one, and escalating into a saturated tier only lengthens
    its queue."""
    if not escalates(confidence_percentile, disc_ratio):
        return "accept"
    return "escalate" if heavy_in_time else "degrade"


def entry_tier(score_percentile: float, router_ratio: float, heavy_in_time: bool, light_in_time: bool) -> str:
    """Where a new request goes: ``"heavy"``, ``"light"``, ``"degrade"`` (light instead of a
    saturated heavy tier), ``"overflow"`` (heavy instead of a saturated light tier: the plan's
    share of easy prompts can exceed what it gave light, and a heavy image in time beats a
    refusal) or ``"shed"`` (neither tier can finish it within the SLO: refuse it now, with a
    retry hint, rather than let it wait and fail)."""
    if routes_to_heavy(score_percentile, router_ratio):
        if heavy_in_time:
            return "heavy"
        return "degrade" if light_in_time else "shed"
    if light_in_time:
        return "light"
    return "overflow" if heavy_in_time else "shed"


def percentiles(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Each value's percentile in the sample: rank / n, ties broken by position (stable).

    Breaking ties by position makes the realised share of a percentile cut equal its target
    even when many values are equal (integer-valued features tie often).
    """
    v = np.asarray(values, dtype=float)
    order = np.argsort(v, kind="stable")
    out = np.empty(len(v))
    out[order] = np.arange(len(v)) / max(len(v), 1)
    return out


def rule_scores(features: np.ndarray, weights: Sequence[float] = HADIS_WEIGHTS) -> np.ndarray:
    """HADIS's hardness score: z-score each feature over the sample, then a weighted sum."""
    x = np.asarray(features, dtype=float)
    std = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return z @ np.asarray(weights, dtype=float)
