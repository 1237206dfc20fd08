import json
import math
import subprocess
import sys

import numpy as np
import pytest

from hadis.core.errors import DataError
from hadis.sim.data import PromptData, Trace, load_trace, parse_trace
from hadis.sim.engine import ServingPlan, Simulation
from hadis.sim.policies import SYSTEMS
from hadis.sim.run import SimSettings, run_system


@pytest.fixture(scope="module")
def short_trace(data_dir):
    t = load_trace(data_dir / "traces" / "maf_1to20qps.csv")
    keep = t.arrival_s < 120
    return Trace(t.arrival_s[keep], t.prompt[keep], "first 120 s of maf_1to20qps")


def test_trace_is_sorted_and_complete(data_dir):
    t = load_trace(data_dir / "traces" / "maf_1to64qps.csv")
    assert len(t) == 12270
    assert np.all(np.diff(t.arrival_s) >= 0)
    assert t.prompt.max() < 4000


@pytest.mark.parametrize(
    "text, message",
    [
        ("arrival,prompt\n1,2\n", "t.csv:1: expected header"),
        ("arrival_ms,prompt_index\n1,2\nx,3\n", "t.csv:3: expected a number"),
        ("arrival_ms,prompt_index\n1,2\n5,-1\n", "t.csv:3: prompt_index must be >= 0"),
        ("arrival_ms,prompt_index\n1,2,3\n", "t.csv:2: expected 2 columns"),
        ("arrival_ms,prompt_index\n", "t.csv:2: trace has no arrivals"),
    ],
)
def test_malformed_traces_name_file_and_line(text, message):
    with pytest.raises(DataError) as err:
        parse_trace(text, "t.csv")
    assert message in str(err.value)


@pytest.mark.parametrize("system", SYSTEMS)
def test_every_arrival_ends_exactly_once(system, sim_data, short_trace):
    settings = SimSettings(gpus=8, slo_s=6.0, time_scale=0.1)
    run = run_system(system, sim_data, short_trace, settings)
    s = run.summary
    assert s["arrivals"] == len(short_trace)
    assert s["served"] + s["dropped"] == s["arrivals"]
    assert sum(s["served_per_model"].values()) == s["served"]
    assert 0.0 <= s["slo_violation_ratio"] <= 1.0
    assert s["served_late"] + s["dropped"] == pytest.approx(s["slo_violation_ratio"] * s["arrivals"])
    assert sum(w.arrivals for w in run.windows) == s["arrivals"]
    # GPU time is accounted for every GPU over the whole run.
    total = sum(s["gpu_seconds_per_model"].values())
    assert 8 * short_trace.duration_s <= total <= 8 * (short_trace.duration_s + 40)


def test_engine_outcomes_are_disjoint_and_escalation_goes_to_heavy(sim_data, short_trace):
    plan = ServingPlan(
        gpus={"sdxl-lightning-2step": 4, "sd3.5-large-turbo": 4},
        batch={"sdxl-lightning-2step": 4, "sd3.5-large-turbo": 2},
        light="sdxl-lightning-2step",
        heavy="sd3.5-large-turbo",
        router_ratio=0.3,
        disc_ratio=0.5,
    )
    sim = Simulation(
        short_trace, sim_data.prompts, sim_data.profile, lambda obs: plan, total_gpus=8, slo_s=6.0, replan_interval_s=5
    )
    res = sim.run()
    for r in res.requests:
        assert not math.isnan(r.done)
        assert r.dropped or r.model in plan.gpus
    served = [r for r in res.requests if not r.dropped]
    direct = sum(r.path == "H" for r in served) / len(served)
    light_first = [r for r in served if r.path in ("L", "LH")]
    escalated = sum(r.path == "LH" for r in light_first) / len(light_first)
    assert direct == pytest.approx(0.3, abs=0.05)
    assert escalated == pytest.approx(0.5, abs=0.05)
    assert all(r.model == "sd3.5-large-turbo" for r in served if r.path in ("H", "LH"))
    assert all(r.model == "sdxl-lightning-2step" for r in served if r.path == "L")


def test_drop_rule_drops_at_dequeue_when_the_deadline_cannot_be_met(sim_data, short_trace):
    # One GPU of the heaviest model cannot keep up: queued requests must be dropped, not served late forever.
    plan = ServingPlan(gpus={"sd3.5-large": 1}, batch={"sd3.5-large": 1}, mixture={"sd3.5-large": 1.0})
    sim = Simulation(
        short_trace, sim_data.prompts, sim_data.profile, lambda obs: plan, total_gpus=1, slo_s=6.0, replan_interval_s=5
    )
    res = sim.run()
    served = [r for r in res.requests if not r.dropped]
    assert any(r.dropped for r in res.requests)
    # Served requests passed the rule: elapsed + batch time <= 1.5 x SLO.
    assert max(r.done - r.arrival for r in served) <= 1.5 * 6.0 + 1e-9


def test_plan_over_budget_is_refused(sim_data, short_trace):
    plan = ServingPlan(gpus={"sd3.5-large": 3}, batch={"sd3.5-large": 1}, mixture={"sd3.5-large": 1.0})
    sim = Simulation(
        short_trace, sim_data.prompts, sim_data.profile, lambda obs: plan, total_gpus=2, slo_s=6.0, replan_interval_s=5
    )
    with pytest.raises(ValueError, match="budget"):
        sim.run()


def test_missing_prompt_data_has_a_rule_not_a_crash():
    data = PromptData(np.array([0.1, 0.9]), {"m": np.array([[0.5, 0.6, 0.7, 0.8]])})
    assert data.score_percentile(1) == 0.9
    u = data.score_percentile(12345)
    assert 0 <= u < 1 and u == data.score_percentile(12345)
    assert data.p_real_of("m", 5, 0) is None and data.p_real_of("other", 0, 0) is None
    assert 0 <= data.confidence_percentile("m", 5, 2) < 1
    assert data.confidence_percentile("m", 0, 0) == 0.0


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hadis.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_sim_writes_json_csv_and_plot(tmp_path, data_dir, short_trace):
    trace = tmp_path / "short.csv"
    trace.write_text(
        "arrival_ms,prompt_index\n"
        + "".join(f"{int(a * 1000)},{p}\n" for a, p in zip(short_trace.arrival_s, short_trace.prompt, strict=True))
    )
    out = run_cli(
        "sim", "--trace", str(trace), "--data-dir", str(data_dir), "--system", "clipper-light,hadis",
        "--gpus", "8", "--slo", "6", "--time-scale", "0.1",
        "--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv"), "--plot", str(tmp_path / "r.png"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    for system in ("clipper-light", "hadis"):
        s = doc["systems"][system]
        for key in ("arrivals", "served", "dropped", "slo_violation_ratio", "fid_mean", "p_real_mean",
                    "served_per_model", "gpu_seconds_per_model"):  # fmt: skip
            assert key in s
    assert doc["systems"]["clipper-light"]["fid_mean"] == pytest.approx(29.75)
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "r.csv").read_text().startswith("system,window_start_s")
    assert "| hadis |" in out.stdout


@pytest.mark.parametrize(
    "target, content, message",
    [
        ("traces", "arrival_ms,prompt_index\n1,2\n3,oops\n", "bad-trace.csv:3:"),
        (
            "profiles/l40s_hadis_reference.yaml",
            "models:\n  - name: x\n",
            "l40s_hadis_reference.yaml:2: field 'models[0].latency_bs1_s'",
        ),
        (
            "tables/config_results_hybrid.csv",
            "light_model,heavy_model,router_ratio,disc_ratio,threshold,latency,fid\n0,1,0.0,0.0,0.0,0.5,x\n",
            "config_results_hybrid.csv:2:",
        ),
    ],
)  # fmt: skip
def test_cli_malformed_input_is_one_line_and_exit_2(tmp_path, data_dir, target, content, message):
    import shutil

    d = tmp_path / "data"
    shutil.copytree(data_dir, d)
    trace = d / "traces" / "maf_1to20qps.csv"
    if target == "traces":
        trace = tmp_path / "bad-trace.csv"
        trace.write_text(content)
    else:
        (d / target).write_text(content)
    out = run_cli("sim", "--trace", str(trace), "--data-dir", str(d), "--system", "hadis")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.stderr


def test_cli_help_and_unknown_system():
    assert "replay a trace" in run_cli("--help").stdout
    assert "--time-scale" in run_cli("sim", "--help").stdout
    out = run_cli("sim", "--trace", "x.csv", "--system", "nope")
    assert out.returncode == 2 and "unknown system" in out.stderr


def test_cli_plan_from_the_shipped_configmap(data_dir):
    cm = data_dir.parents[1] / "profiles" / "configmap-l40s.yaml"
    out = run_cli("plan", "--configmap", str(cm), "--gpus", "16", "--slo", "60", "--rate", "4", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["feasible"] and 2 <= sum(a["gpus"] for a in plan["allocations"]) == plan["gpus"] <= 16
    assert 0 < plan["headroom_s"] <= 60
    out = run_cli("plan", "--configmap", str(cm), "--gpus", "2", "--slo", "1", "--rate", "400")
    assert out.returncode == 1 and "INFEASIBLE" in out.stdout
    out = run_cli("plan", "--configmap", str(cm), "--gpus", "1", "--slo", "1", "--rate", "4")
    assert out.returncode == 2 and "cannot hold one replica of each tier" in out.stderr
    out = run_cli("plan", "--configmap", str(cm), "--gpus", "2", "--slo", "1", "--rate", "400", "--json")
    plan = json.loads(out.stdout)  # strict JSON: no Infinity
    assert plan["feasible"] is False and plan["predicted_latency_s"] is None and plan["reason"]


def test_cli_plan_for_a_cascade_prints_what_the_operator_deploys(tmp_path, data_dir):
    import yaml

    root = data_dir.parents[1]
    doc = yaml.safe_load((root / "crds" / "examples" / "cascade-e1.yaml").read_text())
    per = {"sd3.5-medium": 2, "sd3.5-large": 2}
    for m in doc["spec"]["models"]:
        m["gpusPerReplica"] = per.get(m["name"], 1)
    cascade = tmp_path / "cascade.yaml"
    cascade.write_text(yaml.safe_dump(doc))
    cm = root / "profiles" / "configmap-l40s.yaml"
    for rate in ("0.5", "5", "20", "40", "80"):
        out = run_cli("plan", "--cascade", str(cascade), "--configmap", str(cm), "--rate", rate, "--json")
        assert out.returncode in (0, 1), out.stderr
        plan = json.loads(out.stdout)
        assert set(plan["replicas"]) == {m["name"] for m in doc["spec"]["models"]}
        for a in plan["allocations"]:
            assert a["gpus"] == plan["replicas"][a["model"]] * per.get(a["model"], 1) and a["replicas"] >= 1
        assert 2 <= plan["gpus"] <= 16
        if rate == "0.5":
            assert plan["gpus"] < 16
    out = run_cli("plan", "--cascade", str(tmp_path / "none.yaml"), "--configmap", str(cm), "--rate", "1")
    assert out.returncode == 2 and "none.yaml" in out.stderr
    out = run_cli("plan", "--configmap", str(cm), "--rate", "1")
    assert out.returncode == 2 and "--gpus and --slo are required" in out.stderr
