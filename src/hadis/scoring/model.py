"""Router scoring models: HADIS's rule score and our learned score, one file format for both.

A router model is a JSON document (``hadis.router-model/v1``) small enough for a ConfigMap
(the learned one is ~300 kB; the limit is 1 MiB). It is data only: loading it never runs
code. Both kinds answer ``score(text) -> float`` (higher = harder) and carry
``score_quantiles`` of their training prompts, which warm-start the router's streaming
percentile so that the first requests are routed at the right share.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hadis.core.errors import DataError
from hadis.core.routing import HADIS_FEATURES, HADIS_WEIGHTS
from hadis.scoring.features import extract, normalise, tokenize

FORMAT = "hadis.router-model/v1"
QUANTILE_POINTS = 101
CHAR_NGRAMS = (3, 4, 5)


class Scorer(Protocol):
    mode: str
    score_quantiles: tuple[float, ...]

    def score(self, text: str) -> float: ...


def quantile_summary(scores: Sequence[float] | np.ndarray) -> tuple[float, ...]:
    """101 evenly spaced quantiles (0%, 1%, ..., 100%) of a score sample."""
    s = np.asarray(scores, dtype=float)
    if len(s) == 0:
        return ()
    return tuple(round(float(v), 6) for v in np.quantile(s, np.linspace(0, 1, QUANTILE_POINTS)))


# ---------------------------------------------------------------------------------------------
# Rule mode: HADIS's z-scored weighted sum of the 8 features


@dataclass(frozen=True)
class RuleModel:
    """HADIS's score: z-score each feature with population statistics, then a weighted sum."""

    means: tuple[float, ...]
    stds: tuple[float, ...]
    weights: tuple[float, ...] = HADIS_WEIGHTS
    score_quantiles: tuple[float, ...] = ()
    provenance: dict[str, Any] = field(default_factory=dict)
    mode: str = "rule"

    @classmethod
    def fit(cls, features: np.ndarray, provenance: dict[str, Any] | None = None) -> RuleModel:
        """Statistics from a sample of feature rows (HADIS z-scores over its prompt set)."""
        x = np.asarray(features, dtype=float)
        std = x.std(axis=0)
        model = cls(
            means=tuple(float(v) for v in x.mean(axis=0)),
            stds=tuple(float(v) if v > 0 else 1.0 for v in std),
            provenance=dict(provenance or {}),
        )
        scores = [model.score_values(row) for row in x]
        return cls(model.means, model.stds, model.weights, quantile_summary(scores), model.provenance)

    def score_values(self, values: Sequence[float]) -> float:
        return sum(w * (v - m) / s for v, m, s, w in zip(values, self.means, self.stds, self.weights, strict=True))

    def score(self, text: str) -> float:
        return self.score_values(extract(text).values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "mode": "rule",
            "features": list(HADIS_FEATURES),
            "weights": list(self.weights),
            "means": list(self.means),
            "stds": list(self.stds),
            "score_quantiles": list(self.score_quantiles),
            "provenance": self.provenance,
        }


# ---------------------------------------------------------------------------------------------
# Learned mode: ridge regression on tf-idf word and character n-grams


def prompt_terms(text: str) -> set[str]:
    """The terms a prompt is represented by: its words and their character 3-5-grams.

    Character n-grams let the model score words it never saw in training ("dragons" shares
    most n-grams with "dragon"), which matters on real user prompts.
    """
    clean, _ = normalise(text)
    terms: set[str] = set()
    for tok in tokenize(clean):
        if not tok[0].isalnum():
            continue
        word = tok.lower()
        terms.add(word)
        padded = f"<{word}>"
        for n in CHAR_NGRAMS:
            terms.update(padded[i : i + n] for i in range(len(padded) - n + 1))
    return terms


@dataclass
class LearnedModel:
    """A linear model over L2-normalised tf-idf term vectors: score = w . x / |x| + b."""

    terms: dict[str, int]  # term -> column
    idf: np.ndarray
    weights: np.ndarray
    intercept: float
    score_quantiles: tuple[float, ...] = ()
    provenance: dict[str, Any] = field(default_factory=dict)
    mode: str = "learned"
    _word_cache: dict[str, tuple[int, ...]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        # Per column: the weighted contribution and the squared norm of a present term.
        self._contrib = (self.weights * self.idf).tolist()
        self._sq = (self.idf * self.idf).tolist()

    def _columns(self, word: str) -> tuple[int, ...]:
        cols = self._word_cache.get(word)
        if cols is None:
            if len(self._word_cache) >= 200_000:
                self._word_cache.clear()  # bounded under adversarial vocabularies
            padded = f"<{word}>"
            found = {word} | {padded[i : i + n] for n in CHAR_NGRAMS for i in range(len(padded) - n + 1)}
            cols = tuple(c for t in found if (c := self.terms.get(t)) is not None)
            self._word_cache[word] = cols
        return cols

    def score(self, text: str) -> float:
        clean, _ = normalise(text)
        cols: set[int] = set()
        for tok in tokenize(clean):
            if tok[0].isalnum():
                cols.update(self._columns(tok.lower()))
        if not cols:
            return self.intercept
        contrib, sq = self._contrib, self._sq
        norm = math.sqrt(sum(sq[c] for c in cols))
        return sum(contrib[c] for c in cols) / norm + self.intercept

    def to_dict(self) -> dict[str, Any]:
        by_col = sorted(self.terms.items(), key=lambda kv: kv[1])
        return {
            "format": FORMAT,
            "mode": "learned",
            "representation": {"terms": "words and character 3-5-grams", "weighting": "tf-idf, L2-normalised"},
            "intercept": round(self.intercept, 8),
            "terms": {t: [round(float(self.idf[c]), 5), round(float(self.weights[c]), 6)] for t, c in by_col},
            "score_quantiles": list(self.score_quantiles),
            "provenance": self.provenance,
        }


def _design(term_sets: Sequence[set[str]], terms: dict[str, int], idf: np.ndarray) -> np.ndarray:
    x = np.zeros((len(term_sets), len(terms)), dtype=np.float32)
    for r, ts in enumerate(term_sets):
        cols = [c for t in ts if (c := terms.get(t)) is not None]
        x[r, cols] = idf[cols]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def train_learned(
    prompts: Sequence[str],
    hardness: Sequence[float] | np.ndarray,
    *,
    lambdas: Iterable[float] = (0.3, 1.0, 3.0, 10.0),
    folds: int = 5,
    min_df: int = 2,
    provenance: dict[str, Any] | None = None,
    progress=None,
) -> LearnedModel:
    """Fit ridge regression of ``hardness`` (higher = harder) on the prompts' term vectors.

    The ridge penalty is chosen by ``folds``-fold cross-validation on the training prompts
    only (ROC-AUC of the top-30%-hardest prompts), then the model is refit on all of them.
    Solved in the dual (n x n), so training is a few seconds for a few thousand prompts.
    """
    from hadis.scoring.auc import roc_auc

    y = np.asarray(hardness, dtype=float)
    if len(prompts) != len(y) or len(y) < folds * 2:
        raise ValueError(f"need matching prompts and targets, at least {folds * 2}; got {len(prompts)} and {len(y)}")
    term_sets = [prompt_terms(p) for p in prompts]
    df: dict[str, int] = {}
    for ts in term_sets:
        for t in ts:
            df[t] = df.get(t, 0) + 1
    vocab = sorted(t for t, c in df.items() if c >= min_df)
    terms = {t: i for i, t in enumerate(vocab)}
    idf = np.log(len(prompts) / np.array([df[t] for t in vocab], dtype=float)) + 1.0
    x = _design(term_sets, terms, idf).astype(np.float64)
    gram = x @ x.T
    fold_of = np.arange(len(y)) % folds
    hard = y >= np.quantile(y, 0.7)
    best: tuple[float, float] | None = None
    cv: dict[str, float] = {}
    for lam in lambdas:
        aucs = []
        for f in range(folds):
            tr, te = fold_of != f, fold_of == f
            if hard[te].all() or not hard[te].any():
                continue  # a small set's fold may hold no hard (or only hard) prompts: no ROC-AUC there
            mu = y[tr].mean()
            alpha = np.linalg.solve(gram[np.ix_(tr, tr)] + lam * np.eye(tr.sum()), y[tr] - mu)
            pred = gram[np.ix_(te, tr)] @ alpha + mu
            aucs.append(roc_auc(hard[te], pred))
        if not aucs:
            continue
        cv[f"{lam:g}"] = round(float(np.mean(aucs)), 4)
        if progress:
            progress(f"  ridge lambda {lam:g}: cross-validated ROC-AUC {cv[f'{lam:g}']:.3f}")
        if best is None or cv[f"{lam:g}"] > best[1]:
            best = (lam, cv[f"{lam:g}"])
    lam = best[0] if best is not None else 1.0  # no fold could be scored: a middle penalty
    mu = float(y.mean())
    alpha = np.linalg.solve(gram + lam * np.eye(len(y)), y - mu)
    weights = x.T @ alpha
    prov = dict(provenance or {})
    prov.update({"ridge_lambda": lam, "cv_roc_auc": cv, "n_train": len(y), "n_terms": len(vocab), "min_df": min_df})
    model = LearnedModel(terms, idf, weights, mu, provenance=prov)
    model.score_quantiles = quantile_summary([model.score(p) for p in prompts])
    return model


# ---------------------------------------------------------------------------------------------
# The file format


def dump_model(model: RuleModel | LearnedModel) -> str:
    return json.dumps(model.to_dict(), separators=(",", ":"), sort_keys=False) + "\n"


def save_model(model: RuleModel | LearnedModel, path: str | Path) -> int:
    """Write the model; returns its size in bytes."""
    text = dump_model(model)
    Path(path).write_text(text, encoding="utf-8")
    return len(text.encode())


def _floats(doc: dict, key: str, source: str, n: int | None = None) -> tuple[float, ...]:
    v = doc.get(key)
    if not isinstance(v, list) or not all(isinstance(x, int | float) and math.isfinite(x) for x in v):
        raise DataError(source, "must be a list of finite numbers", field=key)
    if n is not None and len(v) != n:
        raise DataError(source, f"must have {n} entries, got {len(v)}", field=key)
    return tuple(float(x) for x in v)


def parse_model(text: str, source: str) -> RuleModel | LearnedModel:
    """Read a router model document; malformed input raises DataError naming the field."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(source, f"not valid JSON: {e.msg}", line=e.lineno) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DataError(source, f"expected a JSON object with format '{FORMAT}'", field="format")
    quantiles = _floats(doc, "score_quantiles", source) if "score_quantiles" in doc else ()
    if any(b < a for a, b in itertools.pairwise(quantiles)):
        raise DataError(source, "must be non-decreasing", field="score_quantiles")
    provenance = doc.get("provenance") or {}
    if not isinstance(provenance, dict):
        raise DataError(source, "must be an object", field="provenance")
    mode = doc.get("mode")
    if mode == "rule":
        n = len(HADIS_FEATURES)
        stds = _floats(doc, "stds", source, n)
        if any(s <= 0 for s in stds):
            raise DataError(source, "must all be > 0", field="stds")
        return RuleModel(
            means=_floats(doc, "means", source, n),
            stds=stds,
            weights=_floats(doc, "weights", source, n),
            score_quantiles=quantiles,
            provenance=provenance,
        )
    if mode == "learned":
        raw = doc.get("terms")
        if not isinstance(raw, dict) or not raw:
            raise DataError(source, "must be a non-empty object of term -> [idf, weight]", field="terms")
        idf = np.empty(len(raw))
        weights = np.empty(len(raw))
        terms: dict[str, int] = {}
        for i, (term, pair) in enumerate(raw.items()):
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or not all(isinstance(x, int | float) and math.isfinite(x) for x in pair)
            ):
                raise DataError(source, f"term {term!r}: expected [idf, weight]", field="terms")
            terms[term] = i
            idf[i], weights[i] = pair
        intercept = doc.get("intercept")
        if not isinstance(intercept, int | float) or not math.isfinite(intercept):
            raise DataError(source, "must be a finite number", field="intercept")
        return LearnedModel(terms, idf, weights, float(intercept), quantiles, provenance)
    raise DataError(source, f"must be 'rule' or 'learned', got {mode!r}", field="mode")


def load_model(path: str | Path) -> RuleModel | LearnedModel:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(str(p), f"cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise DataError(str(p), "not UTF-8 text") from None
    return parse_model(text, str(p))


def load_scorer(mode: str, model_file: str | Path | None = None) -> RuleModel | LearnedModel:
    """The scorer of a mode: the given model file (which must be of that mode) or, for the rule
    mode, the shipped HADIS statistics."""
    if model_file:
        model = load_model(model_file)
        if model.mode != mode:
            raise DataError(str(model_file), f"is a {model.mode} model, not {mode}", field="mode")
        return model
    if mode != "rule":
        raise DataError("scoring", f"{mode} scoring needs a model file", field="modelFile")
    return default_rule_model()


def default_rule_model() -> RuleModel:
    """HADIS's rule score with the statistics shipped in the package (see ``make router-models``)."""
    from importlib import resources

    path = resources.files("hadis.scoring") / "data" / "rule-hadis.json"
    model = parse_model(path.read_text(encoding="utf-8"), "hadis/scoring/data/rule-hadis.json")
    assert isinstance(model, RuleModel)
    return model
