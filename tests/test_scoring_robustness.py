"""Any prompt gets a defined score: empty, huge, control characters, emoji, other scripts, bad UTF-8."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hadis.cli.route import _read_lines
from hadis.core.routing import HADIS_FEATURES
from hadis.scoring.features import MAX_PROMPT_CHARS, extract
from hadis.scoring.model import default_rule_model, load_model

LEARNED = Path(__file__).resolve().parents[1] / "profiles" / "router" / "learned-sdxl-lightning-2step.json"
RULE = default_rule_model()
MODEL = load_model(LEARNED)

odd_text = st.one_of(
    st.text(),  # any code points, lone surrogates included
    st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
    st.text(alphabet=st.sampled_from("a b\x00\x07\t\n\r\u200b\ufeff😀🎨👩‍🎨,.!'-漢字ñ Привет مرحبا")),
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=5), st.integers(1, 3000)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(odd_text)
def test_any_text_has_defined_features_and_scores(text):
    f = extract(text)
    assert len(f.values) == len(HADIS_FEATURES)
    assert all(isinstance(v, int) and v >= 0 for v in f.values)
    assert f.values[0] <= len(f.tokens) <= MAX_PROMPT_CHARS
    assert f.truncated == (len(text) > MAX_PROMPT_CHARS)
    for model in (RULE, MODEL):
        assert math.isfinite(model.score(text))


@given(st.text(max_size=50))
def test_score_depends_only_on_the_first_max_chars(tail):
    head = "portrait of a knight in silver armour, " * 60
    assert len(head) > MAX_PROMPT_CHARS
    assert MODEL.score(head + tail) == MODEL.score(head)
    assert RULE.score(head + tail) == RULE.score(head)


@given(st.lists(st.binary(max_size=80).filter(lambda b: b"\n" not in b), max_size=20))
def test_stdin_lines_decode_without_loss_of_lines(lines):
    import io

    decoded = _read_lines(io.BytesIO(b"".join(line + b"\n" for line in lines)))
    assert len(decoded) == len(lines)
    for raw, (text, invalid) in zip(lines, decoded, strict=True):
        try:
            assert text == raw.removesuffix(b"\r").decode("utf-8")
            assert not invalid
        except UnicodeDecodeError:
            assert invalid and "\ufffd" in text


@pytest.mark.parametrize("mode", ["rule", "learned"])
def test_route_score_cli_writes_one_json_line_per_prompt(mode):
    prompts = [
        b"a red ball sits in the grass on a green field",
        b"",
        b"\xff\xfe not utf-8 \x01",
        "a cat 😀 漢字".encode(),
        b"x" * 100_000,
    ]
    out = subprocess.run(
        [sys.executable, "-m", "hadis.cli", "route", "score", "--mode", mode],
        input=b"\n".join(prompts) + b"\n",
        capture_output=True,
        check=True,
    )
    lines = [json.loads(line) for line in out.stdout.decode().splitlines()]
    assert len(lines) == len(prompts)
    assert all(line["mode"] == mode and math.isfinite(line["score"]) for line in lines)
    assert set(lines[0]["features"]) == set(HADIS_FEATURES)
    assert lines[2].get("invalid_utf8") is True
    assert lines[4].get("truncated") is True
    assert lines[1]["features"]["prompt_length"] == 0


def test_route_score_cli_refuses_a_model_of_the_other_mode():
    out = subprocess.run(
        [sys.executable, "-m", "hadis.cli", "route", "score", "--mode", "rule", "--model-file", str(LEARNED)],
        input=b"a dog\n",
        capture_output=True,
    )
    assert out.returncode == 2
    assert b"is a learned model, not rule" in out.stderr


def test_route_score_cli_reports_a_broken_model_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "hadis.router-model/v1", "mode": "learned", "terms": {}}')
    out = subprocess.run(
        [sys.executable, "-m", "hadis.cli", "route", "score", "--mode", "learned", "--model-file", str(bad)],
        input=b"a dog\n",
        capture_output=True,
    )
    assert out.returncode == 2
    assert out.stderr.decode().startswith(f"error: {bad}: field 'terms'")
