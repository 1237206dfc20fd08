"""The planning bundle: a profile plus its Pareto table (and grid), as a Kubernetes ConfigMap.

The ConfigMap is the operator's input. Its data keys are ``profile.yaml``, ``pareto.csv`` and,
when the full grid travels with it, ``grid.csv`` (same columns as ``pareto.csv``). Everything
is text in data-only formats, and reading it back gives equal objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import yaml

from hadis.core.errors import DataError
from hadis.core.pareto import Config, ParetoTable, QualityGrid, format_table, parse_table
from hadis.core.profile import Profile, dump_profile, parse_profile

PROFILE_KEY = "profile.yaml"
TABLE_KEY = "pareto.csv"
GRID_KEY = "grid.csv"
LABELS = {"app.kubernetes.io/part-of": "hadis", "app.kubernetes.io/component": "planning-profile"}


@dataclass(frozen=True)
class Bundle:
    profile: Profile
    table: ParetoTable

    def check(self) -> None:
        """Every model the table names must be in the profile."""
        missing = [m for m in self.table.models if m not in self.profile.names]
        if missing:
            raise DataError("pareto.csv", f"models not in the profile: {', '.join(missing)}")

    def restricted(self, names: Sequence[str]) -> Bundle | None:
        """The bundle of only ``names``' models, in the profile's order: the table's and the
        grid's rows of pairs of two of them. None when no row pairs two of them (nothing to
        plan). A cascade that lists some of its profile's models is planned with this, so no
        plan ever names a model the cascade does not run."""
        keep = set(names)
        if set(self.profile.names) <= keep:
            return self
        rows = [c for c in self.table.rows if c.light in keep and c.heavy in keep]
        if not rows:
            return None
        grid = self.table.grid
        if grid is not None:
            configs = [c for c in grid.configs if c.light in keep and c.heavy in keep]
            grid = QualityGrid(configs) if configs else None
        profile = replace(self.profile, models=tuple(m for m in self.profile.models if m.name in keep))
        return Bundle(profile, ParetoTable(rows, grid))


def to_configmap(bundle: Bundle, name: str, namespace: str | None = None) -> dict[str, Any]:
    bundle.check()
    data = {PROFILE_KEY: dump_profile(bundle.profile), TABLE_KEY: format_table(bundle.table.rows)}
    if bundle.table.grid is not None:
        data[GRID_KEY] = format_table(bundle.table.grid.configs)
    metadata: dict[str, Any] = {"name": name, "labels": dict(LABELS)}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def dump_configmap(bundle: Bundle, name: str, namespace: str | None = None) -> str:
    return yaml.safe_dump(to_configmap(bundle, name, namespace), sort_keys=False, width=1000)


def from_configmap(manifest: Mapping[str, Any], source: str = "<configmap>") -> Bundle:
    """Read a bundle back from a ConfigMap manifest or object (``data`` holds the files)."""
    data = manifest.get("data") if isinstance(manifest, Mapping) else None
    if not isinstance(data, Mapping):
        raise DataError(source, "not a ConfigMap: no 'data' mapping", field="data")
    for key in (PROFILE_KEY, TABLE_KEY):
        if key not in data:
            raise DataError(source, f"ConfigMap has no key '{key}'", field=f"data.{key}")
    profile = parse_profile(data[PROFILE_KEY], f"{source}[{PROFILE_KEY}]")
    rows: list[Config] = parse_table(data[TABLE_KEY], f"{source}[{TABLE_KEY}]", profile.names)
    grid = None
    if GRID_KEY in data:
        grid = QualityGrid(parse_table(data[GRID_KEY], f"{source}[{GRID_KEY}]", profile.names))
    bundle = Bundle(profile, ParetoTable(rows, grid))
    bundle.check()
    return bundle


def parse_configmap(text: str, source: str = "<configmap>") -> Bundle:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DataError(source, f"invalid YAML: {exc}") from None
    return from_configmap(doc, source)
