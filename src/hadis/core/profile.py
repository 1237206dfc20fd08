"""Latency profiles: which models a device serves and how long a batch takes.

The YAML format (``format: hadis.profile/v1``) is documented in ``profiles/README.md``. A
profile holds, per model, the measured latency of some batch sizes and a stated rule for the
sizes that were not measured:

- ``scaled``: ``latency(b) = b * latency(1) * factor`` for ``b > 1`` (HADIS assumes 0.9);
- ``interpolate``: piecewise linear between measured sizes; sizes above the largest measured
  size are infeasible (nothing is known about their memory use).

Sizes listed under ``infeasible`` (for example out of memory) and sizes above ``max_batch``
are never planned. ``latency(b)`` returns ``None`` for them.
"""

from __future__ import annotations

import csv
import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from hadis.core.errors import DataError

PROFILE_FORMAT = "hadis.profile/v1"
DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
RULES = ("scaled", "interpolate")


@dataclass(frozen=True)
class LatencyCurve:
    """Seconds per batch, by batch size."""

    measured: Mapping[int, float]
    rule: str = "interpolate"
    factor: float = 0.9
    max_batch: int | None = None
    infeasible: frozenset[int] = frozenset()

    def latency(self, batch: int) -> float | None:
        """Seconds for one batch of ``batch`` images, or ``None`` when infeasible."""
        if batch < 1 or batch in self.infeasible:
            return None
        if self.max_batch is not None and batch > self.max_batch:
            return None
        if batch in self.measured:
            return self.measured[batch]
        if self.rule == "scaled":
            return batch * self.measured[1] * self.factor
        sizes = sorted(self.measured)
        if batch > sizes[-1]:
            return None
        if batch < sizes[0]:
            return self.measured[sizes[0]] * batch / sizes[0]
        for lo, hi in itertools.pairwise(sizes):
            if lo < batch < hi:
                w = (batch - lo) / (hi - lo)
                return self.measured[lo] * (1 - w) + self.measured[hi] * w
        raise AssertionError("unreachable")  # pragma: no cover

    def scaled(self, time_scale: float) -> LatencyCurve:
        return replace(self, measured={b: s * time_scale for b, s in self.measured.items()})


@dataclass(frozen=True)
class ModelProfile:
    """One model variant: what it is and how fast it runs on the profiled device."""

    name: str
    source: str
    steps: int
    guidance: float
    resolution: int
    latency: LatencyCurve
    fid: float | None = None
    weights_gib: float | None = None
    load_seconds: float | None = None  # measured: weights from the cache to a served pipeline

    def batch_latency(self, batch: int) -> float | None:
        return self.latency.latency(batch)


@dataclass(frozen=True)
class Profile:
    """A device's latency profile for an ordered list of models (light to heavy)."""

    device: str
    models: tuple[ModelProfile, ...]
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate model names in profile: {names}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    def model(self, name: str) -> ModelProfile:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"model '{name}' is not in the profile (have: {', '.join(self.names)})")

    def index(self, name: str) -> int:
        return self.names.index(self.model(name).name)

    def feasible_batches(self, name: str) -> list[tuple[int, float]]:
        """(batch size, seconds) for every planned batch size the model can run."""
        m = self.model(name)
        out = []
        for b in self.batch_sizes:
            s = m.batch_latency(b)
            if s is not None:
                out.append((b, s))
        return out

    def scaled(self, time_scale: float) -> Profile:
        """The same profile with every latency multiplied by ``time_scale``."""
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        prov = dict(self.provenance)
        prov["time_scale"] = float(prov.get("time_scale", 1.0)) * time_scale
        models = tuple(replace(m, latency=m.latency.scaled(time_scale)) for m in self.models)
        return replace(self, models=models, provenance=prov)


# --------------------------------------------------------------------------- YAML format


def profile_to_dict(profile: Profile) -> dict[str, Any]:
    models = []
    for m in profile.models:
        lat: dict[str, Any] = {
            "unit": "seconds",
            "measured": {int(b): float(s) for b, s in sorted(m.latency.measured.items())},
            "rule": m.latency.rule,
        }
        if m.latency.rule == "scaled":
            lat["factor"] = m.latency.factor
        if m.latency.max_batch is not None:
            lat["max_batch"] = m.latency.max_batch
        if m.latency.infeasible:
            lat["infeasible"] = sorted(m.latency.infeasible)
        entry: dict[str, Any] = {
            "name": m.name,
            "source": m.source,
            "steps": m.steps,
            "guidance": m.guidance,
            "resolution": m.resolution,
        }
        if m.fid is not None:
            entry["fid"] = m.fid
        if m.weights_gib is not None:
            entry["weights_gib"] = m.weights_gib
        if m.load_seconds is not None:
            entry["load_seconds"] = m.load_seconds
        entry["latency"] = lat
        models.append(entry)
    return {
        "format": PROFILE_FORMAT,
        "device": profile.device,
        "provenance": dict(profile.provenance),
        "batch_sizes": list(profile.batch_sizes),
        "models": models,
    }


def dump_profile(profile: Profile) -> str:
    return yaml.safe_dump(profile_to_dict(profile), sort_keys=False)


def _need(d: Mapping[str, Any], key: str, source: str, where: str) -> Any:
    if not isinstance(d, Mapping) or key not in d:
        raise DataError(source, "missing required field", field=key if where == "the profile" else f"{where}.{key}")
    return d[key]


def _number(value: Any, source: str, fld: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(source, f"expected a number, got {value!r}", field=fld)
    if positive and value <= 0:
        raise DataError(source, f"must be > 0, got {value!r}", field=fld)
    return float(value)


def _int(value: Any, source: str, fld: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(source, f"expected a positive integer, got {value!r}", field=fld)
    return value


def profile_from_dict(doc: Any, source: str = "<profile>") -> Profile:
    """Validate and build a profile; errors name the field that is wrong."""
    if not isinstance(doc, Mapping):
        raise DataError(source, "a profile must be a YAML mapping")
    fmt = doc.get("format")
    if fmt != PROFILE_FORMAT:
        raise DataError(source, f"unsupported format {fmt!r}, expected {PROFILE_FORMAT!r}", field="format")
    device = str(_need(doc, "device", source, "the profile"))
    batch_sizes = doc.get("batch_sizes", list(DEFAULT_BATCH_SIZES))
    if not isinstance(batch_sizes, list) or not batch_sizes:
        raise DataError(source, "expected a non-empty list of batch sizes", field="batch_sizes")
    sizes = tuple(_int(b, source, "batch_sizes") for b in batch_sizes)
    raw_models = _need(doc, "models", source, "the profile")
    if not isinstance(raw_models, list) or not raw_models:
        raise DataError(source, "expected a non-empty list of models", field="models")
    models = []
    seen: set[str] = set()
    for i, m in enumerate(raw_models):
        where = f"models[{i}]"
        name = str(_need(m, "name", source, where))
        if name in seen:
            raise DataError(source, f"duplicate model name '{name}'", field=f"{where}.name")
        seen.add(name)
        lat = _need(m, "latency", source, where)
        models.append(
            ModelProfile(
                name=name,
                source=str(m.get("source", "")),
                steps=_int(_need(m, "steps", source, where), source, f"{where}.steps"),
                guidance=_number(m.get("guidance", 0.0), source, f"{where}.guidance"),
                resolution=_int(_need(m, "resolution", source, where), source, f"{where}.resolution"),
                latency=_curve_from_dict(lat, source, f"{where}.latency"),
                fid=None if m.get("fid") is None else _number(m["fid"], source, f"{where}.fid"),
                weights_gib=None
                if m.get("weights_gib") is None
                else _number(m["weights_gib"], source, f"{where}.weights_gib"),
                load_seconds=None
                if m.get("load_seconds") is None
                else _number(m["load_seconds"], source, f"{where}.load_seconds", positive=True),
            )
        )
    prov = doc.get("provenance", {})
    if not isinstance(prov, Mapping):
        raise DataError(source, "expected a mapping", field="provenance")
    return Profile(device=device, models=tuple(models), batch_sizes=sizes, provenance=dict(prov))


def _curve_from_dict(lat: Any, source: str, where: str) -> LatencyCurve:
    if not isinstance(lat, Mapping):
        raise DataError(source, "expected a mapping", field=where)
    unit = lat.get("unit", "seconds")
    if unit not in ("seconds", "milliseconds"):
        raise DataError(source, f"unit must be seconds or milliseconds, got {unit!r}", field=f"{where}.unit")
    per = 1e-3 if unit == "milliseconds" else 1.0
    measured_raw = _need(lat, "measured", source, where)
    if not isinstance(measured_raw, Mapping) or not measured_raw:
        raise DataError(source, "expected a non-empty mapping batch size -> latency", field=f"{where}.measured")
    measured = {
        _int(b, source, f"{where}.measured"): _number(s, source, f"{where}.measured[{b}]", positive=True) * per
        for b, s in measured_raw.items()
    }
    rule = lat.get("rule", "interpolate")
    if rule not in RULES:
        raise DataError(source, f"rule must be one of {', '.join(RULES)}, got {rule!r}", field=f"{where}.rule")
    if rule == "scaled" and 1 not in measured:
        raise DataError(source, "rule 'scaled' needs a measured batch size 1", field=f"{where}.measured")
    factor = _number(lat.get("factor", 0.9), source, f"{where}.factor", positive=True)
    max_batch = lat.get("max_batch")
    if max_batch is not None:
        max_batch = _int(max_batch, source, f"{where}.max_batch")
    infeasible = lat.get("infeasible", [])
    if not isinstance(infeasible, list):
        raise DataError(source, "expected a list of batch sizes", field=f"{where}.infeasible")
    return LatencyCurve(
        measured=measured,
        rule=rule,
        factor=factor,
        max_batch=max_batch,
        infeasible=frozenset(_int(b, source, f"{where}.infeasible") for b in infeasible),
    )


def parse_profile(text: str, source: str = "<profile>") -> Profile:
    """Parse a profile in our format, or the HADIS reference YAML; errors carry a line number."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = None if mark is None else mark.line + 1
        raise DataError(source, f"invalid YAML: {getattr(exc, 'problem', exc)}", line=line) from None
    try:
        if isinstance(doc, Mapping) and "format" not in doc and "models" in doc:
            return profile_from_hadis_reference(doc, source)
        return profile_from_dict(doc, source)
    except DataError as err:
        if err.line is not None or not err.field:
            raise
        raise DataError(source, err.message, line=line_of_field(text, err.field), field=err.field) from None


def line_of_field(text: str, field_path: str) -> int | None:
    """The 1-based line of ``a.b[2].c`` in a YAML text, or of its deepest existing parent."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    if node is None:
        return None
    for part in re.findall(r"\[\d+\]|[^.\[\]]+", field_path):
        if part.startswith("[") and isinstance(node, yaml.SequenceNode) and int(part[1:-1]) < len(node.value):
            node = node.value[int(part[1:-1])]
            continue
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if match is not None:
                node = match
                continue
        break
    return node.start_mark.line + 1


def load_profile(path: str | Path) -> Profile:
    """Load a profile in the project's format, or convert one of the reference formats.

    Recognised: ``hadis.profile/v1`` YAML, the HADIS artifact's reference YAML (it has
    ``latency_bs1_s`` per model) and DiffServe's per-batch CSV.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise DataError(str(path), f"cannot read: {exc.strerror}") from None
    if path.suffix == ".csv":
        return parse_diffserve_csv(text, str(path))
    return parse_profile(text, str(path))


def profile_from_hadis_reference(doc: Mapping[str, Any], source: str) -> Profile:
    """Convert the HADIS artifact's reference YAML (batch-1 latency plus the 0.9 batch rule)."""
    models = []
    raw_models = _need(doc, "models", source, "the profile")
    if not isinstance(raw_models, list) or not raw_models:
        raise DataError(source, "expected a non-empty list of models", field="models")
    for i, m in enumerate(raw_models):
        where = f"models[{i}]"
        bs1 = _number(_need(m, "latency_bs1_s", source, where), source, f"{where}.latency_bs1_s", positive=True)
        models.append(
            ModelProfile(
                name=str(_need(m, "name", source, where)),
                source=str(m.get("hf_repo", "")),
                steps=_int(_need(m, "steps", source, where), source, f"{where}.steps"),
                guidance=float(m.get("guidance", 0.0)),
                resolution=_int(_need(m, "resolution", source, where), source, f"{where}.resolution"),
                latency=LatencyCurve(measured={1: bs1}, rule="scaled", factor=0.9),
                fid=None if m.get("single_model_fid") is None else float(m["single_model_fid"]),
                weights_gib=None if m.get("approx_weights_gib") is None else float(m["approx_weights_gib"]),
            )
        )
    sizes = tuple(int(b) for b in doc.get("batch_sizes", DEFAULT_BATCH_SIZES))
    provenance = {
        "source": str(doc.get("source", "HADIS artifact")),
        "converted_from": Path(source).name,
        "batch_rule": str(doc.get("batch_model", "")),
        "time_scale": 1.0,
    }
    return Profile(
        device=str(doc.get("device", "unknown")), models=tuple(models), batch_sizes=sizes, provenance=provenance
    )


DIFFSERVE_COLUMNS = ("model", "hf_repo", "steps", "batch_size", "latency_ms")


def parse_diffserve_csv(text: str, source: str) -> Profile:
    """Convert DiffServe's measured per-batch latencies (ms, A100) into a profile."""
    reader = csv.DictReader(text.splitlines())
    if tuple(reader.fieldnames or ()) != DIFFSERVE_COLUMNS:
        raise DataError(source, f"expected columns {','.join(DIFFSERVE_COLUMNS)}, got {reader.fieldnames}", line=1)
    order: list[str] = []
    info: dict[str, dict[str, Any]] = {}
    for row in reader:
        line = reader.line_num
        try:
            name = row["model"]
            batch = int(row["batch_size"])
            ms = float(row["latency_ms"])
            steps = int(row["steps"])
        except (TypeError, ValueError):
            raise DataError(source, f"bad row {row}", line=line) from None
        if batch < 1 or not ms > 0:
            raise DataError(source, "batch_size must be >= 1 and latency_ms > 0", line=line)
        if name not in info:
            order.append(name)
            info[name] = {"source": row["hf_repo"], "steps": steps, "measured": {}}
        info[name]["measured"][batch] = ms / 1000.0
    if not order:
        raise DataError(source, "no rows", line=2)
    models = tuple(
        ModelProfile(
            name=n,
            source=info[n]["source"],
            steps=info[n]["steps"],
            guidance=0.0,
            resolution=512 if "xl" not in n else 1024,
            latency=LatencyCurve(measured=info[n]["measured"], rule="interpolate"),
        )
        for n in order
    )
    return Profile(
        device="NVIDIA A100",
        models=models,
        provenance={"source": "DiffServe artifact (measured)", "converted_from": Path(source).name, "time_scale": 1.0},
    )
