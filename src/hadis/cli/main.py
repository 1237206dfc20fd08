"""The ``hadis`` parser, the commands of no group of their own (sim, table, profile convert,
plan), and ``main``, which maps bad input data to one line and exit code 2."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hadis import __version__
from hadis.cli.common import _positive_int, write_output
from hadis.core.errors import DataError
from hadis.jsonsafe import json_safe

DEFAULT_DATA_DIR = "data/hadis"


def _data_dir_default() -> str:
    """The shipped E1 data when run from a checkout, else the folder named by the user."""
    here = Path(__file__).resolve().parents[3] / DEFAULT_DATA_DIR
    return str(here) if here.is_dir() else DEFAULT_DATA_DIR


def cmd_sim(args: argparse.Namespace) -> int:
    from hadis.sim import report
    from hadis.sim.data import load_data_dir, load_trace
    from hadis.sim.policies import SYSTEMS
    from hadis.sim.run import SimSettings, run_systems

    systems = list(SYSTEMS) if args.system == "all" else [s.strip() for s in args.system.split(",")]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        print(f"hadis sim: unknown system(s) {', '.join(unknown)}; known: {', '.join(SYSTEMS)}, all", file=sys.stderr)
        return 2
    data = load_data_dir(args.data_dir, args.time_scale)
    trace = load_trace(args.trace)
    settings = SimSettings(
        gpus=args.gpus,
        slo_s=args.slo,
        time_scale=args.time_scale,
        replan_interval_s=args.replan_interval,
        swap=not args.no_swap_delay,
        timing=args.timing,
        dispatch=args.dispatch,
    )
    print(
        f"replaying {trace.source}: {len(trace)} arrivals over {trace.duration_s:.0f}s, {args.gpus} GPUs, "
        f"SLO {args.slo:g}s, time scale {args.time_scale:g}, re-plan every {settings.interval:g}s",
        file=sys.stderr,
    )
    start = time.perf_counter()
    runs = run_systems(systems, data, trace, settings, progress=lambda line: print(line, file=sys.stderr))
    print(f"{len(runs)} system(s) in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    print(report.markdown_table(runs))
    if args.json:
        report.write_json(args.json, runs, settings, str(args.trace))
        print(f"wrote {args.json}", file=sys.stderr)
    if args.csv:
        report.write_csv(args.csv, runs)
        print(f"wrote {args.csv}", file=sys.stderr)
    if args.plot:
        title = f"{Path(args.trace).name}: {args.gpus} GPUs, SLO {args.slo:g}s"
        report.plot(args.plot, runs, settings, title)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def cmd_table_build(args: argparse.Namespace) -> int:
    from hadis.core.pareto import format_table, load_grid, pareto_filter
    from hadis.core.profile import load_profile

    profile = load_profile(args.profile)
    rows = pareto_filter(load_grid(args.grid, profile.names))
    text = format_table(rows)
    write_output(text, args.out, f"{len(rows)} Pareto rows")
    return 0


def cmd_table_compare(args: argparse.Namespace) -> int:
    from hadis.core.pareto import load_grid, load_table, pareto_filter
    from hadis.core.profile import load_profile
    from hadis.core.table_compare import compare

    profile = load_profile(args.profile)
    grid = load_grid(args.grid, profile.names)
    print(compare(pareto_filter(grid), load_table(args.table, profile.names), grid))
    return 0


def cmd_configmap(args: argparse.Namespace) -> int:
    from hadis.core.bundle import Bundle, dump_configmap
    from hadis.core.pareto import ParetoTable, QualityGrid, load_grid, load_table, pareto_filter
    from hadis.core.profile import load_profile

    profile = load_profile(args.profile).scaled(args.time_scale)
    grid_rows = load_grid(args.grid, profile.names) if args.grid else None
    if args.table:
        rows = load_table(args.table, profile.names)
    elif grid_rows is not None:
        rows = pareto_filter(grid_rows)
    else:
        print("hadis table configmap: give --table, --grid or both", file=sys.stderr)
        return 2
    table = ParetoTable(rows, QualityGrid(grid_rows) if grid_rows and args.with_grid else None)
    text = dump_configmap(Bundle(profile, table), args.name, args.namespace)
    write_output(text, args.out, f"ConfigMap {args.name}")
    return 0


def cmd_profile_convert(args: argparse.Namespace) -> int:
    from hadis.core.profile import dump_profile, load_profile

    profile = load_profile(args.source).scaled(args.time_scale)
    text = dump_profile(profile)
    write_output(text, args.out)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from hadis.core.bundle import parse_configmap
    from hadis.core.pareto import read_file

    bundle = parse_configmap(read_file(args.configmap), args.configmap)
    try:
        return _plan_and_print(args, bundle)
    except ValueError as e:  # the budget cannot hold the cascade, a bad objective: the user's input
        print(f"hadis plan: {e}", file=sys.stderr)
        return 2


def _plan_and_print(args: argparse.Namespace, bundle) -> int:
    from hadis.core.pareto import planning_table
    from hadis.core.planner import Demand, plan_cascade, plan_hadis_reference

    replicas = None
    if args.cascade:
        plan, replicas = _plan_cascade_file(bundle, args.cascade, args.rate)
    else:
        if args.gpus is None or args.slo is None:
            print("hadis plan: --gpus and --slo are required without --cascade", file=sys.stderr)
            return 2
        queues = {}
        for item in args.queue or []:
            model, _, n = item.partition("=")
            queues[model] = int(n)
        demand = Demand(args.rate, queues)
        if args.policy == "hadis":  # ours plans over the dense front of the grid when the ConfigMap has one
            plan = plan_cascade(bundle.profile, planning_table(bundle.table), args.gpus, args.slo, demand)
        else:
            plan = plan_hadis_reference(bundle.profile, bundle.table, args.gpus, args.slo, demand)
    if args.json:
        out = {
            "policy": plan.policy,
            "feasible": plan.feasible,
            "reason": plan.reason,
            "objective_met": plan.objective_met,
            "light": plan.config.light,
            "heavy": plan.config.heavy,
            "router_ratio": plan.config.router_ratio,
            "disc_ratio": plan.config.disc_ratio,
            "predicted_quality": plan.predicted_quality,
            "predicted_latency_s": plan.predicted_latency_s,
            "headroom_s": plan.headroom_s,
            "gpus": plan.total_gpus,
            **({"replicas": replicas} if replicas is not None else {}),
            "allocations": [a.__dict__ for a in plan.allocations],
        }
        print(json.dumps(json_safe(out), indent=2))
    else:
        print(plan.summary())
        if replicas is not None:
            print("replicas: " + ", ".join(f"{m}={n}" for m, n in replicas.items()))
    return 0 if plan.feasible else 1


def _plan_cascade_file(bundle, path: str, rate: float):
    """What the operator would deploy for the DiffusionCascade in ``path`` at ``rate`` req/s."""
    import yaml

    from hadis.core.errors import DataError
    from hadis.operator import logic
    from hadis.operator.spec import CascadeSpec

    try:
        doc = yaml.safe_load(Path(path).read_text())
        ps = CascadeSpec.parse(doc["spec"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as e:
        raise DataError(path, f"not a DiffusionCascade with spec.gpuBudget.max, sloSeconds and models: {e}") from None
    checked = logic.plannable(ps, bundle, "given")
    if checked.bundle is None:
        raise DataError(path, checked.message)
    decision = logic.decide(checked.bundle, ps, rate, None)
    return decision.plan, decision.replicas


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hadis",
        description="Hybrid adaptive serving of text-to-image diffusion models: plan, simulate, serve.",
    )
    p.add_argument("--version", action="version", version=f"hadis {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser(
        "sim",
        help="replay a trace through the planner and router against the baselines",
        description="Replay an arrival trace (arrival_ms,prompt_index) through each serving system and "
        "report SLO violations, drops and quality. Example (the paper's E1): hadis sim --trace "
        "data/hadis/traces/maf_1to64qps.csv --system all --gpus 16 --slo 6 --time-scale 0.1 --plot e1.png",
    )
    s.add_argument("--trace", required=True, help="CSV with arrival_ms,prompt_index (any order)")
    s.add_argument(
        "--data-dir", default=_data_dir_default(), help="folder shaped like shared/data/hadis (default: %(default)s)"
    )
    s.add_argument(
        "--system",
        default="all",
        help="clipper-light, clipper-heavy, infaas-acc, proteus, diffserve, hadis-ref or hadis; a comma list; or all",
    )
    s.add_argument("--gpus", type=_positive_int, default=16, help="GPU budget (default: %(default)s)")
    s.add_argument("--slo", type=_positive_float, default=6.0, help="latency SLO in seconds (default: %(default)s)")
    s.add_argument(
        "--time-scale",
        type=_positive_float,
        default=0.1,
        help="multiply profile latencies by this (E1: 0.1; default: %(default)s)",
    )
    s.add_argument(
        "--replan-interval",
        type=_positive_float,
        default=None,
        help="seconds between re-plans (default: 50 x time scale)",
    )
    s.add_argument(
        "--timing",
        choices=("artifact", "profile"),
        default="artifact",
        help="how a worker is timed: artifact = the HADIS artifact's simulated worker (its batch "
        "rounding, 10 ms discriminator, model switches free); profile = the profile's latencies and "
        "a model switch costs its load time (default: %(default)s)",
    )
    s.add_argument(
        "--no-swap-delay",
        action="store_true",
        help="with --timing profile, a GPU changes model instantly (default: its load time, scaled)",
    )
    s.add_argument(
        "--dispatch",
        choices=("model-queue", "random-worker", "least-in-flight"),
        default=None,
        help="send every system's requests this way instead of its own (an ablation; default: the "
        "artifact's systems random-worker, hadis model-queue: the router's late binding)",
    )
    s.add_argument("--json", help="write per-system totals as JSON")
    s.add_argument("--csv", help="write per-window series as CSV")
    s.add_argument("--plot", help="write a Figure-7-style PNG")
    s.set_defaults(func=cmd_sim)

    t = sub.add_parser("table", help="build, compare and export Pareto tables")
    tsub = t.add_subparsers(dest="table_command", metavar="ACTION", required=True)
    tb = tsub.add_parser("build", help="Pareto-filter a configuration grid (FID vs expected latency)")
    tb.add_argument("--grid", required=True, help="grid CSV such as tables/config_results_hybrid.csv")
    tb.add_argument("--profile", required=True, help="profile whose model order the grid's indices use")
    tb.add_argument("--out", help="output CSV (default: stdout)")
    tb.set_defaults(func=cmd_table_build)
    tc = tsub.add_parser("compare", help="compare our Pareto filter of a grid with another table")
    tc.add_argument("--grid", required=True)
    tc.add_argument("--profile", required=True)
    tc.add_argument("--table", required=True, help="e.g. tables/hadis_hybrid_pareto.csv")
    tc.set_defaults(func=cmd_table_compare)
    tm = tsub.add_parser("configmap", help="write the operator's ConfigMap (profile + table)")
    tm.add_argument("--profile", required=True)
    tm.add_argument("--table", help="table CSV (default: the Pareto filter of --grid)")
    tm.add_argument("--grid", help="configuration grid CSV")
    tm.add_argument("--with-grid", action="store_true", help="carry the full grid too (bilinear quality interpolation)")
    tm.add_argument("--time-scale", type=_positive_float, default=1.0)
    tm.add_argument("--name", default="hadis-profile")
    tm.add_argument("--namespace")
    tm.add_argument("--out", help="output YAML (default: stdout)")
    tm.set_defaults(func=cmd_configmap)

    pr = sub.add_parser("profile", help="profiles: convert, measure latency, or build a whole one from your variants")
    psub = pr.add_subparsers(dest="profile_command", metavar="ACTION", required=True)
    pc = psub.add_parser("convert", help="convert a HADIS reference YAML or DiffServe CSV to hadis.profile/v1")
    pc.add_argument("source")
    pc.add_argument("--time-scale", type=_positive_float, default=1.0)
    pc.add_argument("--out")
    pc.set_defaults(func=cmd_profile_convert)
    from hadis.cli.profile import add_parsers as add_profile_parsers
    from hadis.cli.serve import add_profile_latency

    add_profile_latency(psub)
    add_profile_parsers(psub)

    pl = sub.add_parser(
        "plan",
        help="plan once for a given demand from a profile ConfigMap",
        description="Plan once. With --cascade: what the operator would deploy for that DiffusionCascade "
        "(its budget, SLO, gpusPerReplica and planner objective): replicas per model and GPUs. Example: "
        "hadis plan --cascade crds/examples/cascade-e1.yaml --configmap profiles/configmap-l40s.yaml --rate 5",
    )
    pl.add_argument("--configmap", required=True, help="ConfigMap YAML written by 'hadis table configmap'")
    pl.add_argument("--cascade", help="a DiffusionCascade YAML: plan as the operator would for it")
    pl.add_argument("--gpus", type=_positive_int, help="GPU budget (required without --cascade)")
    pl.add_argument("--slo", type=_positive_float, help="latency SLO in seconds (required without --cascade)")
    pl.add_argument("--rate", type=float, required=True, help="arrival rate (req/s)")
    pl.add_argument("--queue", action="append", metavar="MODEL=N", help="requests queued at a model (repeatable)")
    pl.add_argument("--policy", choices=["hadis", "hadis-ref"], default="hadis")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plan)

    from hadis.cli.operator import add_parsers as add_operator_parsers
    from hadis.cli.route import add_parser as add_route_parser
    from hadis.cli.serve import add_parsers as add_serve_parsers
    from hadis.cli.trace import add_parser as add_trace_parser

    add_trace_parser(sub, _data_dir_default())
    add_route_parser(sub, _data_dir_default())
    add_serve_parsers(sub)
    add_operator_parsers(sub)
    return p


def _positive_float(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
