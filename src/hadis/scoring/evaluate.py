"""Training data and honest evaluation of router scores.

The profiling data: ``prompts/imagenet1k_5k.txt`` (prompt k on line k) and, per model,
``discriminator/p_real_<model>.csv`` (P(real) of 4 images for prompts 0..3999). A prompt is
*poor* for a light model when its mean P(real) is in the bottom 30% of the prompts evaluated.
Learned models train on prompts 0..2999 only and are evaluated on 3000..3999.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hadis.core.errors import DataError
from hadis.core.routing import HADIS_FEATURES, percentiles
from hadis.scoring.auc import roc_auc
from hadis.scoring.features import extract
from hadis.scoring.model import LearnedModel, RuleModel, train_learned

TRAIN = range(0, 3000)
TEST = range(3000, 4000)
POOR_SHARE = 0.3
LIGHT_MODELS = ("sdxl-lightning-2step", "sd3.5-large-turbo", "sd3.5-medium")
PROMPTS_FILE = Path("prompts") / "imagenet1k_5k.txt"


def read_prompts(data_dir: Path) -> list[str]:
    path = data_dir / PROMPTS_FILE
    try:
        return path.read_text(encoding="utf-8").split("\n")
    except OSError as e:
        raise DataError(str(path), f"cannot read: {e.strerror}") from None


def mean_p_real(data_dir: Path, model: str) -> np.ndarray:
    """Mean P(real) over the images of each prompt (NaN where the prompt has none)."""
    from hadis.sim.data import load_p_real

    arr = load_p_real(data_dir / "discriminator" / f"p_real_{model}.csv")
    with np.errstate(invalid="ignore"):
        counts = (~np.isnan(arr)).sum(axis=1)
        return np.where(counts > 0, np.nansum(arr, axis=1) / np.maximum(counts, 1), np.nan)


def poor_labels(p_real: np.ndarray, share: float = POOR_SHARE) -> np.ndarray:
    """True for prompts in the bottom ``share`` of mean P(real) (the light model renders them badly)."""
    return percentiles(p_real) < share


def hardness_target(p_real: np.ndarray) -> np.ndarray:
    """The regression target: 1 - percentile of mean P(real), so higher = harder."""
    return 1.0 - percentiles(p_real)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def train_for_light_model(
    data_dir: Path, light: str, train: range = TRAIN, progress: Callable[[str], None] | None = None
) -> LearnedModel:
    """Train the learned router score of one light model on the given prompts."""
    from hadis import __version__

    prompts = read_prompts(data_dir)
    p_real = mean_p_real(data_dir, light)
    idx = [i for i in train if i < len(p_real) and i < len(prompts) and not np.isnan(p_real[i])]
    if len(idx) < 100:
        raise DataError(str(data_dir), f"only {len(idx)} prompts with P(real) for {light} in {train}")
    pr = p_real[idx]
    provenance = {
        "light_model": light,
        "target": "1 - percentile of the light model's mean P(real) over its 4 images (higher = harder)",
        "trained_on": f"prompts {idx[0]}..{idx[-1]} ({len(idx)})",
        "prompts_sha256": _sha256(data_dir / PROMPTS_FILE),
        "p_real_sha256": _sha256(data_dir / "discriminator" / f"p_real_{light}.csv"),
        "hadis_version": __version__,
    }
    return train_learned([prompts[i] for i in idx], hardness_target(pr), provenance=provenance, progress=progress)


def fit_rule_model(data_dir: Path) -> RuleModel:
    """HADIS's z-scoring statistics over the live features of every profiling prompt (no labels)."""
    from hadis import __version__

    prompts = [p for p in read_prompts(data_dir) if p]
    features = np.array([extract(p).values for p in prompts])
    provenance = {
        "fit_on": f"{PROMPTS_FILE} ({len(prompts)} prompts), live features",
        "prompts_sha256": _sha256(data_dir / PROMPTS_FILE),
        "hadis_version": __version__,
    }
    return RuleModel.fit(features, provenance)


def load_hadis_features(data_dir: Path) -> tuple[list[str], np.ndarray]:
    from hadis.sim.data import load_features

    path = data_dir / "router" / "hadis_features.csv"
    import csv

    with path.open(newline="", encoding="utf-8") as f:
        prompts = [row["prompt"] for row in csv.DictReader(f)]
    return prompts, load_features(path)


@dataclass(frozen=True)
class EvalRow:
    light_model: str
    mode: str
    roc_auc: float
    n_test: int


def random_scores(n: int, seed: int = 0) -> np.ndarray:
    return np.array([zlib.crc32(f"{seed},{i}".encode()) / 2**32 for i in range(n)])


def evaluate(
    data_dir: Path,
    lights: Sequence[str] = LIGHT_MODELS,
    rule: RuleModel | None = None,
    learned: dict[str, LearnedModel] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[EvalRow]:
    """ROC-AUC on prompts 3000..3999 of each mode, for each light model.

    Modes: ``rule-hadis`` (HADIS's precomputed spaCy features), ``rule`` (our live features),
    ``learned`` (trained on 0..2999 here unless given) and ``random`` (the chance level).
    """
    from hadis.scoring.model import default_rule_model

    rule = rule or default_rule_model()
    prompts = read_prompts(data_dir)
    feat_prompts, hadis_feats = load_hadis_features(data_dir)
    test = [i for i in TEST if i < len(prompts)]
    live = np.array([rule.score_values(extract(prompts[i]).values) for i in test])
    precomputed = None
    if len(feat_prompts) > test[-1]:
        hadis_rule = RuleModel.fit(hadis_feats)  # HADIS's z-scoring over its own feature values
        precomputed = np.array([hadis_rule.score_values(hadis_feats[i]) for i in test])
    rows = []
    for light in lights:
        p_real = mean_p_real(data_dir, light)
        ok = [k for k, i in enumerate(test) if i < len(p_real) and not np.isnan(p_real[i])]
        poor = poor_labels(p_real[[test[k] for k in ok]])
        model = (learned or {}).get(light)
        if model is None:
            if progress:
                progress(f"training the learned score for {light} on prompts 0..2999")
            model = train_for_light_model(data_dir, light, progress=progress)
        scores = {
            "rule": live[ok],
            "learned": np.array([model.score(prompts[test[k]]) for k in ok]),
            "random": random_scores(len(ok)),
        }
        if precomputed is not None:
            scores["rule-hadis"] = precomputed[ok]
        for mode in ("rule-hadis", "rule", "learned", "random"):
            if mode in scores:
                rows.append(EvalRow(light, mode, roc_auc(poor, scores[mode]), len(ok)))
    return rows


def feature_agreement(data_dir: Path) -> list[dict[str, float | str]]:
    """Per feature: how often our live value equals HADIS's precomputed one, and their correlation."""
    prompts, ref = load_hadis_features(data_dir)
    live = np.array([extract(p).values for p in prompts], dtype=float)
    out = []
    for k, name in enumerate(HADIS_FEATURES):
        a, b = ref[:, k], live[:, k]
        corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
        out.append(
            {
                "feature": name,
                "exact": float((a == b).mean()),
                "within_1": float((np.abs(a - b) <= 1).mean()),
                "pearson_r": corr,
                "mean_hadis": float(a.mean()),
                "mean_live": float(b.mean()),
            }
        )
    return out
