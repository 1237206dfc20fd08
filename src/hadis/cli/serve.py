"""``hadis worker serve``, ``hadis router serve`` and ``hadis up``: the long-running parts."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_worker_serve(args: argparse.Namespace) -> int:
    try:
        from hadis.workers.server import serve
    except ImportError as e:
        raise SystemExit(f"error: the worker needs the 'worker' extra (pip install -e '.[worker]'): {e}") from None
    from hadis.workers.spec import find_spec

    if not args.min_batch_seconds >= 0:  # also refuses nan
        raise SystemExit(f"error: --min-batch-seconds must be >= 0, got {args.min_batch_seconds:g}")
    if args.drain_seconds < 1:
        raise SystemExit(f"error: --drain-seconds must be at least 1, got {args.drain_seconds}")
    spec = find_spec(args.model)
    serve(
        spec,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        device=args.device or spec.device,
        min_batch_s=args.min_batch_seconds,
        drain_s=args.drain_seconds,
        weights_cache=args.weights_cache,
        revision=args.revision,
    )
    return 0


def cmd_worker_fetch(args: argparse.Namespace) -> int:
    """Fetch a model's weights into the cache (the worker pod's init container), or find them there."""
    import sys

    from hadis.workers.cache import UnsafeCachePath, fetch
    from hadis.workers.spec import find_spec

    spec = find_spec(args.model)
    print(f"fetch {spec.name} ({spec.source}) into {args.cache} ...", file=sys.stderr, flush=True)
    try:
        got = fetch(spec, args.cache, args.revision)
    except UnsafeCachePath as e:
        raise SystemExit(f"error: {e}") from None
    except OSError as e:  # huggingface_hub's errors (no network, unknown revision) are OSErrors
        raise SystemExit(f"error: could not fetch {spec.name} from {spec.source}: {e}") from None
    if got.downloaded:
        print(f"fetched {spec.name} revision {got.revision}: {got.bytes / 2**20:.1f} MiB in {got.seconds:.1f}s "
              f"to {got.path}", file=sys.stderr)  # fmt: skip
    else:
        print(f"{spec.name} revision {got.revision} is in the cache at {got.path} ({got.bytes / 2**20:.1f} MiB): "
              "no download", file=sys.stderr)  # fmt: skip
    return 0


def cmd_router_serve(args: argparse.Namespace) -> int:
    from hadis.router.service import serve

    serve(args.config, host=args.host, port=args.port, admin_port=args.admin_port)
    return 0


def cmd_profile_latency(args: argparse.Namespace) -> int:
    import sys

    from hadis.core.profile import dump_profile
    from hadis.workers.profiler import profile_latency
    from hadis.workers.spec import find_spec

    spec = find_spec(args.model)
    try:
        sizes = sorted({int(x) for x in args.batch_sizes.split(",")})
    except ValueError:
        raise SystemExit(
            f"error: --batch-sizes must be integers separated by commas, got {args.batch_sizes!r}"
        ) from None
    if not sizes or sizes[0] < 1:
        raise SystemExit("error: --batch-sizes must be >= 1")
    profile = profile_latency(
        spec,
        sizes,
        device=args.device or spec.device,
        warmup=args.warmup,
        repeats=args.repeats,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        weights_cache=args.weights_cache,
    )
    from hadis.cli.common import write_output

    write_output(dump_profile(profile), args.out)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from hadis.local import run_up_tiny

    if not args.tiny:
        raise SystemExit(
            "error: only 'hadis up --tiny' runs locally; real models run on a cluster (see docs/operator.md)"
        )
    return run_up_tiny(args)


def add_profile_latency(psub: argparse._SubParsersAction) -> None:
    pl = psub.add_parser(
        "latency",
        help="measure a worker pipeline's latency per batch size (p50/p90, peak memory)",
        description="Runs the pipeline of a spec with warm-up and timed repeats per batch size; out-of-memory "
        "sizes are marked infeasible. Writes hadis.profile/v1. Needs the 'worker' extra.",
    )
    pl.add_argument("--model", required=True, help="spec file or variant name")
    pl.add_argument("--batch-sizes", default="1,2,4,8", help="comma-separated (default: %(default)s)")
    pl.add_argument("--device", help="cpu or cuda[:N] (default: the spec's device: cuda, cpu for the tiny ones)")
    pl.add_argument("--warmup", type=int, default=1)
    pl.add_argument("--repeats", type=int, default=5)
    pl.add_argument("--out", help="profile YAML to write (default: stdout)")
    pl.add_argument(
        "--weights-cache",
        type=Path,
        metavar="DIR",
        help="load the weights from this cache (fetched into it first if missing) and record the load "
        "time as load_seconds, the planner's model-swap time",
    )
    pl.set_defaults(func=cmd_profile_latency)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser("worker", help="the Triton worker around a diffusers pipeline")
    wsub = w.add_subparsers(dest="worker_command", required=True, metavar="{serve,fetch}")
    ws = wsub.add_parser(
        "serve",
        help="serve one model variant over the Triton protocol (PyTriton)",
        description="Loads the pipeline named by a spec (a file, or a name from workers/), warms it up, then "
        "serves it with Triton's dynamic batching. Needs the 'worker' extra.",
    )
    ws.add_argument("--model", required=True, help="spec file or variant name (e.g. tiny-light, sd3.5-large)")
    ws.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    ws.add_argument("--http-port", type=int, default=8000)
    ws.add_argument("--grpc-port", type=int, default=8001)
    ws.add_argument("--metrics-port", type=int, default=8002)
    ws.add_argument("--device", help="cpu or cuda[:N] (default: the spec's device: cuda, cpu for the tiny ones)")
    ws.add_argument(
        "--min-batch-seconds",
        type=float,
        default=0.0,
        metavar="S",
        help="hold each batch to at least S seconds, so a tiny pipeline stands in for a model of a known "
        "service time on any machine (tests, demos; default: 0, off)",
    )
    ws.add_argument(
        "--drain-seconds",
        type=int,
        default=30,
        metavar="S",
        help="on SIGTERM, wait up to S seconds for the requests in flight to finish before exiting "
        "(default: %(default)s; the operator sets it from the profile's latency)",
    )
    ws.add_argument(
        "--weights-cache",
        type=Path,
        metavar="DIR",
        help="load the weights from this cache (hadis worker fetch fills it; fetched now if missing)",
    )
    ws.add_argument("--revision", help="the hub revision to load (default: the spec's)")
    ws.set_defaults(func=cmd_worker_serve)
    wf = wsub.add_parser(
        "fetch",
        help="fetch a model's weights into a cache folder (a worker pod's init container)",
        description="Downloads the spec's weights at its pinned revision into DIR/<model>/<revision>/, "
        "unless a complete copy is there already; the worker then loads them with --weights-cache DIR.",
    )
    wf.add_argument("--model", required=True, help="spec file or variant name")
    wf.add_argument("--cache", type=Path, required=True, metavar="DIR", help="the weight cache (a volume)")
    wf.add_argument("--revision", help="the hub revision to fetch (default: the spec's, else main)")
    wf.set_defaults(func=cmd_worker_fetch)

    r = sub.add_parser("router", help="the OpenAI-compatible router in front of the workers")
    rsub = r.add_subparsers(dest="router_command", required=True, metavar="{serve}")
    rs = rsub.add_parser(
        "serve",
        help="serve POST /v1/images/generations (and /metrics, /openapi.json on an admin port)",
        description="Reads a hadis.router-config/v1 file and reloads it (and its API keys) when it changes. "
        "The inference port serves POST /v1/images/generations, /healthz and /readyz; the admin port "
        "serves /metrics, /openapi.json, /healthz and a detailed /readyz.",
    )
    rs.add_argument("--config", required=True, help="router config YAML")
    rs.add_argument("--host", default="127.0.0.1")
    rs.add_argument("--port", type=int, default=8080, help="inference port (default 8080)")
    rs.add_argument("--admin-port", type=int, default=9090, help="metrics and OpenAPI port (default 9090)")
    rs.set_defaults(func=cmd_router_serve)

    u = sub.add_parser(
        "up",
        help="start a local data plane: tiny workers and the router, as real processes",
        description="Starts a tiny light worker, a tiny heavy worker and the router on loopback, prints "
        "'router: http://127.0.0.1:PORT' once ready, and stops everything on Ctrl-C or SIGTERM.",
    )
    u.add_argument("--tiny", action="store_true", help="use the tiny random-weight pipelines (CPU)")
    u.add_argument("--port", type=int, help="router port (default: a free one)")
    u.add_argument("--router-ratio", type=float, default=0.2)
    u.add_argument("--disc-ratio", type=float, default=0.3)
    u.add_argument("--slo", type=float, default=6.0, help="latency SLO in seconds (default: %(default)s)")
    u.add_argument("--workdir", type=Path, help="where config and logs go (default: a temp folder)")
    u.set_defaults(func=cmd_up)
