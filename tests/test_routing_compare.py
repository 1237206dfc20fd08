"""Learned, rule and random routing in the simulator at the same router share."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hadis.sim.routing_compare import compare_routing, markdown

LEARNED = Path(__file__).resolve().parents[1] / "profiles" / "router" / "learned-sdxl-lightning-2step.json"


@pytest.fixture(scope="module")
def rows(data_dir):
    return compare_routing(data_dir, shares=[0.1, 0.3], model_file=str(LEARNED))


def test_every_source_routes_the_same_share(rows):
    assert len(rows) == 6
    for r in rows:
        assert r.served == 1000
        assert r.routed_share == pytest.approx(r.share, abs=0.005)


def test_learned_routing_keeps_poor_renders_off_the_light_model(rows):
    for share in (0.1, 0.3):
        by = {r.source: r for r in rows if r.share == share}
        # random and rule routing hit the light model's worst prompts at chance rate
        assert by["random"].precision == pytest.approx(share, abs=0.05)
        assert by["rule"].precision == pytest.approx(share, abs=0.05)
        assert by["learned"].precision > share + 0.2
        assert by["learned"].poor_light_served < by["rule"].poor_light_served - 0.04
        assert by["learned"].p_real_light > by["rule"].p_real_light
        # the FID proxy sits between HADIS's two measured endpoints
        lo, hi = sorted((by["learned"].fid_router, by["learned"].fid_disc))
        assert lo <= by["learned"].fid_proxy <= hi
    assert "| 0.30 | learned |" in markdown(rows)


def test_route_eval_cli_prints_the_auc_table(data_dir):
    out = subprocess.run(
        [
            sys.executable, "-m", "hadis.cli", "route", "eval", "--data-dir", str(data_dir),
            "--light", "sdxl-lightning-2step", "--model-file", f"sdxl-lightning-2step={LEARNED}",
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    row = next(line for line in out.stdout.splitlines() if line.startswith("| sdxl-lightning-2step"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[3]) >= 0.75  # learned
    assert abs(float(cells[2]) - 0.5) < 0.05  # rule


def test_route_train_cli_writes_a_model_with_provenance(data_dir, tmp_path):
    out_file = tmp_path / "m.json"
    out = subprocess.run(
        [
            sys.executable, "-m", "hadis.cli", "route", "train", "--data-dir", str(data_dir),
            "--light", "sd3.5-medium", "--train", "0:600", "--out", str(out_file),
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "wrote" in out.stderr and "KiB" in out.stderr
    from hadis.scoring.model import load_model

    model = load_model(out_file)
    assert model.provenance["trained_on"] == "prompts 0..599 (600)"
    assert model.provenance["light_model"] == "sd3.5-medium"
