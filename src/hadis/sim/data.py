"""Inputs of a replay: the trace, the profile and tables, and per-prompt data.

``--data-dir`` points at a folder shaped like ``../shared/data/hadis``:

    profiles/l40s_hadis_reference.yaml      latency profile (HADIS reference or hadis.profile/v1)
    tables/config_results_hybrid.csv        the configuration grid (quality of every config)
    tables/hadis_hybrid_pareto.csv          HADIS's own Pareto table (used by hadis-ref)
    router/hadis_features.csv               the 8 router features per prompt (router score)
    discriminator/p_real_<model>.csv        P(real) of 4 images per prompt and model

Prompts without per-prompt data get a documented rule instead of a crash (see ``PromptData``).
"""

from __future__ import annotations

import csv
import io
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hadis.core.errors import DataError
from hadis.core.pareto import (
    Config,
    ParetoTable,
    QualityGrid,
    load_grid,
    load_table,
    pareto_filter,
    planning_table,
    read_file,
)
from hadis.core.profile import Profile, load_profile
from hadis.core.routing import HADIS_FEATURES, percentiles, rule_scores

IMAGES_PER_PROMPT = 4


@dataclass(frozen=True)
class Trace:
    arrival_s: np.ndarray  # sorted seconds from the trace start
    prompt: np.ndarray  # prompt index per arrival
    source: str

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def duration_s(self) -> float:
        return float(self.arrival_s[-1]) if len(self) else 0.0


def parse_trace(text: str, source: str) -> Trace:
    """Read ``arrival_ms,prompt_index`` rows (any order) into a sorted trace."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or [h.strip() for h in header] != ["arrival_ms", "prompt_index"]:
        raise DataError(source, f"expected header 'arrival_ms,prompt_index', got {header}", line=1)
    arrivals, prompts = [], []
    for line, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 2:
            raise DataError(source, f"expected 2 columns, got {len(row)}", line=line)
        try:
            ms = float(row[0])
            idx = int(row[1])
        except ValueError:
            raise DataError(source, f"expected a number and a prompt index, got {row}", line=line) from None
        if not np.isfinite(ms) or ms < 0:
            raise DataError(source, f"arrival_ms must be a finite number >= 0, got {row[0]}", line=line)
        if idx < 0:
            raise DataError(source, f"prompt_index must be >= 0, got {idx}", line=line)
        arrivals.append(ms / 1000.0)
        prompts.append(idx)
    if not arrivals:
        raise DataError(source, "trace has no arrivals", line=2)
    a = np.asarray(arrivals)
    order = np.argsort(a, kind="stable")
    return Trace(a[order], np.asarray(prompts, dtype=np.int64)[order], source)


def load_trace(path: str | Path) -> Trace:
    return parse_trace(read_file(path), str(path))


def _stable_unit(*keys: int) -> float:
    """A deterministic number in [0, 1) from integers (no global RNG, same on every run)."""
    return (zlib.crc32(",".join(map(str, keys)).encode()) & 0xFFFFFFFF) / 2**32


class PromptData:
    """Per-prompt router score and discriminator confidence, as percentiles.

    Rules for missing data (documented, never a crash):
    - a prompt without router features gets a percentile drawn deterministically from its index
      (uniform), so routing shares still hold;
    - a (prompt, image) without P(real) for a model likewise gets a deterministic uniform
      confidence percentile for escalation, and is left out of the served ``p_real`` mean.
    """

    def __init__(self, score_pct: np.ndarray, p_real: dict[str, np.ndarray]):
        self.score_pct = score_pct
        self.p_real = p_real
        self.conf_pct: dict[str, np.ndarray] = {}
        for model, arr in p_real.items():
            flat = arr.ravel()
            pct = np.full(flat.shape, np.nan)
            ok = ~np.isnan(flat)
            pct[ok] = percentiles(flat[ok])
            self.conf_pct[model] = pct.reshape(arr.shape)

    def score_percentile(self, prompt: int) -> float:
        if 0 <= prompt < len(self.score_pct):
            return float(self.score_pct[prompt])
        return _stable_unit(prompt)

    def confidence_percentile(self, model: str, prompt: int, image: int) -> float:
        pct = self.conf_pct.get(model)
        if pct is not None and 0 <= prompt < pct.shape[0]:
            v = pct[prompt, image]
            if not np.isnan(v):
                return float(v)
        return _stable_unit(prompt, image, zlib.crc32(model.encode()))

    def p_real_of(self, model: str, prompt: int, image: int) -> float | None:
        arr = self.p_real.get(model)
        if arr is None or not 0 <= prompt < arr.shape[0]:
            return None
        v = arr[prompt, image]
        return None if np.isnan(v) else float(v)


def load_features(path: Path) -> np.ndarray:
    text = read_file(path)
    reader = csv.DictReader(io.StringIO(text))
    missing = [f for f in HADIS_FEATURES if f not in (reader.fieldnames or [])]
    if missing:
        raise DataError(str(path), f"missing column(s) {', '.join(missing)}", line=1)
    rows = []
    for row in reader:
        try:
            rows.append([float(row[f]) for f in HADIS_FEATURES])
        except (TypeError, ValueError):
            raise DataError(str(path), "expected numeric features", line=reader.line_num) from None
    return np.asarray(rows)


def load_p_real(path: Path) -> np.ndarray:
    """(prompt, image) -> P(real); NaN where absent."""
    text = read_file(path)
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames != ["prompt_index", "image_index", "p_real"]:
        raise DataError(str(path), f"expected header prompt_index,image_index,p_real, got {reader.fieldnames}", line=1)
    entries = []
    for row in reader:
        try:
            p, i, v = int(row["prompt_index"]), int(row["image_index"]), float(row["p_real"])
        except (TypeError, ValueError):
            raise DataError(str(path), f"bad row {row}", line=reader.line_num) from None
        if p < 0 or not 0 <= i < IMAGES_PER_PROMPT or not 0.0 <= v <= 1.0:
            raise DataError(str(path), f"out of range: {row}", line=reader.line_num)
        entries.append((p, i, v))
    n = max(p for p, _, _ in entries) + 1 if entries else 0
    arr = np.full((n, IMAGES_PER_PROMPT), np.nan)
    for p, i, v in entries:
        arr[p, i] = v
    return arr


@dataclass(frozen=True)
class SimData:
    profile: Profile
    grid: QualityGrid  # quality of every configuration
    table: ParetoTable  # ours: Pareto front of the grid sampled every 0.02 in both shares
    hadis_table: ParetoTable  # the paper's 49-row table
    prompts: PromptData


def load_data_dir(data_dir: str | Path, time_scale: float = 1.0) -> SimData:
    d = Path(data_dir)
    if not d.is_dir():
        raise DataError(str(d), "data directory does not exist")
    profile = load_profile(d / "profiles" / "l40s_hadis_reference.yaml").scaled(time_scale)
    grid_rows: list[Config] = load_grid(d / "tables" / "config_results_hybrid.csv", profile.names)
    grid = QualityGrid(grid_rows)
    table = planning_table(ParetoTable(pareto_filter(grid_rows), grid))
    hadis_table = ParetoTable(load_table(d / "tables" / "hadis_hybrid_pareto.csv", profile.names), grid)
    features = load_features(d / "router" / "hadis_features.csv")
    p_real = {}
    for m in profile.names:
        path = d / "discriminator" / f"p_real_{m}.csv"
        if path.exists():
            p_real[m] = load_p_real(path)
    prompts = PromptData(percentiles(rule_scores(features)), p_real)
    return SimData(profile, grid, table, hadis_table, prompts)
