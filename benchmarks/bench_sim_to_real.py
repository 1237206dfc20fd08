"""Sim to real: the same trace through the demo cluster and through the replay, side by side.

Needs ``make demo`` running (the tiny cascade in ``hadis-demo``, its operator and Prometheus).
For each trace (a staircase and a spike, at the tiny cascade's scale) it

1. applies a new tiny cascade and waits until every worker is Ready (the replay starts from
   the plan of a new idle cascade, and an idle cascade keeps the split of its last surge);
2. sends the trace's arrivals open-loop to the router Service (prompt texts from DiffusionDB,
   in the order of the router features the replay scores), and samples the plan's replicas and
   the Ready worker pods every 2 s;
3. replays the same arrivals through ``hadis.sim`` with the tiny profile (the workers' fixed
   service times), 4 GPUs, the SLO, ours (``hadis``: late binding, surge re-plans, the
   operator's settle time after a rise, and the
   router's admission: refused at arrival when neither tier can finish in time, overflow to
   heavy when light cannot) and, as the
   model-load time, the pod start measured on the cluster (creation to Ready, the median of
   the demo's Ready worker pods: what a plan's new pod really takes here);

then prints violations and refused shares, the replicas over time side by side, and writes a
plot (``--plot``). A benchmark: it prints what it measured; nothing is asserted.

Run: ``python benchmarks/bench_sim_to_real.py`` (about 15 minutes: two new cascades, two traces).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import itertools
import json
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hack"))
import demo  # noqa: E402  (the local cluster's helpers)

from hadis.core.pareto import ParetoTable, QualityGrid, load_grid, pareto_filter, planning_table  # noqa: E402
from hadis.core.profile import load_profile  # noqa: E402
from hadis.core.routing import percentiles, rule_scores  # noqa: E402
from hadis.operator import logic  # noqa: E402
from hadis.operator.spec import CascadeSpec  # noqa: E402
from hadis.sim.data import PromptData, SimData, Trace, load_features  # noqa: E402
from hadis.sim.engine import Simulation  # noqa: E402
from hadis.sim.policies import DISPATCH, make_policy  # noqa: E402
from hadis.sim.run import SimSettings, context_for  # noqa: E402
from hadis.sim.tracegen import spikes, staircase, trace  # noqa: E402

NS, CASCADE = demo.DEMO_NS, "tiny"
# The operator counts a rise as going on for one rate window after it (its rate stands still
# between scrapes); the replay's own estimate needs none, but to predict this cluster it plans
# as the demo's cascade does: with the settle time of that cascade's spec.
RISE_SETTLE_S = CascadeSpec.parse(demo.tiny_cascade("http://unused")["spec"]).rise_settle_s
SLO_S, GPUS, BIN_S = 6.0, 4, 20.0
TRACES = {
    "staircase 1-3-6-3-1 req/s, 40 s steps": staircase([1, 3, 6, 3, 1], step_s=40),
    "spikes 1 -> 8 req/s, 10 s every 60 s": spikes(1, 8, every_s=60, width_s=10, duration_s=180),
}


def sim_data(data_dir: Path, pod_start_s: dict[str, float]) -> SimData:
    """The tiny profile and grid (this repository's), the DiffusionDB prompts' router scores,
    and the measured pod start as each model's load time."""
    profile = load_profile(ROOT / "profiles" / "tiny.yaml")
    models = tuple(dataclasses.replace(m, load_seconds=pod_start_s.get(m.name, m.load_seconds)) for m in profile.models)
    profile = dataclasses.replace(profile, models=models)
    rows = load_grid(ROOT / "profiles" / "tiny-grid.csv", profile.names)
    grid = QualityGrid(rows)
    front = ParetoTable(pareto_filter(rows), grid)
    features = load_features(data_dir / "router" / "hadis_features.csv")
    return SimData(profile, grid, planning_table(front), front, PromptData(percentiles(rule_scores(features)), {}))


def replay(data: SimData, t: Trace) -> dict:
    settings = SimSettings(gpus=GPUS, slo_s=SLO_S, replan_interval_s=10.0, timing="profile")
    ctx = context_for(data, settings)
    policy = dataclasses.replace(make_policy("hadis", ctx), shed=True, rise_settle_s=RISE_SETTLE_S)
    sim = Simulation(
        t, data.prompts, data.profile, policy, total_gpus=GPUS,
        slo_s=SLO_S,
        replan_interval_s=settings.interval, swap_delay_s=ctx.swap_s.__getitem__, dispatch=DISPATCH["hadis"],
        timing="profile",
    )  # fmt: skip
    result = sim.run()
    # one request per arrival: its images share its fate (the first image stands for it)
    first = {}
    for r in result.requests:
        if r.role != "heavy" or r.path == "H":
            first.setdefault(r.arrival, r)
    reqs = sorted(first.values(), key=lambda r: r.arrival)
    rows = [(r.arrival, "refused" if r.dropped else "late" if r.done - r.arrival > SLO_S else "ok") for r in reqs]
    plans = [(at, dict(p.gpus)) for at, p in result.plans]
    return {"requests": rows, "replicas": plans}


def _post(url: str, prompt: str) -> tuple[int, float]:
    req = urllib.request.Request(
        f"{url}/v1/images/generations", data=json.dumps({"prompt": prompt}).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()
            return r.status, time.monotonic() - t0
    except urllib.error.HTTPError as e:
        return e.code, time.monotonic() - t0
    except OSError:
        return 0, time.monotonic() - t0


def ready_workers(c: demo.Cluster) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in c.json("get", "pods", "-n", NS, "-l", "app.kubernetes.io/component=worker")["items"]:
        if demo.condition(p, "Ready").get("status") == "True" and not p["metadata"].get("deletionTimestamp"):
            model = p["metadata"]["labels"]["serving.hadis.dev/model"]
            out[model] = out.get(model, 0) + 1
    return out


def on_cluster(c: demo.Cluster, url: str, t: Trace, prompts: list[str]) -> dict:
    rows: list[tuple[float, str]] = []
    samples: list[tuple[float, dict, dict]] = []
    done = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        while not done.is_set():
            plan = (c.json("get", "dcas", CASCADE, "-n", NS).get("status") or {}).get("plan") or {}
            samples.append((time.monotonic() - t0, dict(plan.get("replicas") or {}), ready_workers(c)))
            done.wait(2.0)

    def one(at: float, prompt: str) -> None:
        status, seconds = _post(url, prompt)
        rows.append((at, "ok" if status == 200 and seconds <= SLO_S else "late" if status == 200 else "refused"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with concurrent.futures.ThreadPoolExecutor(256) as pool:
        for at, k in zip(t.arrival_s, t.prompt, strict=True):
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            pool.submit(one, float(at), prompts[int(k) % len(prompts)])
    done.set()
    sampler.join(5)
    return {"requests": sorted(rows), "samples": samples}


def shares(rows: list[tuple[float, str]]) -> tuple[float, float]:
    n = len(rows) or 1
    return sum(1 for _, s in rows if s != "ok") / n, sum(1 for _, s in rows if s == "refused") / n


def at_time(series: list[tuple[float, dict]], t: float) -> dict:
    last: dict = {}
    for at, value in series:
        if at > t:
            break
        last = value
    return last


def side_by_side(name: str, t: Trace, sim: dict, real: dict) -> None:
    sv, ss = shares(sim["requests"])
    rv, rs = shares(real["requests"])
    print(f"\n## {name}: {len(t)} requests over {t.duration_s:.0f}s\n")
    print(f"violations: replay {sv:.1%}, cluster {rv:.1%} ({abs(sv - rv) * 100:.1f} points apart); "
          f"refused: replay {ss:.1%}, cluster {rs:.1%}\n")  # fmt: skip
    print("| from (s) | req/s | violations replay / cluster | refused replay / cluster | "
          "plan replay (L/H) | plan cluster (L/H) | Ready pods cluster (L/H) |")  # fmt: skip
    print("| ---: | ---: | ---: | ---: | --- | --- | --- |")
    plans = [(at, g) for at, g in sim["replicas"]]
    real_plans = [(at, p) for at, p, _ in real["samples"]]
    real_ready = [(at, r) for at, _, r in real["samples"]]
    start = 0.0
    while start < t.duration_s:
        end = start + BIN_S
        s_bin = [r for r in sim["requests"] if start <= r[0] < end]
        r_bin = [r for r in real["requests"] if start <= r[0] < end]
        (sv, ss), (rv, rs) = shares(s_bin), shares(r_bin)

        def lh(d: dict) -> str:
            return f"{d.get('tiny-light', 0)}/{d.get('tiny-heavy', 0)}"

        mid = start + BIN_S / 2
        replicas = " | ".join(lh(at_time(series, mid)) for series in (plans, real_plans, real_ready))
        print(f"| {start:.0f} | {len(r_bin) / BIN_S:.1f} | {sv:.0%} / {rv:.0%} | {ss:.0%} / {rs:.0%} | {replicas} |")
        start = end


def plot(path: Path, results: list[tuple[str, Trace, dict, dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, len(results), figsize=(6.5 * len(results), 8.5), constrained_layout=True, squeeze=False)
    for col, (name, t, sim, real) in enumerate(results):
        edges = [i * BIN_S for i in range(int(t.duration_s // BIN_S) + 2)]
        for label, rows, style in (("replay", sim["requests"], "-"), ("cluster", real["requests"], "--")):
            xs, viol = [], []
            for a, b in itertools.pairwise(edges):
                part = [r for r in rows if a <= r[0] < b]
                if part:
                    xs.append(a)
                    viol.append(100 * shares(part)[0])
            axes[1][col].plot(xs, viol, style, label=label)
        counts = [sum(1 for a in t.arrival_s if e <= a < e + BIN_S) / BIN_S for e in edges[:-1]]
        axes[0][col].step(edges[:-1], counts, where="post", color="black")
        axes[0][col].set_title(name)
        axes[0][col].set_ylabel("requests/s")
        axes[1][col].set_ylabel("violations (%)")
        axes[1][col].legend()
        for model, color in (("tiny-light", "tab:blue"), ("tiny-heavy", "tab:red")):
            axes[2][col].step([a for a, _ in sim["replicas"]], [g.get(model, 0) for _, g in sim["replicas"]],
                              where="post", color=color, label=f"{model} replay plan")  # fmt: skip
            axes[2][col].plot([a for a, _, _ in real["samples"]], [r.get(model, 0) for _, _, r in real["samples"]],
                              "--", color=color, label=f"{model} cluster Ready pods")  # fmt: skip
        axes[2][col].set_ylabel("replicas")
        axes[2][col].set_xlabel("time (s)")
        axes[2][col].legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(ROOT / "data" / "hadis"))
    ap.add_argument("--plot", default=str(ROOT / "out" / "sim-to-real.png"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data_dir = Path(args.data_dir)
    c = demo.cluster_up()  # the running cluster (starts nothing that is up)
    if not c.kubectl("get", "dcas", CASCADE, "-n", NS, "--ignore-not-found", check=False).strip():
        sys.exit(f"no cascade {NS}/{CASCADE}: run `make demo` first")
    prom_url = c.json("get", "dcas", CASCADE, "-n", NS)["spec"]["prometheus"]["url"]
    prompts = (data_dir / "prompts" / "diffusiondb_5k.txt").read_text(encoding="utf-8").splitlines()
    results = []
    for name, shape in TRACES.items():
        # a new cascade for each trace, as the replay starts from the plan of a new idle one (an
        # idle cascade keeps the split of its last surge: the staircase's would start the spike)
        url = demo.fresh_cascade(c, prom_url, hold=True)
        pods = c.json("get", "pods", "-n", NS, "-l", "app.kubernetes.io/component=worker")["items"]
        starts = logic.start_seconds([s for s in (logic.pod_start(p) for p in pods) if s is not None])
        print(f"\nmeasured pod start (creation to Ready, median of the Ready pods): {starts}")
        t = trace(shape, args.seed, prompts=len(prompts))
        real = on_cluster(c, url, t, prompts)
        sim = replay(sim_data(data_dir, starts), t)
        side_by_side(name, t, sim, real)
        results.append((name, t, sim, real))
    plot(Path(args.plot), results)
    print(f"\nwrote {args.plot}")
    gaps = [abs(shares(s["requests"])[0] - shares(r["requests"])[0]) * 100 for _, _, s, r in results]
    print(f"violation share, replay against cluster: {', '.join(f'{g:.1f}' for g in gaps)} points apart "
          f"(mean {statistics.mean(gaps):.1f})")  # fmt: skip


if __name__ == "__main__":
    main()
