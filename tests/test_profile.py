import pytest

from hadis.core.errors import DataError
from hadis.core.profile import (
    LatencyCurve,
    dump_profile,
    load_profile,
    parse_profile,
)


def test_hadis_reference_profile_converts_with_the_batch_rule(reference_profile):
    p = reference_profile
    assert p.names == ("sdxl-lightning-2step", "sd3.5-large-turbo", "sd3.5-medium", "sd3.5-large")
    light = p.model("sdxl-lightning-2step")
    assert light.batch_latency(1) == pytest.approx(0.5)
    assert light.batch_latency(4) == pytest.approx(4 * 0.5 * 0.9)
    assert light.fid == pytest.approx(29.75)
    assert p.model("sd3.5-large").source == "stabilityai/stable-diffusion-3.5-large"
    assert p.batch_sizes == (1, 2, 4, 8, 16, 32)


def test_e1_scaling_divides_latencies_by_ten(reference_profile):
    e1 = reference_profile.scaled(0.1)
    assert [m.batch_latency(1) for m in e1.models] == pytest.approx([0.05, 0.13, 1.3, 2.7])
    assert e1.provenance["time_scale"] == pytest.approx(0.1)


def test_shipped_profiles_match_the_conversion(reference_profile, data_dir):
    root = data_dir.parents[1] / "profiles"
    assert load_profile(root / "l40s-hadis-reference.yaml") == reference_profile
    assert load_profile(root / "l40s-hadis-e1.yaml") == reference_profile.scaled(0.1)


def test_diffserve_csv_loads_measured_points(data_dir):
    p = load_profile(data_dir / "profiles" / "a100_diffserve.csv")
    turbo = p.model("sd-turbo")
    assert turbo.batch_latency(1) == pytest.approx(0.100)
    assert turbo.batch_latency(32) == pytest.approx(1.560)
    assert turbo.latency.rule == "interpolate"
    # Between measured points: linear; above the largest: unknown, so infeasible.
    assert turbo.batch_latency(3) == pytest.approx((0.150 + 0.220) / 2)
    assert turbo.batch_latency(64) is None


def test_curve_rules_and_infeasible_sizes():
    c = LatencyCurve(measured={1: 1.0, 4: 3.0}, rule="interpolate", infeasible=frozenset({2}))
    assert c.latency(2) is None
    assert c.latency(3) == pytest.approx(1 + 2 * (2 / 3))
    assert c.latency(8) is None
    s = LatencyCurve(measured={1: 1.0, 2: 1.5}, rule="scaled", factor=0.9, max_batch=8)
    assert s.latency(2) == pytest.approx(1.5)  # measured wins over the rule
    assert s.latency(8) == pytest.approx(7.2)
    assert s.latency(16) is None


def test_round_trip_is_lossless(reference_profile):
    again = parse_profile(dump_profile(reference_profile))
    assert again == reference_profile


BASE = """
format: hadis.profile/v1
device: test
models:
  - name: a
    steps: 2
    resolution: 512
    latency: {measured: {1: 0.5}, rule: scaled}
"""


@pytest.mark.parametrize(
    "edit, expected",
    [
        (("steps: 2", "steps: two"), "bad.yaml:6: field 'models[0].steps'"),
        (("rule: scaled", "rule: cubic"), "bad.yaml:8: field 'models[0].latency.rule'"),
        (("{1: 0.5}", "{1: -0.5}"), "must be > 0"),
        (("{1: 0.5}", "{2: 0.5}"), "needs a measured batch size 1"),
        (("format: hadis.profile/v1", "format: other"), "unsupported format"),
        (("    resolution: 512\n", ""), "bad.yaml:5: field 'models[0].resolution': missing required field"),
        (("device: test", "device: [unclosed"), "invalid YAML"),
        (("device: test\n", ""), "bad.yaml:2: field 'device': missing required field"),
    ],
)
def test_errors_name_the_file_and_field(edit, expected):
    text = BASE.replace(*edit)
    with pytest.raises(DataError) as err:
        parse_profile(text, "bad.yaml")
    assert str(err.value).startswith("bad.yaml")
    assert expected in str(err.value)


def test_duplicate_model_names_are_refused():
    text = (
        BASE
        + """  - name: a
    steps: 2
    resolution: 512
    latency: {measured: {1: 0.5}}
"""
    )
    with pytest.raises(DataError, match="duplicate model name 'a'"):
        parse_profile(text, "dup.yaml")


def test_unreadable_file_names_the_path(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        load_profile(tmp_path / "missing.yaml")
