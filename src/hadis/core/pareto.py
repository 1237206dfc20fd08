"""Cascade configurations, the Pareto filter, quality interpolation and the ConfigMap form.

A configuration is (light model, heavy model, router share ``r``, discriminator share ``d``):
the router sends a share ``r`` of queries straight to the heavy model, and the discriminator
escalates a share ``d`` of the rest, so the heavy model sees ``heavy_ratio = r + (1 - r) d``.
Each configuration has a measured quality (FID, lower is better) and an expected latency per
query at the profiled latencies.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hadis.core.errors import DataError

TABLE_COLUMNS = ("light", "heavy", "router_ratio", "disc_ratio", "heavy_ratio", "metric", "quality", "latency_s")
GRID_COLUMNS = ("light_model", "heavy_model", "router_ratio", "disc_ratio", "threshold", "latency", "fid")
HADIS_PARETO_COLUMNS = ("light", "heavy", "router_ratio", "disc_ratio", "heavy_ratio", "fid")
METRICS = {"fid": "lower"}


def heavy_share(router_ratio: float, disc_ratio: float) -> float:
    return router_ratio + (1.0 - router_ratio) * disc_ratio


@dataclass(frozen=True)
class Config:
    """One cascade configuration with its quality and expected latency."""

    light: str
    heavy: str
    router_ratio: float
    disc_ratio: float
    quality: float
    latency_s: float | None = None
    metric: str = "fid"

    @property
    def heavy_ratio(self) -> float:
        return heavy_share(self.router_ratio, self.disc_ratio)

    @property
    def pair(self) -> tuple[str, str]:
        return (self.light, self.heavy)


def _dominates(a: Config, b: Config) -> bool:
    """a is at least as good as b on quality and latency, and strictly better on one."""
    qa, qb = a.quality, b.quality
    la = a.latency_s if a.latency_s is not None else 0.0
    lb = b.latency_s if b.latency_s is not None else 0.0
    return qa <= qb and la <= lb and (qa < qb or la < lb)


def pareto_filter(configs: Iterable[Config]) -> list[Config]:
    """Configurations that no other configuration dominates on (FID, expected latency).

    Ties on both objectives are kept once: the one with the smallest heavy share (the cheapest
    to serve), then the first given. Configurations without a latency count as latency 0.
    Sorted by latency.
    """
    items = sorted(configs, key=lambda c: (c.latency_s or 0.0, c.quality, c.heavy_ratio))
    front: list[Config] = []
    best_quality = math.inf
    for c in items:
        # Sorted by latency then quality: c is dominated iff an earlier one has quality <= c's
        # (an earlier one with equal latency and equal quality is a duplicate: skip it too).
        if c.quality < best_quality:
            front.append(c)
            best_quality = c.quality
    return front


class QualityGrid:
    """Quality of every profiled configuration, with bilinear interpolation in (r, d) per pair."""

    def __init__(self, configs: Sequence[Config]):
        self.configs = list(configs)
        self._by_pair: dict[tuple[str, str], dict[tuple[float, float], float]] = {}
        for c in configs:
            self._by_pair.setdefault(c.pair, {})[(round(c.router_ratio, 6), round(c.disc_ratio, 6))] = c.quality
        self._axes = {
            pair: (sorted({k[0] for k in pts}), sorted({k[1] for k in pts})) for pair, pts in self._by_pair.items()
        }

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return list(self._by_pair)

    def quality(self, light: str, heavy: str, router_ratio: float, disc_ratio: float) -> float:
        """Interpolated quality at shares between grid points (clamped to the grid)."""
        pts = self._by_pair.get((light, heavy))
        if pts is None:
            raise KeyError(f"no configurations for pair {light} -> {heavy}")
        rs, ds = self._axes[(light, heavy)]
        r = min(max(router_ratio, rs[0]), rs[-1])
        d = min(max(disc_ratio, ds[0]), ds[-1])
        r0, r1 = _bracket(rs, r)
        d0, d1 = _bracket(ds, d)
        wr = 0.0 if r1 == r0 else (r - r0) / (r1 - r0)
        wd = 0.0 if d1 == d0 else (d - d0) / (d1 - d0)
        corners = [(r0, d0, (1 - wr) * (1 - wd)), (r1, d0, wr * (1 - wd)), (r0, d1, (1 - wr) * wd), (r1, d1, wr * wd)]
        total, weight = 0.0, 0.0
        for cr, cd, w in corners:
            q = pts.get((cr, cd))
            if q is not None and w > 0:
                total += q * w
                weight += w
        if weight == 0.0:
            nearest = min(pts, key=lambda k: (k[0] - r) ** 2 + (k[1] - d) ** 2)
            return pts[nearest]
        return total / weight


def _bracket(axis: Sequence[float], x: float) -> tuple[float, float]:
    for lo, hi in itertools.pairwise(axis):
        if lo <= x <= hi:
            return lo, hi
    return axis[0], axis[0]


class ParetoTable:
    """The planner's input: Pareto-optimal configurations, optionally with the full grid.

    With the grid, quality between grid points is interpolated bilinearly. Without it, quality
    is interpolated along each pair's rows by heavy share.
    """

    def __init__(self, rows: Sequence[Config], grid: QualityGrid | None = None):
        if not rows:
            raise ValueError("a Pareto table needs at least one row")
        self.rows = list(rows)
        self.grid = grid

    def __len__(self) -> int:
        return len(self.rows)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ParetoTable):
            return NotImplemented
        mine = None if self.grid is None else self.grid.configs
        theirs = None if other.grid is None else other.grid.configs
        return self.rows == other.rows and mine == theirs

    @property
    def models(self) -> list[str]:
        seen: list[str] = []
        for c in self.rows:
            for m in c.pair:
                if m not in seen:
                    seen.append(m)
        return seen

    def quality(self, light: str, heavy: str, router_ratio: float, disc_ratio: float) -> float:
        if self.grid is not None and (light, heavy) in self.grid.pairs:
            return self.grid.quality(light, heavy, router_ratio, disc_ratio)
        rows = sorted((c for c in self.rows if c.pair == (light, heavy)), key=lambda c: c.heavy_ratio)
        if not rows:
            raise KeyError(f"no configurations for pair {light} -> {heavy}")
        h = heavy_share(router_ratio, disc_ratio)
        if h <= rows[0].heavy_ratio:
            return rows[0].quality
        for a, b in itertools.pairwise(rows):
            if a.heavy_ratio <= h <= b.heavy_ratio:
                w = 0.0 if b.heavy_ratio == a.heavy_ratio else (h - a.heavy_ratio) / (b.heavy_ratio - a.heavy_ratio)
                return a.quality * (1 - w) + b.quality * w
        return rows[-1].quality


# --------------------------------------------------------------------------- reading and writing


def _float(value: str | None, source: str, line: int, column: str) -> float:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(source, f"column '{column}': expected a number, got {value!r}", line=line) from None
    if not math.isfinite(x):
        raise DataError(source, f"column '{column}': not a finite number: {value!r}", line=line)
    return x


def _share(value: str | None, source: str, line: int, column: str) -> float:
    x = _float(value, source, line, column)
    if not 0.0 <= x <= 1.0:
        raise DataError(source, f"column '{column}': a share must be within 0..1, got {x}", line=line)
    return x


def _reader(text: str, source: str, required: Sequence[str]) -> csv.DictReader:
    reader = csv.DictReader(io.StringIO(text))
    fields = reader.fieldnames or []
    missing = [c for c in required if c not in fields]
    if missing:
        raise DataError(source, f"missing column(s) {', '.join(missing)} (header: {','.join(fields)})", line=1)
    return reader


def parse_grid(text: str, source: str, model_names: Sequence[str]) -> list[Config]:
    """Parse a HADIS configuration grid (``config_results_hybrid.csv``: model indices)."""
    reader = _reader(text, source, GRID_COLUMNS)
    out = []
    for row in reader:
        line = reader.line_num
        names = []
        for col in ("light_model", "heavy_model"):
            try:
                idx = int(row[col])
            except (TypeError, ValueError):
                raise DataError(
                    source, f"column '{col}': expected a model index, got {row[col]!r}", line=line
                ) from None
            if not 0 <= idx < len(model_names):
                raise DataError(source, f"column '{col}': model index {idx} is not in the profile", line=line)
            names.append(model_names[idx])
        r = _share(row["router_ratio"], source, line, "router_ratio")
        d = _share(row["disc_ratio"], source, line, "disc_ratio")
        h = _share(row["threshold"], source, line, "threshold")
        if abs(h - heavy_share(r, d)) > 0.011:
            raise DataError(source, f"threshold {h} != r + (1-r)d = {heavy_share(r, d):.3f}", line=line)
        out.append(
            Config(
                light=names[0],
                heavy=names[1],
                router_ratio=r,
                disc_ratio=d,
                quality=_float(row["fid"], source, line, "fid"),
                latency_s=_float(row["latency"], source, line, "latency"),
            )
        )
    if not out:
        raise DataError(source, "no rows", line=2)
    return out


def parse_table(text: str, source: str, known_models: Sequence[str] | None = None) -> list[Config]:
    """Parse a table in the project's format, or HADIS's ``hadis_hybrid_pareto.csv``."""
    header = next(csv.reader(io.StringIO(text)), [])
    hadis_form = "metric" not in header and "fid" in header
    reader = _reader(text, source, HADIS_PARETO_COLUMNS if hadis_form else TABLE_COLUMNS)
    out = []
    for row in reader:
        line = reader.line_num
        light, heavy = (row["light"] or "").strip(), (row["heavy"] or "").strip()
        for col, name in (("light", light), ("heavy", heavy)):
            if not name:
                raise DataError(source, f"column '{col}': empty model name", line=line)
            if known_models is not None and name not in known_models:
                raise DataError(source, f"column '{col}': model '{name}' is not in the profile", line=line)
        if light == heavy:
            raise DataError(source, "light and heavy model are the same", line=line)
        r = _share(row["router_ratio"], source, line, "router_ratio")
        d = _share(row["disc_ratio"], source, line, "disc_ratio")
        h = _share(row["heavy_ratio"], source, line, "heavy_ratio")
        if abs(h - heavy_share(r, d)) > 0.011:
            raise DataError(source, f"heavy_ratio {h} != r + (1-r)d = {heavy_share(r, d):.3f}", line=line)
        if hadis_form:
            metric, quality, latency = "fid", _float(row["fid"], source, line, "fid"), None
        else:
            metric = row["metric"]
            if metric not in METRICS:
                raise DataError(source, f"column 'metric': unknown metric {metric!r} (known: fid)", line=line)
            quality = _float(row["quality"], source, line, "quality")
            lat = row["latency_s"]
            latency = None if lat in ("", None) else _float(lat, source, line, "latency_s")
        out.append(Config(light, heavy, r, d, quality, latency, metric))
    if not out:
        raise DataError(source, "no rows", line=2)
    return out


def format_table(rows: Iterable[Config]) -> str:
    """CSV in the project's table format; floats are written with ``repr`` so reading is lossless."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TABLE_COLUMNS)
    for c in rows:
        w.writerow(
            [
                c.light,
                c.heavy,
                repr(c.router_ratio),
                repr(c.disc_ratio),
                repr(round(c.heavy_ratio, 12)),
                c.metric,
                repr(c.quality),
                "" if c.latency_s is None else repr(c.latency_s),
            ]
        )
    return buf.getvalue()


def read_file(path: str | Path) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise DataError(str(path), f"cannot read: {exc.strerror}") from None


def load_table(path: str | Path, known_models: Sequence[str] | None = None) -> list[Config]:
    return parse_table(read_file(path), str(path), known_models)


def load_grid(path: str | Path, model_names: Sequence[str]) -> list[Config]:
    return parse_grid(read_file(path), str(path), model_names)


def densify(grid: QualityGrid, step: float = 0.02) -> list[Config]:
    """Pareto front of the grid sampled every ``step`` in both shares, quality interpolated.

    Serving shares between grid points lets the planner use capacity that a coarse table
    leaves idle (a 0.1 grid forces a whole 0.1 step of heavy share at once). Expected latency
    of a sampled point is interpolated linearly from its pair's grid rows (it is linear in the
    shares: ``(1 - r) l_light + (r + (1 - r) d) l_heavy``).
    """
    if not 0 < step <= 1:
        raise ValueError("step must be within (0, 1]")
    n = round(1 / step)
    out = []
    for light, heavy in grid.pairs:
        rows = [c for c in grid.configs if c.pair == (light, heavy) and c.latency_s is not None]
        l_light, l_heavy = _pair_latencies(rows)
        for i in range(n + 1):
            r = i / n
            for j in range(n + 1):
                d = j / n
                q = grid.quality(light, heavy, r, d)
                lat = None if l_light is None else (1 - r) * l_light + heavy_share(r, d) * l_heavy
                out.append(Config(light, heavy, r, d, q, lat))
    return pareto_filter(out)


def _pair_latencies(rows: Sequence[Config]) -> tuple[float | None, float]:
    """Fit latency = (1 - r) a + h b from a pair's grid rows (least squares, 2 unknowns).

    Rounded to a nanosecond: the solver's last bits vary with the CPU and the BLAS build, and
    two pairs' light-only points (same light model: same quality, same latency) must tie
    exactly, or which of them the front keeps, and so which heavy model a plan loads, would
    depend on the machine."""
    if len(rows) < 2:
        return None, 0.0
    x = np.array([[1 - c.router_ratio, c.heavy_ratio] for c in rows])
    y = np.array([c.latency_s for c in rows])
    (a, b), *_ = np.linalg.lstsq(x, y, rcond=None)
    return round(float(a), 9), round(float(b), 9)


DENSE_STEP = 0.02


def planning_table(table: ParetoTable, step: float = DENSE_STEP) -> ParetoTable:
    """What the product plans over: the dense front of the grid when the table carries one.

    The simulator's ``hadis`` and ``hadis plan`` both use this, so they plan alike.
    """
    if table.grid is None:
        return table
    return ParetoTable(densify(table.grid, step), table.grid)
