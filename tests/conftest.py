"""Shared fixtures: the shipped E1 data and the shared reference data beside the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "hadis"
SHARED = ROOT.parent / "shared" / "data" / "hadis"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The project's own copy of the E1 data (the tests must not depend on ../shared)."""
    return DATA


@pytest.fixture(scope="session")
def sim_data(data_dir):
    from hadis.sim.data import load_data_dir

    return load_data_dir(data_dir, time_scale=0.1)


@pytest.fixture(scope="session")
def reference_profile(data_dir):
    from hadis.core.profile import load_profile

    return load_profile(data_dir / "profiles" / "l40s_hadis_reference.yaml")
