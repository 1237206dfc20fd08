"""Learned, rule and random routing compared in the simulator at the same router share.

Each source scores the held-out prompts 3000..3999 (the learned model never saw them); a
trace sends each of them once through a fixed cascade (``light`` -> ``heavy``, router share
``r``, no discriminator escalation, GPUs to spare so queueing plays no part) in the simulator,
and the served images are measured:

- ``p_real_served``: mean discriminator P(real) of every served image;
- ``p_real_light``: mean P(real) of the images the light model served (routing the prompts it
  renders badly away from it raises this);
- ``poor_light_served``: share of requests answered with a light image of a *poor* prompt
  (bottom 30% of the light model's mean P(real));
- ``precision``: share of routed prompts that are among the ``r`` share the light model renders
  worst (chance = ``r``, perfect = 1);
- ``fid_proxy``: FID interpolated between two configurations HADIS measured at the same heavy
  share: router-only (its rule score, chance-level, so FID at precision ``r``) and
  discriminator-only (escalating the images the light model rendered worst by P(real), so FID at
  precision 1): ``fid_router + (fid_disc - fid_router) * (precision - r) / (1 - r)``. It is a proxy:
  it assumes FID moves linearly with how well the routed set matches the P(real)-worst set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hadis.core.routing import percentiles
from hadis.scoring.evaluate import TEST, mean_p_real, random_scores, read_prompts, train_for_light_model
from hadis.scoring.features import extract
from hadis.scoring.model import LearnedModel, default_rule_model, load_model
from hadis.sim.data import PromptData, Trace, load_data_dir
from hadis.sim.engine import ServingPlan, Simulation

DEFAULT_SHARES = (0.1, 0.2, 0.3, 0.5)
SOURCES = ("learned", "rule", "random")


@dataclass(frozen=True)
class RoutingRow:
    share: float
    source: str
    routed_share: float
    precision: float
    p_real_served: float
    p_real_light: float
    poor_light_served: float
    fid_proxy: float
    fid_router: float
    fid_disc: float
    served: int


def _fixed(plan: ServingPlan):
    return lambda _obs: plan


def compare_routing(
    data_dir: Path,
    light: str = "sdxl-lightning-2step",
    heavy: str = "sd3.5-large",
    shares: Sequence[float] | None = None,
    model_file: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[RoutingRow]:
    shares = list(shares or DEFAULT_SHARES)
    data = load_data_dir(data_dir, time_scale=0.1)
    prompts = read_prompts(data_dir)
    test = np.array([i for i in TEST if i < len(prompts)])
    if model_file:
        model = load_model(model_file)
        if not isinstance(model, LearnedModel):
            raise ValueError(f"{model_file} is not a learned model")
    else:
        if progress:
            progress(f"training the learned score for {light} on prompts 0..2999")
        model = train_for_light_model(data_dir, light)
    rule = default_rule_model()
    scores = {
        "learned": np.array([model.score(prompts[i]) for i in test]),
        "rule": np.array([rule.score_values(extract(prompts[i]).values) for i in test]),
        "random": random_scores(len(test), seed=7),
    }
    p_light = mean_p_real(data_dir, light)[test]
    light_pct = percentiles(p_light)  # low = rendered worst by the light model
    poor = light_pct < 0.3
    # one arrival per test prompt, 0.05 s apart (light batch latency is 0.05 s at E1 scale)
    trace = Trace(np.arange(len(test)) * 0.05, test.astype(np.int64), "prompts 3000..3999")
    rows: list[RoutingRow] = []
    for share in shares:
        fid_router = data.grid.quality(light, heavy, share, 0.0)
        fid_disc = data.grid.quality(light, heavy, 0.0, share)
        worst = light_pct < share
        for source in SOURCES:
            pct = np.full(int(test.max()) + 1, 0.5)
            pct[test] = percentiles(scores[source])
            prompt_data = PromptData(pct, data.prompts.p_real)
            plan = ServingPlan(
                gpus={light: 8, heavy: 8},
                batch={light: 1, heavy: 1},
                light=light,
                heavy=heavy,
                router_ratio=share,
                disc_ratio=0.0,
                label="fixed",
            )
            sim = Simulation(
                trace, prompt_data, data.profile, _fixed(plan), total_gpus=16, slo_s=1000.0, replan_interval_s=1000.0
            )
            result = sim.run()
            served = [r for r in result.requests if not r.dropped]
            pos = {int(p): k for k, p in enumerate(test)}
            routed = [pos[r.prompt] for r in served if r.path == "H"]
            light_reqs = [r for r in served if r.model == light]
            p_all = [v for r in served if (v := prompt_data.p_real_of(r.model, r.prompt, r.image)) is not None]
            p_l = [v for r in light_reqs if (v := prompt_data.p_real_of(r.model, r.prompt, r.image)) is not None]
            precision = float(worst[routed].mean()) if routed else float("nan")
            fid_proxy = fid_router + (fid_disc - fid_router) * (precision - share) / (1 - share)
            rows.append(
                RoutingRow(
                    share=share,
                    source=source,
                    routed_share=len(routed) / len(served),
                    precision=precision,
                    p_real_served=float(np.mean(p_all)),
                    p_real_light=float(np.mean(p_l)),
                    poor_light_served=sum(1 for r in light_reqs if poor[pos[r.prompt]]) / len(served),
                    fid_proxy=fid_proxy,
                    fid_router=fid_router,
                    fid_disc=fid_disc,
                    served=len(served),
                )
            )
            if progress:
                progress(f"  share {share:.2f} {source:8s} precision {precision:.3f}  P(real) light {np.mean(p_l):.4f}")
    return rows


def markdown(rows: Sequence[RoutingRow]) -> str:
    lines = [
        "| router share | routing | routed | precision | P(real) served | P(real) light | poor light served "
        "| FID proxy |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.share:.2f} | {r.source} | {r.routed_share:.3f} | {r.precision:.3f} | {r.p_real_served:.4f} | "
            f"{r.p_real_light:.4f} | {r.poor_light_served:.3f} | {r.fid_proxy:.2f} |"
        )
    return "\n".join(lines)
