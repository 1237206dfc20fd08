"""``hadis operator run``: the kopf operator behind Lease-based leader election."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import time
import uuid


def _identity() -> str:
    pod = os.environ.get("POD_NAME")
    return pod or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


async def _health_server(host: str, port: int, health, retry_period_s: float) -> object:
    """``/healthz`` for liveness probes (``hadis.operator.health``: followers are healthy while
    their election loop runs; the leader also needs kopf running and ready); ``/metrics``: the
    operator's own metrics (``hadis.operator.metrics``)."""
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from hadis.operator.health import assess
    from hadis.operator.metrics import REGISTRY

    async def healthz(_: web.Request) -> web.Response:
        ok, body = assess(health, time.monotonic(), retry_period_s)
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def cmd_operator_run(args: argparse.Namespace) -> int:
    import kopf

    from hadis.operator import cluster, handlers  # importing handlers registers them
    from hadis.operator.health import HealthState
    from hadis.operator.leader import ElectionConfig, LeaseElector, LostLeadership, run_as_leader
    from hadis.operator.metrics import LEADER, forget_plans

    kopf.configure(verbose=args.verbose)
    logging.getLogger("hadis").setLevel(logging.INFO)
    if not args.namespace and not args.all_namespaces:
        raise SystemExit("error: give --namespace NS (repeatable) or --all-namespaces")
    try:
        handlers.operator_policy()  # a malformed HADIS_POLICY stops the start, not a reconcile
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    health = HealthState(time.monotonic())

    async def operate(stop_flag: asyncio.Event) -> None:
        LEADER.set(1)
        ready = asyncio.Event()
        health.kopf_ready, health.kopf_stopped = False, None
        if health.leading_since is None:  # without leader election: leading from the start
            health.leading_since = time.monotonic()

        async def note_ready() -> None:
            await ready.wait()
            health.kopf_ready = True

        watcher = asyncio.create_task(note_ready())
        try:
            await kopf.operator(
                standalone=True,  # the Lease, not kopf's peering, decides who acts
                clusterwide=args.all_namespaces,
                namespaces=args.namespace or (),
                stop_flag=stop_flag,
                ready_flag=ready,
            )
            if not stop_flag.is_set():
                health.kopf_stopped = "kopf's operator returned"
        except Exception as e:
            health.kopf_stopped = repr(e)
            raise
        finally:
            watcher.cancel()
            health.kopf_ready = False
            LEADER.set(0)
            forget_plans()  # the next leader reports the plans

    async def main() -> None:
        if not args.leader_elect:
            health.last_attempt = float("inf")  # no election loop to stall
        server = await _health_server(args.health_host, args.health_port, health, args.retry_period)
        try:
            cluster.load_client_config()
            if not args.leader_elect:
                await operate(asyncio.Event())
                return
            cfg = ElectionConfig(
                name=args.lease_name,
                namespace=args.lease_namespace
                or os.environ.get("POD_NAMESPACE")
                or (args.namespace[0] if args.namespace else "default"),
                identity=_identity(),
                lease_duration_s=args.lease_duration,
                renew_deadline_s=args.renew_deadline,
                retry_period_s=args.retry_period,
            )
            await run_as_leader(LeaseElector(cfg), operate, health)
        finally:
            await server.cleanup()

    try:
        asyncio.run(main())
    except LostLeadership as e:
        logging.getLogger("hadis.leader").error("%s: exiting so that this replica restarts as a follower", e)
        return 1
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    op = sub.add_parser("operator", help="the Kubernetes operator for DiffusionCascade")
    osub = op.add_subparsers(dest="operator_command", metavar="ACTION", required=True)
    r = osub.add_parser(
        "run",
        help="reconcile DiffusionCascades (leader-elected: one replica acts, the others wait)",
        description=(
            "Run the kopf operator. With leader election (the default) every replica competes for "
            "a coordination.k8s.io Lease and only the holder acts; the others wait and take over "
            "when the leader stops renewing it. Reads $KUBECONFIG outside a pod and the service "
            "account inside one."
        ),
    )
    scope = r.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[], help="watch this namespace (repeatable)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    r.add_argument(
        "--no-leader-elect",
        dest="leader_elect",
        action="store_false",
        help="act without a Lease (one replica only)",
    )
    r.add_argument("--lease-name", default="hadis-operator")
    r.add_argument("--lease-namespace", help="default: $POD_NAMESPACE, else the first --namespace, else default")
    r.add_argument("--lease-duration", type=float, default=15.0, help="seconds (default 15)")
    r.add_argument("--renew-deadline", type=float, default=10.0, help="seconds (default 10)")
    r.add_argument("--retry-period", type=float, default=2.0, help="seconds (default 2)")
    r.add_argument("--health-host", default="0.0.0.0")
    r.add_argument("--health-port", type=int, default=8080, help="serves /healthz and /metrics (default 8080)")
    r.add_argument("--verbose", action="store_true")
    r.set_defaults(func=cmd_operator_run)
