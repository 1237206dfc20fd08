"""``hadis trace gen``: seeded staircase, spike and MAF-shaped arrival traces."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def cmd_trace_gen(args: argparse.Namespace) -> int:
    from hadis.cli.common import write_output
    from hadis.core.pareto import read_file
    from hadis.sim import tracegen

    if args.shape == "staircase":
        profile = tracegen.staircase(args.levels, args.step_seconds)
    elif args.shape == "spikes":
        profile = tracegen.spikes(args.base, args.peak, args.every, args.width, args.duration, args.first)
    else:
        hourly = tracegen.read_hourly(read_file(args.hourly), str(args.hourly))
        profile = tracegen.maf(hourly, args.low, args.high, args.seconds_per_hour)
    times, prompts = tracegen.arrivals(profile, args.seed, args.prompts)
    print(
        f"{profile.shape}: {times.size} arrivals over {profile.duration_s:g} s (expected "
        f"{profile.expected_arrivals:.0f}), rate {profile.rates.min():g}..{profile.rates.max():g} req/s, "
        f"seed {args.seed}",
        file=sys.stderr,
    )
    write_output(tracegen.to_csv(times, prompts), args.out, "the trace")
    return 0


def add_parser(sub: argparse._SubParsersAction, data_dir: str) -> None:
    tr = sub.add_parser("trace", help="arrival traces for the simulator")
    tsub = tr.add_subparsers(dest="trace_command", metavar="ACTION", required=True)
    g = tsub.add_parser(
        "gen",
        help="generate a seeded staircase, spike or MAF-shaped trace (arrival_ms,prompt_index)",
        description=(
            "Arrivals are a Poisson process with a piecewise-constant rate, drawn from --seed: the "
            "same arguments give the same trace on every machine. Prompt indices are uniform in "
            "0..--prompts-1."
        ),
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    common.add_argument("--prompts", type=int, default=4000, help="prompt indices 0..N-1 (default 4000)")
    common.add_argument("--out", help="write here instead of stdout")
    shapes = g.add_subparsers(dest="shape", metavar="SHAPE", required=True)
    st = shapes.add_parser("staircase", parents=[common], help="each level held for --step-seconds, in order")
    st.add_argument("--levels", type=_floats, default=[2.0, 20.0, 40.0, 60.0], help="req/s (default 2,20,40,60)")
    st.add_argument("--step-seconds", type=float, default=60.0, help="seconds per level (default 60)")
    sp = shapes.add_parser("spikes", parents=[common], help="a base rate with periodic spikes")
    sp.add_argument("--base", type=float, default=8.0, help="req/s between spikes (default 8)")
    sp.add_argument("--peak", type=float, default=64.0, help="req/s during a spike (default 64)")
    sp.add_argument("--every", type=float, default=60.0, help="seconds from one spike to the next (default 60)")
    sp.add_argument("--width", type=float, default=5.0, help="seconds a spike lasts (default 5)")
    sp.add_argument("--first", type=float, help="start of the first spike (default: half a period)")
    sp.add_argument("--duration", type=float, default=300.0, help="trace seconds (default 300)")
    mf = shapes.add_parser("maf", parents=[common], help="the Azure Functions hourly shape scaled onto --low..--high")
    mf.add_argument("--low", type=float, default=1.0, help="req/s at the quietest hour (default 1)")
    mf.add_argument("--high", type=float, default=32.0, help="req/s at the busiest hour (default 32)")
    mf.add_argument("--seconds-per-hour", type=float, default=1.0, help="trace seconds per hour (default 1)")
    mf.add_argument(
        "--hourly",
        type=Path,
        default=Path(data_dir) / "traces" / "maf_hourly_invocations.csv",
        help="hourly invocation counts (default: the shipped MAF counts)",
    )
    g.set_defaults(func=cmd_trace_gen)
